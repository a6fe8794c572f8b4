"""A run's directory as the loop uses it: opening it for a run, the stop
request of a signal, and reading back a trained state.

    lock_workdir(workdir)       one run per workdir: refuses a second one
    open_run(workdir, config)   the checkpoint manager of a run that may start
                                or resume there (config.json written)
    StopSignal                  SIGTERM → save this step, then stop
    restore_run(workdir, config, step)   the TrainState of a trained run

The files themselves (config.json, metrics.jsonl, checkpoints/) are
checkpoints.py's.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import threading
from typing import Optional

import jax

from advmeta_jax.config import Config
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError, DataError
from advmeta_jax.training import checkpoints
from advmeta_jax.training.builders import build
from advmeta_jax.training.checkpoints import CHECKPOINT_DIR
from advmeta_jax.training.step import init_state
from advmeta_jax.training.step import config_optimizer
from advmeta_jax.training.step import TrainState


LOCK_FILE = ".lock"


class WorkdirLock:
  """An exclusive `flock` on WORKDIR/.lock, held while a run trains there.

  The operating system releases it when the process ends, however it ends
  (SIGKILL included), so a killed run never leaves a stale lock. The file
  holds the owner's pid and host, for the message a second run gets.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def acquire(self) -> "WorkdirLock":
    f = open(self.path, "a+")   # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      owner = f.read().strip() or "another process"
      f.close()
      raise ConfigError(
          f"workdir {os.path.dirname(self.path)!r} is in use by another run "
          f"({owner}): two runs in one workdir would overwrite each other's "
          "checkpoints. Wait for it to finish or stop it, or choose another "
          "--workdir.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}")
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


def writable_dir(path: str, what: str = "--workdir") -> str:
  """Creates directory `path` if needed and checks that files can be written
  in it, before any work; one line (ConfigError) when it is a file, cannot
  be created, or is read-only."""
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_test.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("")
    os.remove(probe)
  except FileExistsError:
    raise ConfigError(f"{what}={path!r} is a file, not a directory: give a "
                      "directory (it is created if missing).") from None
  except OSError as e:
    raise ConfigError(f"{what}={path!r} cannot be written ({e.strerror}): "
                      "give a writable directory.") from None
  return path


def lock_workdir(workdir: str) -> WorkdirLock:
  """Takes `workdir` for one run (created if needed, checked writable);
  ConfigError, naming the other process, when a run holds it already."""
  writable_dir(workdir)
  return WorkdirLock(workdir).acquire()


def open_run(workdir: str, config: Config, *, primary: bool = True):
  """The checkpoint manager of a run of `config` in `workdir`.

  Refuses (ConfigError) a workdir whose checkpoints were trained with a config
  that may not resume as `config`. Only then is config.json written (by the
  first process): a refused run leaves nothing behind that would block the
  corrected command.
  """
  os.makedirs(workdir, exist_ok=True)
  manager = checkpoints.for_config(workdir, config)
  try:
    if manager.latest_step() is not None:
      checkpoints.check_resumable(workdir, config)
  except ConfigError:
    manager.close()
    raise
  if primary:
    checkpoints.write_config(workdir, config)
  return manager


class StopSignal:
  """A context that turns SIGTERM into a request to stop: `signal` is its
  name once received (None before). The loop saves the current step and
  stops. Installed only in the main thread (Python's rule for handlers)."""

  def __init__(self):
    self.signal = None
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def restore_run(workdir: str, config: Config,
                step: Optional[int] = None) -> TrainState:
  """The train state of a finished or interrupted run in `workdir`."""
  exp = build(config.validate())
  optimizer = config_optimizer(config)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  target = init_state(params, optimizer, exp.initial_batch_stats(params))
  manager = checkpoints.manager(workdir)
  try:
    available = list(manager.all_steps())
    if not available:
      raise ConfigError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}"
                        ": train first (python -m launch.train --workdir=...).")
    if step is not None and step not in available:
      raise ConfigError(f"no checkpoint at step {step} in {workdir!r}; "
                        f"available: {sorted(available)}.")
    step = max(available) if step is None else step
    try:
      saved = checkpoints.restore_config(manager, step)
    except Exception:  # pylint: disable=broad-except  (saved before configs were)
      saved = None
    diffs = [] if saved is None else config.resume_differences(saved)
    if diffs:
      raise ConfigError(
          f"the checkpoint of step {step} in {workdir!r} was trained with a "
          "different config than the one given (" + "; ".join(diffs)
          + "): its parameters do not fit that model.")
    try:
      return checkpoints.restore(manager, target, step)
    except Exception as e:  # pylint: disable=broad-except  (orbax, TensorStore)
      first = str(e).splitlines()[0] if str(e) else ""
      raise DataError(
          f"the checkpoint of step {step} in {workdir!r} cannot be read "
          f"({type(e).__name__}: {first[:300]}); evaluate another one with "
          f"--checkpoint_step (available: {sorted(available)}).") from None
  finally:
    manager.close()
