r"""TAFL's γ × k sensitivity study: train TAFL on a grid, draw robust accuracy.

  advmeta-sweep --workdir=/tmp/tafl_sweep --gammas=0,1,2,4 \
      --ks=0.5,1,2 --num_steps=300 --eval_episodes=600

Every grid point is its own resumable run in --workdir/gamma<γ>_k<k>; the
heatmap (sensitivity_heatmap.png), sweep.md and sweep.json go to --workdir.
The other config flags set the rest of the TAFL run (dataset, shots...);
--eval_episodes, --eval_inner_steps and --eval_batch_size set the meta-test of
every grid point (the same episodes for all, from --test_seed): clean and
adversarial query after a clean support, under the one --attacks × --eps.
"""

from absl import flags

from advmeta_jax.experiments import reproduction
from advmeta_jax.errors import ConfigError
from advmeta_jax.cli import common

flags.DEFINE_string("workdir", None, "Directory of the grid's runs and "
                    "report.", required=True)
flags.DEFINE_list("gammas", "0,1,2,4", "TAFL γ values.")
flags.DEFINE_list("ks", "0.5,1,2", "TAFL k values.")
common.define_config_flags()
common.define_protocol_flags(cases=None, run_flags=False)
FLAGS = flags.FLAGS


def _floats(values, name):
  try:
    return [float(v) for v in values]
  except ValueError:
    raise ConfigError(f"--{name} must be numbers, got {values}.") from None


def main(argv):
  del argv
  if FLAGS["learner"].present and FLAGS.learner != "tafl":
    raise ConfigError(f"the sweep trains TAFL (γ and k are its "
                      f"hyperparameters), not --learner={FLAGS.learner}: drop "
                      "--learner.")
  FLAGS.learner = "tafl"
  base = common.config_from_flags()
  protocol = common.protocol_from_flags()
  specs = [s for s in common.attack_specs_from_flags(protocol)
           if s.eps is not None]
  if len(specs) != 1:
    raise ConfigError("the sweep scores one eps attack: give one --attacks "
                      "and one --eps (default pgd at 8/255).")
  out = reproduction.sensitivity_sweep(
      base, FLAGS.workdir, gammas=_floats(FLAGS.gammas, "gammas"),
      ks=_floats(FLAGS.ks, "ks"), attack=specs[0],
      num_episodes=base.eval_episodes, inner_steps=base.eval_inner_steps,
      seed=protocol.test_seed)
  print(out.markdown)
  print(f"heatmap: {out.heatmap}")


def run():
  """The `advmeta-sweep` command."""
  common.run(main)


if __name__ == "__main__":
  run()
