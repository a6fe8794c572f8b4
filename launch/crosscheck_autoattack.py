r"""Our AutoAttack against the reference implementation on one small model.

  python -m launch.crosscheck_autoattack --eps=24/255 --num_examples=200

The library code is `advmeta_jax.benchmarks.crosscheck_autoattack`.
"""

from absl import app

from advmeta_jax.benchmarks import crosscheck_autoattack

if __name__ == "__main__":
  crosscheck_autoattack.define_flags()
  app.run(crosscheck_autoattack.main)
