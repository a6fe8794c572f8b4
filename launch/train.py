"""`python -m launch.train` from a checkout: the `advmeta-train` command
(advmeta_jax/cli/train.py)."""

from advmeta_jax.cli.train import main, run  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
  run()
