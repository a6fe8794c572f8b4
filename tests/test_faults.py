"""Faults a long run meets: a truncated checkpoint, corrupt workdir files, a
full disk (in-process, unit tier); SIGTERM and SIGKILL during a save, tried
on real `python -m launch.train` processes (integration tier). The table of
bad input of docs/reliability.md is tests/test_bad_input.py."""

import errno
import json
import pathlib
import re
import signal
import time

import chex
import pytest

from advmeta_jax.training import checkpoints
from advmeta_jax import config as config_lib
from advmeta_jax import training
from advmeta_jax.errors import ConfigError, DataError
from tests.conftest import tiny_config
from tests.test_launch import _finish
from tests.test_launch import _start

# The CLI form of `tiny_config` (meta-testing off: only training is compared).
TINY = ("--filters=8", "--q_query=3", "--task_batch_size=2", "--inner_steps=1",
        "--log_every=1", "--eval_episodes=0", "--conv_impl=xla",
        "--parallel_tasks=0", "--remat=false")


def _tiny(**overrides):
  return tiny_config(eval_episodes=0, **overrides)


def _train_cli(workdir, *flags):
  return _start("launch.train", f"--workdir={workdir}", *TINY, *flags)


def _final_params(workdir, config):
  return training.restore_run(str(workdir), config).params


def _reference(tmp_path, digits_train, num_steps):
  state = training.train(_tiny(num_steps=num_steps),
                         str(tmp_path / f"reference{num_steps}"),
                         train_split=digits_train, progress=False)
  return state.params


def _assert_clean_exit(result, code=0):
  assert result.returncode == code, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]


def _largest_file(directory):
  files = [p for p in pathlib.Path(directory).rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.integration   # a whole run, resumed or relaunched
def test_truncated_newest_checkpoint_falls_back_and_loses_nothing(
    tmp_path, digits_train, caplog):
  workdir = tmp_path / "run"
  training.train(_tiny(num_steps=4, checkpoint_every=2), str(workdir),
                 train_split=digits_train, progress=False)
  victim = _largest_file(workdir / "checkpoints" / "4")
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  with caplog.at_level("WARNING"):
    state = training.train(_tiny(num_steps=6, checkpoint_every=2),
                           str(workdir), train_split=digits_train,
                           progress=False)
  assert "checkpoint of step 4 cannot be read" in caplog.text
  assert (workdir / "checkpoints" / "4.corrupt").is_dir()   # moved, not deleted
  chex.assert_trees_all_equal(state.params,
                              _reference(tmp_path, digits_train, 6))
  metrics = checkpoints.load_metrics(str(workdir))
  assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5, 6]


def test_orbax_tracebacks_from_threads_become_one_line_during_a_read():
  # orbax logs a failed read from a worker thread, not every time (CI saw
  # it once); inside the read, such a record is one line, no traceback.
  import io
  import logging as py_logging
  import threading
  from absl import logging as absl_logging
  stream = io.StringIO()
  handler = py_logging.StreamHandler(stream)
  py_logging.getLogger().addHandler(handler)

  def fail():
    try:
      raise RuntimeError("array index (slice(0, 8, 1),)\nTensorStore({...})")
    except RuntimeError:
      absl_logging.exception("_SignalingThread.run() raised: %s", "boom")

  try:
    with checkpoints._one_line_errors():  # pylint: disable=protected-access
      thread = threading.Thread(target=fail)
      thread.start()
      thread.join()
    fail()   # outside the read, records keep their traceback
  finally:
    py_logging.getLogger().removeHandler(handler)
  inside, outside = stream.getvalue().split("_SignalingThread", 2)[1:]
  assert "raised: boom" in inside and "Traceback" not in inside
  assert "Traceback" in outside


