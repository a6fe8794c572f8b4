"""The command-line programs (absl flags), installed as console scripts:

    advmeta-train            cli/train.py         meta-train, then meta-test
    advmeta-evaluate         cli/evaluate.py      trained runs under the protocol
    advmeta-reproduce        cli/reproduce.py     a paper's table end to end
    advmeta-sweep            cli/sweep.py         TAFL's gamma x k study
    advmeta-prepare-data     cli/prepare_data.py  a dataset's prepared cache
    advmeta-benchmark        cli/benchmark.py     speed and memory
    advmeta-crosscheck-autoattack                 AutoAttack against the reference

Each is a flag-parsing `main` over one library call; `common.py` holds the
flags they share and the one-line handling of bad input. From a checkout,
`python -m launch.<name>` runs the same program. This is the top layer: the
library never imports it.
"""
