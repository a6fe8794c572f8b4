"""`python -m launch.reproduce` from a checkout: the `advmeta-reproduce` command
(advmeta_jax/cli/reproduce.py)."""

from advmeta_jax.cli.reproduce import main, run  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
  run()