def test_exceptions_ignored_in_finalizers_are_one_line_after_a_failed_read(
    capsys):
  # What CI saw: "Exception ignored in: <coroutine ...>" and a traceback,
  # when orbax's read coroutine is finalized after the read failed.
  import sys

  class Leftover:

    def __del__(self):
      raise RuntimeError("Encountered error while reading array index\nmore")

  previous = sys.unraisablehook
  try:
    with pytest.raises(OSError):
      with checkpoints._one_line_errors():  # pylint: disable=protected-access
        leftover = Leftover()
        raise OSError("truncated")
    del leftover   # finalized after the failed read: still one line
    err = capsys.readouterr().err
  finally:
    sys.unraisablehook = previous
  assert "RuntimeError: Encountered error while reading array index" in err
  assert "Traceback" not in err and "more" not in err


def test_no_readable_checkpoint_is_one_clear_error(tmp_path, digits_train):
  workdir = tmp_path / "run"
  training.train(_tiny(num_steps=2), str(workdir), train_split=digits_train,
                 progress=False)
  for path in (workdir / "checkpoints").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  with pytest.raises(DataError, match=r"no readable checkpoint in .*"
                     r"checkpoints: tried step 2"):
    training.train(_tiny(num_steps=3), str(workdir), train_split=digits_train,
                   progress=False)


def _wait_for(predicate, timeout_s=240.0, poll_s=0.002):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if predicate():
      return True
    time.sleep(poll_s)
  return False


def _metric_lines(workdir):
  path = workdir / checkpoints.METRICS_FILE
  return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.integration
def test_sigterm_saves_the_current_step_and_resumes_exactly(
    tmp_path, digits_train):
  workdir = tmp_path / "run"
  process = _train_cli(workdir, "--num_steps=400", "--checkpoint_every=1000")
  assert _wait_for(lambda: _metric_lines(workdir) >= 3)
  process.send_signal(signal.SIGTERM)
  result = _finish(process)
  _assert_clean_exit(result, 143)
  line = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(line) == 1 and "stopped by SIGTERM at step" in line[0], line
  assert "same command to resume" in line[0]
  stopped = int(line[0].split("at step ")[1].split()[0])
  assert checkpoints.manager(str(workdir)).latest_step() == stopped
  final = stopped + 2
  _assert_clean_exit(_finish(_train_cli(workdir, f"--num_steps={final}",
                                        "--checkpoint_every=1000")))
  chex.assert_trees_all_equal(_final_params(workdir, _tiny(num_steps=final)),
                              _reference(tmp_path, digits_train, final))


def _saving(workdir):
  directory = workdir / "checkpoints"
  return directory.is_dir() and any(
      "tmp" in p.name for p in directory.iterdir())


@pytest.mark.integration
def test_sigkill_during_saves_leaves_a_restorable_checkpoint(
    tmp_path, digits_train):
  """Kills a real process while orbax writes a checkpoint (as soon as its
  temporary directory appears, and 20 / 60 ms later), resumes each time,
  and ends with the parameters of an uninterrupted run."""
  workdir, num_steps = tmp_path / "run", 24
  for delay_s in (0.0, 0.02, 0.06):
    process = _train_cli(workdir, f"--num_steps={num_steps}",
                         "--checkpoint_every=1")
    seen = _wait_for(lambda: _saving(workdir) and _metric_lines(workdir) >= 2)
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    result = _finish(process)
    assert seen and result.returncode == -signal.SIGKILL, result.stderr[-2000:]
  result = _finish(_train_cli(workdir, f"--num_steps={num_steps}",
                              "--checkpoint_every=1"))
  _assert_clean_exit(result)
  assert not any("corrupt" in p.name
                 for p in (workdir / "checkpoints").iterdir())
  chex.assert_trees_all_equal(
      _final_params(workdir, _tiny(num_steps=num_steps)),
      _reference(tmp_path, digits_train, num_steps))


