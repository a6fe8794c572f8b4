"""A run's directory: checkpoints (orbax), its config and its metrics.

    workdir/
      config.json      the run's `config.Config` (nested sections)
      metrics.jsonl    one JSON line of training metrics per logged step
      checkpoints/<step>/
        state/         the `TrainState` (params, optimizer state, step, and
                       the BatchNorm running averages of --batchnorm=running)
        config/        the config the state was trained with (JSON)

The orbax `CheckpointManager` owns the save interval
(`loop.checkpoint_every`) and the retention (`loop.keep_checkpoints`);
orbax writes each checkpoint to a temporary directory and renames it when
complete, so a process killed during a save leaves the previous checkpoints
whole (the temporary directory is removed when the run restarts).

Faults, and what happens:
  * the newest checkpoint cannot be read (truncated, garbled, missing
    files): `restore` warns with its step and the error, moves it aside to
    `checkpoints/<step>.corrupt` (never deletes it) and restores the newest
    readable one; if none is readable, one `DataError` names the directory
    and what was tried;
  * the disk fills during a save: `save` raises one `DataError` saying how
    much space the checkpoint needs and where; the earlier checkpoints stay;
  * config.json is not valid JSON: `load_config` falls back to the config
    saved with the newest checkpoint (warning), else one `ConfigError`;
  * metrics.jsonl ends in a truncated line (a crash while writing it): the
    line is dropped with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging as py_logging
import os
import shutil
import sys
from typing import Dict, List, Optional

from absl import logging
import jax
import numpy as np

from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError, DataError, NonFiniteLossError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


class _OneLineRecords(py_logging.Filter):
  """Strips the traceback from log records: when a checkpoint cannot be
  read, orbax (from a worker thread, so not every time) or asyncio may log
  the exception with its traceback before it reaches `restore`, which says
  what happened in one line of its own."""

  def filter(self, record):
    message = record.getMessage()
    if record.exc_info or record.stack_info or "\n" in message:
      lines = message.splitlines()
      record.msg, record.args = (lines[0][:300] if lines else ""), None
      record.exc_info = record.exc_text = record.stack_info = None
    return True


class _DropLibraryRecords(py_logging.Filter):
  """Drops orbax's and asyncio's records while a checkpoint is written: a
  failed write (a full disk) is reported by `save` in one line of its own,
  and the worker threads' reports of the same failure would repeat it."""

  def filter(self, record):
    return not (record.name == "asyncio" or "orbax" in record.pathname
                or "asyncio" in record.pathname)


_UNRAISABLE_SEEN = set()


def _one_line_unraisable(unraisable):
  """`sys.unraisablehook` that writes one line, no traceback, once per
  distinct message (see below)."""
  error = unraisable.exc_value
  first = str(error).splitlines()[0] if str(error) else ""
  where = unraisable.err_msg or "Exception ignored in"
  line = f"{where}: {type(error).__name__}: {first[:200]}"
  if line not in _UNRAISABLE_SEEN:
    _UNRAISABLE_SEEN.add(line)
    sys.stderr.write(line + "\n")


@contextlib.contextmanager
def _one_line_errors(drop_library_records: bool = False):
  """While active, errors that orbax, asyncio or TensorStore report on their
  own, besides the exception `restore` catches, are one line each: log
  records lose their traceback (absl's logger, where orbax logs, asyncio's,
  and the root logger's handlers, where absl's handler sits), and an
  exception raised while a coroutine is finalized ("Exception ignored in
  <coroutine ...>", Python's unraisable hook) is one line. A failed read
  leaves coroutines behind that may be finalized later, so after a failure
  the one-line unraisable hook, and the filter of asyncio's logger (which
  reports "Task exception was never retrieved" when such a task is
  collected), stay for the rest of the process."""
  asyncio_logger = py_logging.getLogger("asyncio")
  filtered = ([py_logging.getLogger("absl"), asyncio_logger]
              + list(py_logging.getLogger().handlers))
  record_filter = (_DropLibraryRecords() if drop_library_records
                   else _OneLineRecords())
  for target in filtered:
    target.addFilter(record_filter)
  previous_hook, failed = sys.unraisablehook, True
  sys.unraisablehook = _one_line_unraisable
  try:
    yield
    failed = False
  finally:
    gc.collect()   # finalize what the read left behind while still one-line
    for target in filtered:
      if not (failed and target is asyncio_logger):
        target.removeFilter(record_filter)
    if not failed:
      sys.unraisablehook = previous_hook


