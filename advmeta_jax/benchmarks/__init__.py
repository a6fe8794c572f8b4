"""Measurement tools: the benchmark, the accelerator suite, the PyTorch
baseline, the convolution section and the AutoAttack cross-check. They
import the library; the library never imports them.

    benchmark.py              train-step speed and memory, vs PyTorch
    conv.py                   the convolution layers alone
    accelerator_suite.py      one command for a GPU/TPU machine
    torch_baseline.py         plain-PyTorch second-order MAML / AQ (torch only)
    torch_variants.py         faster ways to write that step in PyTorch
    torch_data_parallel.py    the two-process (all-reduce) PyTorch variant
    torch_metatest.py         the meta-test row's workload in PyTorch
    metatest_speed.py         meta-test episodes/s
    crosscheck_autoattack.py  our AutoAttack vs the reference implementation
"""
