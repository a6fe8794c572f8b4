r"""Meta-trains a learner, then meta-tests it on the held-out classes.

Quickstart (offline, ~3 minutes on 2 CPU cores):
  advmeta-train --workdir=/tmp/advmeta_quickstart

CIFAR-FS, 5-way 5-shot:
  advmeta-train --dataset=cifar_fs --k_shot=5 --num_steps=60000 \
      --workdir=/tmp/maml_cifar_fs_5shot

Running the same command again resumes from the last checkpoint in --workdir.
The task batch is sharded over all devices (--num_devices to use fewer); for
several hosts, run the same command on every host with --distributed (TPU
pods) or --coordinator_address/--num_processes/--process_id (docs/multihost.md).
"""

from absl import flags
from absl import logging

from advmeta_jax.experiments import reproduction
from advmeta_jax.cli import common

flags.DEFINE_string("workdir", None, "Directory for config, metrics and "
                    "checkpoints; an existing run there is resumed.",
                    required=True)
common.define_config_flags()
common.define_distributed_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  common.initialize_distributed()
  out = reproduction.train_and_test(common.config_from_flags(), FLAGS.workdir)
  if out.report is not None:
    print(out.report.markdown)


def run():
  """The `advmeta-train` command."""
  common.run(main)


if __name__ == "__main__":
  run()
