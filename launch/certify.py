"""`python -m launch.certify` from a checkout: the `advmeta-certify` command
(advmeta_jax/cli/certify.py)."""

from advmeta_jax.cli.certify import main, run  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
  run()
