"""`python -m launch.crosscheck_autoattack` from a checkout: the `advmeta-crosscheck-autoattack` command
(advmeta_jax/cli/crosscheck_autoattack.py)."""

from advmeta_jax.cli.crosscheck_autoattack import run

if __name__ == "__main__":
  run()
