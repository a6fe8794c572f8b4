"""`python -m launch.evaluate` from a checkout: the `advmeta-evaluate` command
(advmeta_jax/cli/evaluate.py)."""

from advmeta_jax.cli.evaluate import main, run  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
  run()
