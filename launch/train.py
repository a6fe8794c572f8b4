r"""Meta-trains a learner, then meta-tests it on the held-out classes.

Quickstart (offline, ~3 minutes on 2 CPU cores):
  python -m launch.train --workdir=/tmp/advmeta_quickstart

CIFAR-FS, 5-way 5-shot:
  python -m launch.train --dataset=cifar_fs --k_shot=5 --num_steps=60000 \
      --workdir=/tmp/maml_cifar_fs_5shot

Running the same command again resumes from the last checkpoint in --workdir.
The task batch is sharded over all devices (--num_devices to use fewer); for
several hosts, run the same command on every host with --distributed (TPU
pods) or --coordinator_address/--num_processes/--process_id (README,
"Multi-device and multi-host").
"""

from absl import flags
from absl import logging

from advmeta_jax import evaluation
from advmeta_jax import reports
from advmeta_jax import training
from launch import common

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
  config = common.config_from_flags()
  # Load and check both splits before training, not after a long run.
  train_split = training.load_split(config, "train")
  test_split = (training.load_split(config, "test") if config.eval_episodes
                else None)
  state = training.train(config, FLAGS.workdir, train_split=train_split)
  if config.eval_episodes:
    result = evaluation.meta_test_config(config, state.params, "test",
                                         data=test_split)
    table = evaluation.results_table({config.learner_label: result}, config)
    print(table)
    reports.write_text(FLAGS.workdir, "eval_test.md", table)
    reports.write_json(f"{FLAGS.workdir}/eval_test.json",
                       {config.learner_label: result.summary()})


if __name__ == "__main__":
  common.run(main)
