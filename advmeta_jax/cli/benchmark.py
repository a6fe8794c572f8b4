r"""Benchmarks the meta-train step: time per step, tasks/s, compile time, memory.

  advmeta-benchmark --sizes=32,84 --shots=1,5 --torch
  advmeta-benchmark --rows=maml:32:1,maml:32:5,maml:84:1,maml:84:5,aq:84:1 --torch
  advmeta-benchmark --suite=accelerator --out=/tmp/suite
  advmeta-benchmark --learners=maml,aq --sizes=84 --shots=1 \
      --variants=base,remat,p1+remat,bf16,first_order --torch
  advmeta-benchmark --section=conv --sizes=32,84 --conv_impls=matmul,xla
  advmeta-benchmark --section=attacks --sizes=32,84
  advmeta-benchmark --section=metatest --rows=maml:32:1,aq:84:1
  advmeta-benchmark --section=metatest --rows=maml:32:1,maml:84:1 --torch

With no --variants or --conv_impls it measures what `launch.train` runs by
default: the `auto` speed settings resolved for the backend found
(advmeta_jax/config/autotune.py), so "default vs PyTorch" is the first command.
`--rows` lists learner:size:shot configurations instead of the product of
--learners, --sizes and --shots. `--suite=accelerator` runs the prepared
accelerator suite (advmeta_jax/benchmarks/accelerator_suite.py) and writes its JSON and
Markdown into the folder --out; `--tiny` runs it at toy sizes.

Prints a Markdown table and writes JSON to --out. Each train and attack
configuration runs in a fresh subprocess, so that its peak memory is its own.
`--variants` trades memory and precision (remat, pN: N tasks at a time, bf16,
first_order); `--torch` adds the PyTorch step for maml and aq in each of
`--torch_variants` (the plain loop of `advmeta_jax/benchmarks/torch_baseline.py` and the
faster ways to write it in `torch_variants.py`), and the ratio of tasks/s to
the fastest; with `--section=metatest`, the same meta-test workload in
PyTorch (`torch_metatest.py`) and the ratio of episodes/s. `--section=conv` times conv4's four convolutions one by one (forward and
backward, each `--conv_impls` formulation and PyTorch's `conv2d`);
`--section=attacks` the images per second of each of `--attacks`;
`--section=metatest` the meta-test's episodes per second (adapt, attack the
query with each of `--metatest_attacks`, score). `--backbone` picks the
network of the train and metatest rows. How FLOPs,
MFU and memory are counted: `advmeta_jax.benchmark`.
"""

import dataclasses

from absl import app
from absl import flags

from advmeta_jax import attacks
from advmeta_jax.cli import common
from advmeta_jax.benchmarks import benchmark
from advmeta_jax.errors import ConfigError

D = benchmark.Options()   # the defaults
flags.DEFINE_enum("suite", None, ["accelerator"], "Run a prepared suite "
                  "instead of --section: accelerator (the train step, "
                  "attacks, MFU and device memory within 8 minutes; --out is "
                  "a folder).")
flags.DEFINE_bool("tiny", False, "--suite: toy sizes (a test of the suite).")
flags.DEFINE_list("rows", list(D.rows), "learner:size:shot configurations "
                  "(e.g. maml:84:1,aq:84:1), instead of the product of "
                  "--learners, --sizes and --shots.")
flags.DEFINE_enum("section", D.section, list(benchmark.SECTIONS),
                  "What to measure: the meta-train step, attack throughput, "
                  "or conv4's convolutions one by one (forward + backward).")
flags.DEFINE_integer("conv_images", D.conv_images, "Images per convolution call "
                     "(section=conv; 75 = one 5-way 15-query query set).")
flags.DEFINE_list("attacks", list(D.attacks), "Attacks (section=attacks): "
                  f"{', '.join(attacks.benchmark_attacks())}.")
flags.DEFINE_integer("attack_batch", D.attack_batch, "Images per attack call.")
flags.DEFINE_integer("pgd_steps", D.pgd_steps, "PGD steps (section=attacks).")
flags.DEFINE_integer("cw_steps", D.cw_steps, "C&W Adam steps (section=attacks).")
flags.DEFINE_list("sizes", [str(s) for s in D.sizes], "Image sides (32: CIFAR-FS, 84: "
                  "MiniImageNet).")
flags.DEFINE_list("shots", [str(s) for s in D.shots], "K values.")
flags.DEFINE_list("conv_impls", list(D.conv_impls), "Convolution formulations: "
                  "auto (the backend's default, as launch.train), matmul, "
                  "xla, hybrid.")
flags.DEFINE_list("learners", list(D.learners), "Learners (maml, maml_ad, adml, aq, "
                  "tafl).")
