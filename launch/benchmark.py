"""`python -m launch.benchmark` from a checkout: the `advmeta-benchmark` command
(advmeta_jax/cli/benchmark.py)."""

from advmeta_jax.cli.benchmark import main, run  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
  run()
