"""`python -m launch.sweep` from a checkout: the `advmeta-sweep` command
(advmeta_jax/cli/sweep.py)."""

from advmeta_jax.cli.sweep import main, run  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
  run()
