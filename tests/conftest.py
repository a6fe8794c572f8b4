"""Shared fixtures: tiny configs that compile in seconds on a 2-core CPU."""

import os

# Tests run on the CPU with no accelerator; keep TF (if present) off GPUs too.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Many tests (and the launchers they start as subprocesses, which inherit the
# environment) compile the same tiny programs again: XLA's persistent
# compilation cache, fresh for each test session and each xdist worker (no
# two processes writing one directory at once), compiles each of them once.
# Results do not change: a cache hit loads the executable XLA compiled.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  _CACHE_DIR = tempfile.mkdtemp(prefix="advmeta_jax_tests_xla_cache_")
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR

import ast  # pylint: disable=g-import-not-at-top
import collections  # pylint: disable=g-import-not-at-top
import contextlib  # pylint: disable=g-import-not-at-top
import pathlib  # pylint: disable=g-import-not-at-top

import pytest  # pylint: disable=g-import-not-at-top

from advmeta_jax import datasets  # pylint: disable=g-import-not-at-top
from advmeta_jax.config import Config  # pylint: disable=g-import-not-at-top


def duplicated_names(path) -> list:
  """Names defined twice at the top level of a test file: Python keeps the
  last definition, so pytest never sees the first."""
  tree = ast.parse(pathlib.Path(path).read_text())
  counts = collections.Counter(
      node.name for node in tree.body
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                           ast.ClassDef)))
  return sorted(name for name, n in counts.items() if n > 1)


def pytest_configure(config):
  """Refuses to run a suite in which a test file defines a name twice; the
  unit and integration tiers compile with `jax_disable_most_optimizations`
  (see below), the slow tier as users' runs do."""
  expr = config.option.markexpr or ""
  if "slow" not in expr.replace("not slow", ""):
    tiers_compile_unoptimized()
  for path in sorted(pathlib.Path(__file__).parent.glob("test_*.py")):
    twice = duplicated_names(path)
    if twice:
      raise pytest.UsageError(
          f"{path.name} defines {', '.join(twice)} more than once; the first "
          "definition would never run. Rename one.")


def pytest_collection_modifyitems(config, items):
  """A slow test runs only when the -m expression names `slow`: the
  integration tier (`-m integration`) leaves out its slow parameters."""
  if "slow" in (config.option.markexpr or ""):
    return
  keep = [i for i in items if i.get_closest_marker("slow") is None]
  if len(keep) < len(items):
    config.hook.pytest_deselected(
        items=[i for i in items if i.get_closest_marker("slow") is not None])
    items[:] = keep


def tiers_compile_unoptimized():
  """XLA compiles the unit and integration tiers' tiny programs with most
  optimizations off (`jax_disable_most_optimizations`, also for the
  launchers and notebook kernels they start), as flax's own tests do:
  measured here, the compile-bound unit tests take about 30% less time, and
  the integration tier 8.3 minutes instead of 12. Tests that run many steps (a model trained in a fixture) and the
  equality tests of the speed settings turn them back on
  (`optimizations_on` below), as does the test of the max-pool miscompile.
  Two tolerances did not hold without them: the hybrid convolution against
  XLA's through a scan (1.5e-5 relative, at 1e-5) and AutoAttack's EOT loss
  (1.1e-6, at 1e-6); both modules run optimized."""
  import jax  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  jax.config.update("jax_disable_most_optimizations",
                    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] not in
                    ("0", "false", "False"))


@contextlib.contextmanager
def optimizations_on():
  """XLA's full optimizations inside the block (the unit tier turns most of
  them off): for tests whose time goes into running many steps rather than
  compiling, and for the equality tests of the speed settings, which
  compare the programs as users run them."""
  import jax  # pylint: disable=g-import-not-at-top
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def optimized():
  """XLA's full optimizations for one test."""
  with optimizations_on():
    yield


def tiny_config(**overrides) -> Config:
  """MAML on digits with a small model: compiles in a few seconds.

  The speed settings take the cheapest path to compile (XLA's convolution,
  the whole task batch at once, no rematerialization); they change only
  speed and memory, and tests/test_autotune.py and the equality tests of
  tests/test_training.py keep the `auto`/hybrid paths under test."""
  base = dict(dataset="digits", n_way=5, k_shot=1, q_query=3,
              task_batch_size=2, inner_steps=1, filters=8, num_steps=4,
              log_every=1, checkpoint_every=2, eval_episodes=10,
              eval_inner_steps=2, eval_batch_size=5, conv_impl="xla",
              parallel_tasks=0, remat=False)
  base.update(overrides)
  return Config.make(**base)


def random_tasks(b: int = 2, n: int = 3, size: int = 16):
  """`b` random n-way tasks of size×size×3 images in [0, 1]: one support
  image per class, two queries per class."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from advmeta_jax.core import episodes  # pylint: disable=g-import-not-at-top
  k = jax.random.split(jax.random.key(1), 2)
  return episodes.Task(
      jax.random.uniform(k[0], (b, n, size, size, 3)),
      jnp.tile(jnp.arange(n), (b, 1)),
      jax.random.uniform(k[1], (b, 2 * n, size, size, 3)),
      jnp.tile(jnp.arange(2 * n) % n, (b, 1)))


@pytest.fixture(scope="session")
def digits_train():
  return datasets.load("digits", "train")


@pytest.fixture(scope="session")
def digits_test():
  return datasets.load("digits", "test")
