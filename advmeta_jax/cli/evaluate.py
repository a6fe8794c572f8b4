r"""Meta-tests trained runs under the protocol of the seeds' tables.

Every run gets the same episodes (same --test_seed), so rows are comparable:

  advmeta-evaluate --workdirs=/tmp/runs/maml,/tmp/runs/tafl \
      --cases=all --attacks=pgd,fgsm --eps=8/255,2/255 --curves --kde \
      --out=/tmp/eval

Writes report.md, results.csv, results.json and the figures (per-step curves,
the KDE of L_AR over tasks) to --out (default: the first workdir's eval/).
"""

from absl import flags

from advmeta_jax import evaluation
from advmeta_jax.experiments import reproduction
from advmeta_jax.cli import common

common.define_run_flags("evaluate", "eval")
flags.DEFINE_bool("curves", False, "Per-inner-step loss/accuracy curves.")
flags.DEFINE_bool("adversarial_curves", False, "With --curves, also the "
                  "attacked-query cases (re-attacks the query at every inner "
                  "step: (inner_steps + 1) times the attack cost).")
flags.DEFINE_bool("kde", False, "KDE of TAFL's L_AR over tasks (needs the "
                  "clean/adv case).")
flags.DEFINE_float("kde_threshold", 1.0, "Report the share of tasks with L_AR "
                   "above this.")
flags.DEFINE_bool("masking_check", True, "Run the gradient-masking checks "
                  "for every eps attack and warn when one fails.")
common.define_protocol_flags(deprecated=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  workdirs = common.workdirs_from_flags("evaluate")
  common.check_finite(FLAGS.kde_threshold, "kde_threshold")
  protocol = common.protocol_from_flags()
  cases = evaluation.parse_cases(protocol.cases)
  specs = (common.attack_specs_from_flags(protocol)
           if any(c.needs_attack for c in cases) else ())
  out = reproduction.evaluate_workdirs(
      workdirs, names=FLAGS.names, checkpoint_step=FLAGS.checkpoint_step,
      split=FLAGS.split, data_dir=FLAGS.data_dir, out=FLAGS.out, cases=cases,
      attack_specs=specs, num_episodes=protocol.test_episodes,
      inner_steps=protocol.test_inner_steps, seed=protocol.test_seed,
      q_query=protocol.test_q_query,
      curves=FLAGS.curves,
      adversarial_curves=FLAGS.adversarial_curves, kde=FLAGS.kde,
      kde_threshold=FLAGS.kde_threshold, masking_check=FLAGS.masking_check,
      log=print)
  print(out.report.markdown)
  print("\nwritten: " + ", ".join(sorted(out.report.files.values())))


def run():
  """The `advmeta-evaluate` command."""
  common.run(main)


if __name__ == "__main__":
  run()
