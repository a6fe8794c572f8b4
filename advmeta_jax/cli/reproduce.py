r"""Reproduces a table of the seeds (or the README's) end to end.

Trains every learner of the experiment (resuming finished or interrupted runs),
meta-tests them on the same episodes, and writes the report with the paper's
numbers beside ours:

  advmeta-reproduce --experiment=digits_robust --workdir=/tmp/digits
  advmeta-reproduce --experiment=adml_table3 --data_dir=~/tfds \
      --workdir=/ckpt/adml_table3
  advmeta-reproduce --experiment=tafl_table1 --shrink \
      --workdir=/tmp/tafl_shrunk     # the whole pipeline in minutes, offline
  advmeta-reproduce --experiment=digits_robust --seeds=3 \
      --workdir=/tmp/digits3         # each row 3 times: <row>/seed<k>/
  advmeta-reproduce --experiment=digits_robust --workdir=/tmp/digits \
      --extra_attacks=pgd,autoattack --extra_eps=l2:0.5,l2:1   # L2 cells

Experiments: see `advmeta_jax.experiments.EXPERIMENTS` (--helpfull lists them).
"""

from absl import flags

from advmeta_jax import config
from advmeta_jax import experiments
from advmeta_jax.errors import ConfigError
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
flags.DEFINE_list("extra_eps", [], "Budgets of --extra_attacks (default: "
                  "the experiment's first eps): L-inf eps (8/255) or L2 radii "
                  "written l2:R (l2:0.5), each extra attack at each, e.g. "
                  "--extra_attacks=autoattack --extra_eps=l2:0.5,l2:1.")
config.define_protocol_flags(only=("test_episodes", "test_q_query",
                                   "test_seed"))
for _old in ("episodes", "seed"):
  flags.DEFINE_integer(_old, None, f"Deprecated: use --test_{_old}.")
flags.DEFINE_float("kde_threshold", 1.0, "Share of tasks with L_AR above this "
                   "in the KDE section.")
flags.DEFINE_integer("seeds", 1, "Training seeds per row (config seed + "
                     "0, 1, ...), each in <workdir>/<row>/seed<k>; the report "
                     "adds the mean ± s.d. over seeds and the paired "
                     "comparisons over seeds. 1: <workdir>/<row>.")
flags.DEFINE_list("pairs", None, "Paired comparisons a:b (a − b on the same "
                  "episodes), by row name, e.g. tafl:aq,aq:maml (default: "
                  "each robust row against the first row, and TAFL against "
                  "AQ).")
FLAGS = flags.FLAGS


def _pairs(values):
  """`["a:b", ...]` as `[(a, b), ...]` (None: the default pairs)."""
  if values is None:
    return None
  pairs = [tuple(v.split(":")) for v in values]
  bad = [v for v, p in zip(values, pairs) if len(p) != 2 or not all(p)]
  if bad:
    raise ConfigError(f"--pairs takes row pairs written a:b (e.g. tafl:aq), "
                      f"got {bad}.")
  return pairs


def _extra_attacks(names, budgets):
  """`--extra_attacks` × `--extra_eps` as `(name, budget)` pairs; the
  names alone (the experiment's first ε) without `--extra_eps`."""
  if not budgets:
    return list(names)
  if not names:
    raise ConfigError("--extra_eps sets the budgets of --extra_attacks: "
                      "give the attacks too (e.g. --extra_attacks=autoattack).")
  for budget in budgets:
    config.attack_budget(budget, "--extra_eps")
  return [(name, budget) for name in names for budget in budgets]


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
      extra_attacks=_extra_attacks(FLAGS.extra_attacks, FLAGS.extra_eps),
      seeds=FLAGS.seeds,
      pairs=_pairs(FLAGS.pairs))
  print(out.report.markdown)
  print("\nwritten: " + ", ".join(sorted(out.report.files.values())))
  print(f"total wall time: {out.seconds / 60:.1f} min")


def run():
  """The `advmeta-reproduce` command."""
  common.run(main)


if __name__ == "__main__":
  run()