flags.DEFINE_integer("n_way", D.n_way, "N.")
flags.DEFINE_integer("q_query", D.q_query, "Queries per class.")
flags.DEFINE_integer("task_batch_size", D.task_batch_size, "B.")
flags.DEFINE_integer("inner_steps", D.inner_steps, "Inner steps.")
flags.DEFINE_integer("filters", D.filters, "conv4 filters.")
flags.DEFINE_list("variants", list(D.variants),
                  "Memory/precision variants: default (launch.train's "
                  "default, the auto settings) or '+'-joined options of: "
                  "base (whole batch vmapped, no remat), remat (rematerialized inner steps), bf16 (bfloat16 "
                  "convolution inputs), first_order, pN (N tasks at a time, "
                  "rematerialized rounds: --parallel_tasks).")
flags.DEFINE_integer("attack_steps", D.attack_steps, "PGD steps of the aq/tafl training "
                     "attack (section=train).")
flags.DEFINE_bool("torch", D.torch, "Also run the PyTorch second-order "
                  "MAML/AQ step in each of --torch_variants on each "
                  "configuration (section=metatest: the PyTorch meta-test "
                  "of the maml conv4 PGD rows), when torch is importable.")
flags.DEFINE_list("torch_variants", list(D.torch_variants), "PyTorch "
                  "variants of --torch (advmeta_jax/benchmarks/"
                  "torch_variants.py): plain (torch_baseline.py), tuned "
                  "(memory format and threads timed), func_vmap (torch.func "
                  "grad + vmap), grouped (tasks as groups of a grouped "
                  "convolution), two_process (2 processes x 1 thread), "
                  "compiled (torch.compile of the torch.func grouped step; "
                  "minutes of compilation). section=metatest runs plain, "
                  "grouped and func_vmap of them.")
flags.DEFINE_integer("torch_threads", D.torch_threads, "torch.set_num_threads of the "
                     "baseline.")
flags.DEFINE_integer("steps", D.steps, "Timed steps (after one warm-up step).")
flags.DEFINE_string("out", D.out, "JSON output path (--suite: a folder).")
flags.DEFINE_string("backbone", D.backbone, "The network (section=train "
                    "and metatest): conv4, conv4_64, conv4_wide, resnet12, "
                    "conv4_strided.")
flags.DEFINE_list("metatest_attacks", list(D.metatest_attacks), "Test "
                  "attacks of section=metatest (ε 8/255): pgd (--pgd_steps), "
                  "autoattack (--apgd_steps, --square_queries).")
flags.DEFINE_integer("eval_inner_steps", D.eval_inner_steps, "Adaptation "
                     "steps at meta-test (section=metatest).")
flags.DEFINE_integer("episodes_batch", D.episodes_batch, "Episodes per "
                     "meta-test call (section=metatest; --eval_batch_size).")
flags.DEFINE_list("episodes_at_once", list(D.episodes_at_once), "Episodes "
                  "of a meta-test call computed at once (section=metatest): "
                  "auto (the backend's value: 1 on the CPU), 0 (all, "
                  "vmapped) or a count; a list measures each.")
flags.DEFINE_integer("apgd_steps", D.apgd_steps, "APGD/FAB iterations of "
                     "AutoAttack (section=metatest).")
flags.DEFINE_integer("square_queries", D.square_queries, "Square's queries "
                     "in AutoAttack (section=metatest).")
flags.DEFINE_string("single", None, "Internal: run one configuration (JSON) "
                    "and print its result as JSON.")
flags.DEFINE_string("single_attack", None, "Internal: time one attack (JSON).")
flags.DEFINE_string("single_torch", None, "Internal: time the PyTorch "
                    "baseline on one configuration (JSON).")
flags.DEFINE_string("single_metatest", None, "Internal: time one meta-test "
                    "row (JSON).")
flags.DEFINE_string("single_torch_metatest", None, "Internal: time one "
                    "meta-test row in PyTorch (JSON).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  for mode in benchmark.CHILD_MODES:     # --single, --single_attack, ...
    if FLAGS[mode].value:
      benchmark.run_child(mode, FLAGS[mode].value)
      return
  try:
    if FLAGS.suite == "accelerator":
      from advmeta_jax.benchmarks import accelerator_suite  # pylint: disable=g-import-not-at-top
      out = FLAGS.out if FLAGS["out"].present else "accelerator_suite"
      accelerator_suite.run(out, tiny=FLAGS.tiny)
      return
    benchmark.run(benchmark.Options(**{
        f.name: FLAGS[f.name].value for f in dataclasses.fields(
            benchmark.Options)}))
  except ConfigError as e:
    raise app.UsageError(str(e)) from None


def run():
  """The `advmeta-benchmark` command."""
  common.show_usage_of(__name__)
  app.run(main)


if __name__ == "__main__":
  run()
