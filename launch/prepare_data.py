"""`python -m launch.prepare_data` from a checkout: the `advmeta-prepare-data` command
(advmeta_jax/cli/prepare_data.py)."""

from advmeta_jax.cli.prepare_data import main, run  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
  run()
