"""The command-line programs' shared pieces (advmeta_jax/cli/common.py)."""

import os

import jax
import pytest

from advmeta_jax.cli import common


@pytest.fixture
def restore_cache_dir():
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  yield
  jax.config.update("jax_compilation_cache_dir", before[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


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