def close(mgr) -> None:
  """Closes a manager; what orbax logs of a failed pending write on the way
  is one line per record (the caller says what happened)."""
  with _one_line_errors(drop_library_records=True):
    mgr.close()


def manager(workdir: str, *, save_interval_steps: int = 1,
            max_to_keep: Optional[int] = 3):
  """The orbax `CheckpointManager` of `workdir/checkpoints`.

  Args:
    workdir: the run's directory.
    save_interval_steps: `should_save(step)` is true every this many steps
      (and when JAX's preemption sync point says the job is preempted).
    max_to_keep: checkpoints kept (the newest); None keeps all.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  policies = ocp.checkpoint_managers
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  remove_unfinished_saves(directory)
  _refuse_earlier_format(directory)
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(
          # Every `save_interval_steps` steps, and at a preemption notice
          # (all hosts agree on the step); not at the first step.
          save_decision_policy=policies.AnySavePolicy([
              policies.FixedIntervalPolicy(save_interval_steps),
              policies.PreemptionCheckpointingPolicy()]),
          max_to_keep=max_to_keep, create=True))


def remove_unfinished_saves(directory: str) -> List[str]:
  """Deletes the temporary directories of saves that never completed (a
  process killed while orbax was writing); returns their names. Done here,
  before the manager starts, rather than by orbax's background clean-up,
  which its `close()` does not wait for."""
  if not os.path.isdir(directory):
    return []
  removed = [name for name in os.listdir(directory)
             if ".orbax-checkpoint-tmp" in name]
  for name in removed:
    logging.warning("removing %s: a save that did not complete.", name)
    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  return removed


def _refuse_earlier_format(directory: str) -> None:
  """Refuses checkpoints written by versions before the config was saved
  with the state (one unnamed orbax item, `<step>/default`): orbax cannot mix
  the two layouts in one directory, and such a checkpoint is not corrupt."""
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    step = os.path.join(directory, name)
    if (name.isdigit() and os.path.isdir(os.path.join(step, "default"))
        and not os.path.isdir(os.path.join(step, "state"))):
      raise ConfigError(
          f"the checkpoints in {directory} were written by an earlier version "
          "of advmeta_jax (one unnamed item; this version saves the state "
          "and its config). Train again in a new --workdir, or evaluate them "
          "with the version that wrote them.")


def for_config(workdir: str, config: Config):
  """The manager with the save interval and retention of `config.loop`."""
  return manager(workdir, save_interval_steps=config.loop.checkpoint_every,
                 max_to_keep=config.loop.keep_checkpoints)


def _nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def is_disk_full(error: BaseException) -> bool:
  while error is not None:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _write(mgr, step: int, items) -> None:
  """orbax's save of `items` at `step`, waited for."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mgr.save(step, args=ocp.args.Composite(**items), force=True)
  mgr.wait_until_finished()