def test_corrupt_config_json_and_truncated_metrics(tmp_path, digits_train):
  workdir = tmp_path / "run"
  training.train(_tiny(num_steps=2), str(workdir), train_split=digits_train,
                 progress=False)
  (workdir / "config.json").write_text('{"data": {"dataset": "dig')
  with open(workdir / checkpoints.METRICS_FILE, "a") as f:
    f.write('{"step": 3, "lo')
  # The config saved with the checkpoint stands in and is written back; the
  # metrics line goes.
  assert checkpoints.load_config(str(workdir)) == _tiny(num_steps=2)
  assert config_lib.Config.from_dict(json.loads(
      (workdir / "config.json").read_text())) == _tiny(num_steps=2)
  assert [r["step"] for r in checkpoints.load_metrics(str(workdir))] == [1, 2]
  state = training.train(_tiny(num_steps=3), str(workdir),
                         train_split=digits_train, progress=False)
  assert int(state.step) == 3
  assert json.loads((workdir / "config.json").read_text())["loop"][
      "num_steps"] == 3
  assert [r["step"] for r in checkpoints.load_metrics(str(workdir))] == [
      1, 2, 3]
  # Without a checkpoint to fall back to: one line.
  bare = tmp_path / "bare"
  bare.mkdir()
  (bare / "config.json").write_text("{")
  with pytest.raises(ConfigError, match="is not valid JSON .* no checkpoint"):
    checkpoints.load_config(str(bare))


def test_evaluation_refuses_a_checkpoint_of_another_config(
    tmp_path, digits_train):
  workdir = tmp_path / "run"
  training.train(_tiny(num_steps=1), str(workdir), train_split=digits_train,
                 progress=False)
  with pytest.raises(ConfigError, match=r"different config than the one given"
                     r" \(filters: 8 -> 16\)"):
    training.restore_run(str(workdir), _tiny(num_steps=1, filters=16))


@pytest.mark.integration   # a whole run, resumed or relaunched
def test_disk_full_during_a_save_stops_cleanly(tmp_path, digits_train,
                                               monkeypatch):
  workdir = tmp_path / "run"
  write = checkpoints._write  # pylint: disable=protected-access
  calls = []

  def full_after_one(mgr, step, items):
    calls.append(step)
    if len(calls) > 1:
      raise OSError(errno.ENOSPC, "No space left on device")
    write(mgr, step, items)

  monkeypatch.setattr(checkpoints, "_write", full_after_one)
  with pytest.raises(DataError, match=r"no space left on the device to save "
                     r"the checkpoint of step 4 in .*checkpoints: it needs "
                     r"about [\d.]+ [KM]iB, [\d.]+ [KM]iB are free\. The checkpoint "
                     r"of step 2 is kept"):
    training.train(_tiny(num_steps=6), str(workdir), train_split=digits_train,
                   progress=False)
  monkeypatch.setattr(checkpoints, "_write", write)
  state = training.train(_tiny(num_steps=6), str(workdir),
                         train_split=digits_train, progress=False)
  chex.assert_trees_all_equal(state.params,
                              _reference(tmp_path, digits_train, 6))


def test_checkpoints_of_an_earlier_version_are_refused_not_moved(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = tmp_path / "run" / "checkpoints"
  old = ocp.CheckpointManager(str(directory),
                              options=ocp.CheckpointManagerOptions(create=True))
  old.save(3, args=ocp.args.StandardSave({"a": jnp.ones(2)}), force=True)
  old.wait_until_finished()
  old.close()
  with pytest.raises(ConfigError, match="written by an earlier version"):
    checkpoints.manager(str(tmp_path / "run"))
  assert (directory / "3" / "default").is_dir()      # left as it was


def test_every_test_the_fault_table_names_exists():
  """docs/reliability.md's fault table names the test of each fault; each
  is a test function of tests/."""
  repo = pathlib.Path(__file__).resolve().parent.parent
  text = (repo / "docs" / "reliability.md").read_text()
  faults = text.split("## Faults")[1].split("## Bad input")[0]
  named = set(re.findall(r"\b(test_[a-z0-9_]+)\b(?!\.py)", faults))
  defined = set()
  for path in (repo / "tests").glob("test_*.py"):
    defined |= set(re.findall(r"^def (test_[a-z0-9_]+)\(", path.read_text(),
                              re.MULTILINE))
  assert len(named) >= 15, named
  assert named <= defined, sorted(named - defined)
