r"""Meta-tests the checkpoint of a training run: mean accuracy ± 95% CI.

  python -m launch.evaluate --workdir=/tmp/advmeta_quickstart

Writes eval_<split>.md and eval_<split>.json to the workdir.
"""

from absl import flags

from advmeta_jax import evaluation
from advmeta_jax import reports
from advmeta_jax import training
from advmeta_jax.errors import ConfigError
from launch import common

flags.DEFINE_string("workdir", None, "The --workdir of a training run.",
                    required=True)
flags.DEFINE_integer("checkpoint_step", None,
                     "Checkpoint to evaluate (default: the latest).")
flags.DEFINE_enum("split", "test", ["test", "val"], "Class split to test on.")
flags.DEFINE_integer("episodes", None, "Episodes (default: the run's "
                     "eval_episodes).")
flags.DEFINE_integer("inner_steps", None, "Test-time inner steps (default: the "
                     "run's eval_inner_steps).")
flags.DEFINE_integer("seed", None, "Seed of the test episodes (default: the "
                     "run's seed).")
flags.DEFINE_string("data_dir", None, "Override the run's data_dir.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = training.load_config(FLAGS.workdir)
  if FLAGS.data_dir:
    config = config.__class__(**{**config.to_dict(), "data_dir": FLAGS.data_dir})
  state = training.restore_run(FLAGS.workdir, config, FLAGS.checkpoint_step)
  episodes = config.eval_episodes if FLAGS.episodes is None else FLAGS.episodes
  if episodes < 1:
    raise ConfigError(f"--episodes must be >= 1, got {episodes}.")
  result = evaluation.meta_test_config(
      config, state.params, FLAGS.split, num_episodes=episodes,
      inner_steps=FLAGS.inner_steps, seed=FLAGS.seed)
  table = evaluation.results_table({config.learner_label: result}, config)
  print(f"checkpoint: step {int(state.step)} of {FLAGS.workdir}")
  print(table)
  reports.write_text(FLAGS.workdir, f"eval_{FLAGS.split}.md", table)
  reports.write_json(f"{FLAGS.workdir}/eval_{FLAGS.split}.json",
                     {config.learner_label: result.summary()})


if __name__ == "__main__":
  common.run(main)