def save(mgr, state, config: Optional[Config] = None) -> None:
  """Saves `state` at its step (and the config beside it), waiting until the
  checkpoint is complete on disk. A step already saved is skipped.

  Raises:
    DataError: the device filled up during the save (the checkpoints saved
      before are kept).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = int(state.step)
  if mgr.latest_step() == step:
    return
  if not all(bool(np.all(np.isfinite(np.asarray(x))))
             for x in jax.tree.leaves(state.params)):
    raise NonFiniteLossError(
        f"the parameters of step {step} are not finite: that checkpoint is "
        "not saved, and the run stops.")
  items = {"state": ocp.args.StandardSave(_on_disk(state))}
  if config is not None:
    items["config"] = ocp.args.JsonSave(config.to_dict())
  try:
    with _one_line_errors(drop_library_records=True):   # see the filter
      _write(mgr, step, items)
  except Exception as e:  # pylint: disable=broad-except
    if not is_disk_full(e):
      raise
    directory = str(mgr.directory)
    free = shutil.disk_usage(directory).free
    kept = mgr.latest_step()
    raise DataError(
        f"no space left on the device to save the checkpoint of step {step} "
        f"in {directory}: it needs about {_size(_nbytes(state))}, "
        f"{_size(free)} are free. "
        + (f"The checkpoint of step {kept} is kept. " if kept is not None
           else "No checkpoint was saved before. ")
        + "Free some space and run the same command to resume.") from None


def _on_disk(state):
  """The state as it is written: its fields by name, without `batch_stats`
  when it is None (`--batchnorm=batch`), so those checkpoints have the
  layout of the ones written before the field existed, and both read."""
  fields = state._asdict()
  if fields.get("batch_stats", 0) is None:
    del fields["batch_stats"]
  return fields


def _size(nbytes: int) -> str:
  return (f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20
          else f"{nbytes / 2**10:.0f} KiB")


def set_aside_diverged(mgr, step: int) -> Optional[str]:
  """Renames the checkpoint of `step`, whose parameters gave a non-finite
  loss, to `<step>.diverged` (kept for inspection, never resumed from);
  returns its new path, or None when there is no such checkpoint."""
  if step not in mgr.all_steps():
    return None
  return _move_aside(mgr, step, suffix="diverged")


def _move_aside(mgr, step: int, suffix: str = "corrupt") -> str:
  """Renames the checkpoint of `step` to `<step>.<suffix>` (never deleted)."""
  directory = str(mgr.directory)
  source = os.path.join(directory, str(step))
  target = f"{source}.{suffix}"
  n = 1
  while os.path.exists(target):
    n += 1
    target = f"{source}.{suffix}{n}"
  os.rename(source, target)
  mgr.reload()
  return target


def restore(mgr, target, step: Optional[int] = None, *,
            fall_back: bool = False):
  """The state of the checkpoint at `step` (default: latest) in the shapes,
  dtypes and shardings of `target`, or None when there is none.

  Args:
    mgr: the manager.
    target: a state like the saved one (a `TrainState`; its leaves give
      shape, dtype and sharding).
    step: the step to restore (default: the newest).
    fall_back: when the newest checkpoint cannot be read, warn, move it
      aside to `<step>.corrupt` and try the next older one (only with
      `step=None`).

  Raises:
    DataError: with `fall_back`, no checkpoint could be read.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _on_disk(target))
  def read(s):
    with _one_line_errors():
      return type(target)(**mgr.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))["state"])
  if step is not None or not fall_back:
    step = mgr.latest_step() if step is None else step
    return None if step is None else read(step)
  tried = []
  while (step := mgr.latest_step()) is not None:
    try:
      return read(step)
    except Exception as e:  # pylint: disable=broad-except  (orbax, TensorStore, JSON)
      reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      moved = _move_aside(mgr, step)
      tried.append(f"step {step} ({reason[:200]})")
      logging.warning("the checkpoint of step %d cannot be read (%s); moved "
                      "it aside to %s and trying the one before.", step,
                      reason[:500], moved)
  if tried:
    raise DataError(
        f"no readable checkpoint in {mgr.directory}: tried "
        + "; ".join(tried) + ". They were moved aside to <step>.corrupt; "
        "use a new --workdir, or restore a backup of the checkpoints.")
  return None


