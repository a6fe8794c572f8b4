"""One run per workdir, and a checkpoint manager whose close fails after a
full disk: each ends in one line."""

import errno
import os
import subprocess

import pytest

from advmeta_jax.errors import ConfigError, DataError
from advmeta_jax import training
from advmeta_jax.training import loop
from advmeta_jax.training import rundir


def test_a_second_run_in_a_busy_workdir_is_refused_naming_the_first(tmp_path):
  first = rundir.lock_workdir(str(tmp_path))
  try:
    with pytest.raises(ConfigError, match=rf"in use by another run \(pid "
                       rf"{os.getpid()} on "):
      rundir.lock_workdir(str(tmp_path))
  finally:
    first.release()
  rundir.lock_workdir(str(tmp_path)).release()   # free again


def test_the_lock_of_a_killed_run_is_not_stale(tmp_path):
  """flock belongs to the process: a child that takes it and is killed
  leaves the workdir free."""
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  ready = multiprocessing.get_context("fork").Event()

  def hold():
    held = rundir.lock_workdir(str(tmp_path))   # pylint: disable=unused-variable
    ready.set()
    signal.pause()

  child = multiprocessing.get_context("fork").Process(target=hold)
  child.start()
  assert ready.wait(30)
  with pytest.raises(ConfigError, match=f"pid {child.pid}"):
    rundir.lock_workdir(str(tmp_path))
  child.kill()
  child.join()
  rundir.lock_workdir(str(tmp_path)).release()


class _Manager:
  directory = "/ckpt"

  def __init__(self, error):
    self.error = error

  def close(self):
    raise self.error


def test_a_full_disk_at_close_is_one_line():
  with pytest.raises(DataError, match="no space left on the device while "
                     "finishing the checkpoints in /ckpt"):
    loop._close(_Manager(OSError(errno.ENOSPC, "No space left on device")),  # pylint: disable=protected-access
                None)


def test_a_close_error_after_another_error_does_not_hide_it():
  with pytest.raises(DataError, match="the first error"):
    try:
      raise DataError("the first error")
    finally:
      loop._close(_Manager(OSError(errno.ENOSPC, "disk full")), None)  # pylint: disable=protected-access


def _saved_run(workdir, **overrides):
  """A workdir with config.json and one checkpoint (step 1) of a tiny state,
  as a run of `tiny_config(**overrides)` leaves it (no model compiled)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from advmeta_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from advmeta_jax.training.step import TrainState  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(**overrides)
  mgr = rundir.open_run(str(workdir), config)
  try:
    state = TrainState(jnp.ones((), jnp.int32), {"w": jnp.zeros(3)},
                       {"m": jnp.zeros(3)})
    checkpoints.save(mgr, state, config)
  finally:
    mgr.close()
  return config


def test_an_edited_config_json_cannot_resume_another_learner(tmp_path):
  """config.json says aq, the checkpoint holds MAML's parameters: refused,
  naming the checkpoint's config."""
  from advmeta_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  config = _saved_run(tmp_path, learner="maml")
  path = tmp_path / checkpoints.CONFIG_FILE
  path.write_text(path.read_text().replace('"maml"', '"aq"'))
  with pytest.raises(ConfigError, match="from the newest checkpoint: .*learner"):
    checkpoints.check_resumable(str(tmp_path), config.replace(learner="aq"))
  with pytest.raises(ConfigError, match="from config.json: learner"):
    checkpoints.check_resumable(str(tmp_path), config)   # the file disagrees


def test_a_deleted_config_json_is_restored_from_the_newest_checkpoint(
    tmp_path):
  from advmeta_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  config = _saved_run(tmp_path)
  (tmp_path / checkpoints.CONFIG_FILE).unlink()
  assert checkpoints.load_config(str(tmp_path)) == config
  assert (tmp_path / checkpoints.CONFIG_FILE).exists()
  checkpoints.check_resumable(str(tmp_path), config)


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "afile"
  path.write_text("x")
  with pytest.raises(ConfigError, match="is a file, not a directory"):
    rundir.lock_workdir(str(path))
  with pytest.raises(ConfigError, match="--out=.* is a file"):
    rundir.writable_dir(str(path), "--out")


def test_a_directory_that_cannot_be_created_is_one_line(tmp_path):
  (tmp_path / "afile").write_text("x")
  with pytest.raises(ConfigError, match="cannot be written"):
    rundir.writable_dir(str(tmp_path / "afile" / "sub"))


def test_a_read_only_workdir_is_one_line(tmp_path):
  """On a read-only filesystem (a tmpfs mounted ro where the test may mount;
  else a directory without write permission, which root ignores)."""
  target = tmp_path / "ro"
  target.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m",
                            "tmpfs", str(target)], capture_output=True,
                           check=False).returncode == 0
  if not mounted:
    if os.geteuid() == 0:
      pytest.skip("cannot mount a read-only tmpfs here, and root writes "
                  "into read-only directories")
    target.chmod(0o500)
  try:
    with pytest.raises(ConfigError, match="cannot be written"):
      rundir.lock_workdir(str(target / "run") if mounted else str(target))
  finally:
    if mounted:
      subprocess.run(["umount", str(target)], check=False)
    else:
      target.chmod(0o700)


def test_metric_lines_past_the_checkpoint_are_dropped_with_a_line_saying_which(
    tmp_path, caplog):
  import json  # pylint: disable=g-import-not-at-top
  from advmeta_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  path = tmp_path / checkpoints.METRICS_FILE
  path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n"
                          for s in (2, 4, 6, 8)) + '{"step": 10, "lo')
  checkpoints.truncate_metrics(str(tmp_path), 4)
  assert [r["step"] for r in checkpoints.load_metrics(str(tmp_path))] == [2, 4]
  text = caplog.text
  assert "dropping the truncated last line" in text
  assert ("dropping 2 line(s) of step(s) 6, 8, logged after the checkpoint "
          "of step 4") in text


def test_tensorboard_summaries_are_read_back_and_a_resume_drops_orphans(
    tmp_path):
  """`SummaryWriter` through TensorBoard's own reader: the points as
  written; a session resumed at step 2 drops the first session's steps past
  2, as TensorBoard shows them."""
  logdir = str(tmp_path / "tb")
  first = training.SummaryWriter(logdir)
  for step in (1, 2, 3):
    first.scalars(step, {"loss": 1.0 / step, "skip": float("nan"),
                         "name": "not a number"}, prefix="train/")
  first.close()
  assert training.read_scalars(logdir) == {
      "train/loss": {1: 1.0, 2: 0.5, 3: pytest.approx(1 / 3)}}
  second = training.SummaryWriter(logdir, resumed_at=2)
  second.scalars(3, {"loss": 0.25}, prefix="train/")
  second.close()
  assert training.read_scalars(logdir)["train/loss"] == {1: 1.0, 2: 0.5,
                                                          3: 0.25}


def test_a_summary_writer_that_cannot_write_warns_once_and_goes_on(
    tmp_path, caplog):
  target = tmp_path / "afile"
  target.write_text("")
  writer = training.SummaryWriter(str(target / "tb"))   # under a file
  writer.scalars(1, {"loss": 1.0})
  writer.close()
  assert sum("TensorBoard summaries" in r.getMessage()
             for r in caplog.records) == 1
