r"""Our AutoAttack against the reference implementation on one small model.

  advmeta-crosscheck-autoattack --eps=24/255 --num_examples=200

The library code is `advmeta_jax.benchmarks.crosscheck_autoattack`.
"""

from absl import app

from advmeta_jax.benchmarks import crosscheck_autoattack
from advmeta_jax.cli import common

crosscheck_autoattack.define_flags()


def run():
  """The `advmeta-crosscheck-autoattack` command."""
  common.show_usage_of(__name__)
  app.run(crosscheck_autoattack.main)


if __name__ == "__main__":
  run()