def restore_config(mgr, step: int) -> Config:
  """The config saved with the checkpoint at `step`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with _one_line_errors():
    restored = mgr.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))
  return Config.from_dict(restored["config"])


# --- config.json and metrics.jsonl -----------------------------------------

def load_config(workdir: str) -> Config:
  """The config of the run in `workdir` (its config.json).

  A config.json that is missing or not valid JSON (deleted, or cut short by a
  crash) is replaced by the config saved with the newest readable
  checkpoint, with a one-line warning; config.json is written again from it.

  Raises:
    ConfigError: no config.json and no checkpoint holding the config.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    try:
      with open(path) as f:
        return Config.from_dict(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      problem = f"{path} is not valid JSON ({e})"
  else:
    problem = f"no {CONFIG_FILE} in workdir {workdir!r}"
  saved = _config_of_newest_checkpoint(workdir)
  if saved is None:
    if not os.path.exists(path):
      raise ConfigError(f"{problem}: is it the --workdir of a training run?")
    raise ConfigError(f"{problem}, and no checkpoint in {workdir!r} holds a "
                      "copy of the config: fix or delete the file, or use a "
                      "new --workdir.")
  logging.warning("%s; using (and writing back) the config saved with the "
                  "newest checkpoint.", problem)
  try:
    write_config(workdir, saved)
  except OSError:
    pass   # a read-only workdir: the config is still the checkpoint's
  return saved


def _config_of_newest_checkpoint(workdir: str) -> Optional[Config]:
  if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    return None
  mgr = manager(workdir)
  try:
    for step in sorted(mgr.all_steps(), reverse=True):
      try:
        return restore_config(mgr, step)
      except Exception:  # pylint: disable=broad-except  (unreadable: older)
        continue
    return None
  finally:
    mgr.close()


def write_config(workdir: str, config: Config) -> None:
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)


def check_resumable(workdir: str, config: Config) -> None:
  """Refuses to resume the run in `workdir` with a config that changes its
  results (anything outside the loop and eval sections), compared with
  config.json and with the config saved inside the newest checkpoint (the
  parameters' own), so an edited config.json cannot continue another run."""
  for where, saved in ((CONFIG_FILE, load_config(workdir)),
                       ("the newest checkpoint",
                        _config_of_newest_checkpoint(workdir))):
    diffs = [] if saved is None else config.resume_differences(saved)
    if diffs:
      raise ConfigError(
          f"workdir {workdir!r} holds a run with a different config (from "
          f"{where}: " + "; ".join(diffs) + "). Resume with the same flags, "
          "or use a new --workdir.")


def _read_metrics(path: str) -> List[Dict[str, float]]:
  """The metric lines of `path`; a truncated last line (a crash while it was
  written) is dropped with a warning, a bad line elsewhere is an error."""
  with open(path) as f:
    lines = [l for l in f.read().split("\n") if l.strip()]
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        logging.warning("dropping the truncated last line of %s: %r", path,
                        line[:80])
        break
      raise DataError(f"{path}, line {i + 1}, is not valid JSON ({e}); each "
                      "line must be one JSON object of metrics.") from None
  return rows


def load_metrics(workdir: str) -> List[Dict[str, float]]:
  """The logged training metrics of a run, one dict per logged step.

  Raises:
    DataError: `workdir` has no metrics file (not a training workdir, or no
      step was logged yet), or a line other than the last is garbled.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise DataError(f"no training metrics in {workdir!r} (expected "
                    f"{METRICS_FILE}; is it the workdir of a training run?).")
  return _read_metrics(path)


def truncate_metrics(workdir: str, last_step: int) -> None:
  """Drops metric lines past `last_step` (written before an interruption)
  and a truncated last line."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return
  rows = _read_metrics(path)
  kept = [r for r in rows if r["step"] <= last_step]
  dropped = [int(r["step"]) for r in rows if r["step"] > last_step]
  if dropped:
    logging.warning(
        "%s: dropping %d line(s) of step(s) %s, logged after the checkpoint "
        "of step %d; the resumed run logs those steps again.", path,
        len(dropped), ", ".join(map(str, dropped)), last_step)
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
