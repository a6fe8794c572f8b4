r"""Reproduces a table of the seeds (or the README's) end to end.

Trains every learner of the experiment (resuming finished or interrupted runs),
meta-tests them on the same episodes, and writes the report with the paper's
numbers beside ours:

  advmeta-reproduce --experiment=digits_robust --workdir=/tmp/digits
  advmeta-reproduce --experiment=adml_table3 --data_dir=~/tfds \
      --workdir=/ckpt/adml_table3
  advmeta-reproduce --experiment=tafl_table1 --shrink \
      --workdir=/tmp/tafl_shrunk     # the whole pipeline in seconds, offline

Experiments: see `advmeta_jax.experiments.EXPERIMENTS` (--helpfull lists them).
"""

from absl import flags

from advmeta_jax import config
from advmeta_jax import experiments
from advmeta_jax.experiments import reproduction
from advmeta_jax.cli import common

flags.DEFINE_enum("experiment", None, list(experiments.names()),
                  "The table to reproduce.", required=True)
flags.DEFINE_string("workdir", None, "Directory of the runs (one per row) "
                    "and of report/.", required=True)
flags.DEFINE_bool("shrink", False, "Toy scale on the offline digits dataset "
                  "(tests and smoke checks): a few steps and episodes.")
flags.DEFINE_list("rows", None, "Only these rows (learners) of the table.")
flags.DEFINE_string("data_dir", None, "Data directory (mini_imagenet) or "
                    "tensorflow-datasets data_dir (cifar_fs).")
flags.DEFINE_list("extra_attacks", [], "Test attacks beyond the paper's, "
                  "at the experiment's first ε (e.g. autoattack, square, "
                  "apgd_t, fab): extra cells with no paper value. Trained "
                  "rows are not retrained, so this can follow a finished "
                  "run.")
config.define_protocol_flags(only=("test_episodes", "test_q_query",
                                   "test_seed"))
for _old in ("episodes", "seed"):
  flags.DEFINE_integer(_old, None, f"Deprecated: use --test_{_old}.")
flags.DEFINE_float("kde_threshold", 1.0, "Share of tasks with L_AR above this "
                   "in the KDE section.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.check_data_dir(FLAGS.data_dir)
  common.check_finite(FLAGS.kde_threshold, "kde_threshold")
  protocol = common.protocol_from_flags()
  out = reproduction.reproduce(
      experiments.get(FLAGS.experiment), FLAGS.workdir, shrink=FLAGS.shrink,
      rows=FLAGS.rows, data_dir=FLAGS.data_dir, episodes_=protocol.test_episodes,
      seed=protocol.test_seed, q_query=protocol.test_q_query,
      kde_threshold=FLAGS.kde_threshold,
      extra_attacks=FLAGS.extra_attacks)
  print(out.report.markdown)
  print("\nwritten: " + ", ".join(sorted(out.report.files.values())))
  print(f"total wall time: {out.seconds / 60:.1f} min")


def run():
  """The `advmeta-reproduce` command."""
  common.run(main)


if __name__ == "__main__":
  run()
