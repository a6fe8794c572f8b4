"""The command-line programs' shared pieces (advmeta_jax/cli/common.py)."""

import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache
import pytest

from advmeta_jax import training
from advmeta_jax.cli import common
from advmeta_jax.core import models
from advmeta_jax.training import executables
from tests.conftest import tiny_config


@pytest.fixture
def restore_cache_dir():
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  yield
  jax.config.update("jax_compilation_cache_dir", before[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
  compilation_cache.reset_cache()
  executables._LOADED.clear()  # pylint: disable=protected-access
  executables.enable(False)


def test_launches_use_a_persistent_compilation_cache(tmp_path, monkeypatch,
                                                     restore_cache_dir):
  del restore_cache_dir
  target = tmp_path / "xla"
  assert common.enable_compilation_cache(str(target)) == str(target)
  assert jax.config.jax_compilation_cache_dir == str(target)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
  assert target.is_dir()
  # '' turns it off; the default is $JAX_COMPILATION_CACHE_DIR, else the
  # user's cache folder.
  assert common.enable_compilation_cache("") is None
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home_cache"))
  assert common.default_compilation_cache_dir() == os.path.join(
      str(tmp_path / "home_cache"), "advmeta_jax", "xla")


def test_an_unusable_cache_directory_is_a_warning_not_an_error(
    tmp_path, restore_cache_dir, caplog):
  del restore_cache_dir
  afile = tmp_path / "afile"
  afile.write_text("")
  assert common.enable_compilation_cache(str(afile / "xla")) is None
  assert any("no compilation cache" in r.getMessage() for r in caplog.records)


def _forget_compiled_programs():
  """What a new process would not have: JAX's compiled programs in memory,
  the loaded train iterations, the jitted functions built from a config."""
  jax.clear_caches()
  executables._LOADED.clear()  # pylint: disable=protected-access
  training.step.jitted_train_iteration.cache_clear()
  models.make_apply_fn.cache_clear()


@pytest.mark.integration   # a whole run, resumed or relaunched
def test_a_relaunch_in_the_same_cache_compiles_nothing_before_its_first_step(
    tmp_path, restore_cache_dir, digits_train, caplog):
  """Two launches of one run into new workdirs, with what a process keeps in
  memory forgotten in between: the first stores the train iteration; the
  second (one step longer, its summaries on) loads it and finds every other
  program (initialization, the keys' splits) in XLA's cache: no compile, no
  miss."""
  del restore_cache_dir
  caplog.set_level(logging.INFO)
  # absl's own logger too: a launcher run earlier in this worker may have
  # set its verbosity above INFO.
  caplog.set_level(logging.INFO, logger="absl")
  cache = tmp_path / "xla"
  common.enable_compilation_cache(str(cache))
  compilation_cache.reset_cache()
  config = tiny_config(num_steps=1, eval_episodes=0, tensorboard=False)
  _forget_compiled_programs()
  training.train(config, str(tmp_path / "first"), train_split=digits_train,
                 progress=False)
  assert len(list((cache / executables.SUBDIR).iterdir())) == 1
  _forget_compiled_programs()
  events = []
  listen = lambda event, **kwargs: events.append(event)
  jax.monitoring.register_event_listener(listen)
  caplog.clear()
  try:
    training.train(tiny_config(num_steps=2, eval_episodes=0),
                   str(tmp_path / "second"), train_split=digits_train,
                   progress=False)
  finally:
    jax.monitoring.unregister_event_listener(listen)
  messages = [r.getMessage() for r in caplog.records]
  assert any(m.startswith("train iteration loaded from") for m in messages)
  assert any(m.startswith("first step started") for m in messages)
  asked = events.count("/jax/compilation_cache/compile_requests_use_cache")
  assert asked > 0    # the eager programs went to the cache...
  assert events.count("/jax/compilation_cache/cache_hits") == asked  # ...and hit
  # Only the launchers turn it on: Python callers of training.train trace.
  executables.enable(False)
  assert executables.cache_dir() is None
