"""TensorBoard summaries of a run, beside metrics.jsonl (the record a resume
reads: the summaries are for looking).

    SummaryWriter(WORKDIR/tb).scalars(step, {"loss": ...}, prefix="train/")

Written with the `tensorboard` package's own event-file writer (the one
PyTorch's `SummaryWriter` writes with), so no TensorFlow is needed; the same
package reads them back (`read_scalars`, TensorBoard's `EventAccumulator`).
flax's `flax.metrics.tensorboard` and clu's `SummaryWriter` write through
`tf.summary` and need TensorFlow; tensorboardX writes without it but has no
reader.

A writer that fails (a full or read-only disk) logs one warning and writes
nothing more: summaries never stop a run. A run resumed from the checkpoint
of step s writes a `SessionLog.START` at step s + 1, so TensorBoard drops
the points an interrupted earlier session wrote past that checkpoint.
"""

from __future__ import annotations

import os
import time
from typing import Dict, Mapping, Optional

from absl import logging
import numpy as np

TB_DIR = "tb"


class SummaryWriter:
  """Scalars to an event file in `logdir` (created)."""

  def __init__(self, logdir: str, *, resumed_at: Optional[int] = None):
    self.logdir = logdir
    self._writer = None
    self._protos = None
    # Opened at the first use: its imports (0.2-0.3 s) come after a
    # launch's first step, not before it.
    self._resumed_at, self._unopened = resumed_at, True

  def _open(self) -> bool:
    """Opens the event file at the first call; whether it is writable."""
    if self._unopened:
      self._unopened = False
      try:
        # pylint: disable=g-import-not-at-top
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        # pylint: enable=g-import-not-at-top
        os.makedirs(self.logdir, exist_ok=True)
        self._protos = (event_pb2, summary_pb2)
        self._writer = EventFileWriter(self.logdir)
        if self._resumed_at is not None:
          self._add(event_pb2.Event(
              wall_time=time.time(), step=int(self._resumed_at) + 1,
              session_log=event_pb2.SessionLog(
                  status=event_pb2.SessionLog.START)))
      except Exception as e:  # pylint: disable=broad-except
        self._fail(e)
    return self._writer is not None

  def _fail(self, error: Exception) -> None:
    logging.warning("TensorBoard summaries in %s stopped (%s: %s); "
                    "metrics.jsonl goes on.", self.logdir,
                    type(error).__name__, error)
    self._writer = None

  def _add(self, event) -> None:
    if self._writer is None:
      return
    try:
      self._writer.add_event(event)
    except Exception as e:  # pylint: disable=broad-except
      self._fail(e)

  def scalars(self, step: int, values: Mapping[str, float], *,
              prefix: str = "") -> None:
    """One point per finite number of `values`, tagged `prefix + name`."""
    if not self._open():
      return
    event_pb2, summary_pb2 = self._protos
    points = [summary_pb2.Summary.Value(tag=prefix + name,
                                        simple_value=float(value))
              for name, value in values.items()
              if isinstance(value, (int, float, np.number))
              and np.isfinite(float(value))]
    if points:
      self._add(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=points)))

  def flush(self) -> None:
    if self._open():
      try:
        self._writer.flush()
      except Exception as e:  # pylint: disable=broad-except
        self._fail(e)

  def close(self) -> None:
    if self._open():
      try:
        self._writer.close()
      except Exception as e:  # pylint: disable=broad-except
        self._fail(e)
      self._writer = None


def read_scalars(logdir: str) -> Dict[str, Dict[int, float]]:
  """`{tag: {step: value}}` of the event files in `logdir`, as TensorBoard
  shows them (its `EventAccumulator`, orphaned points of a resumed run
  dropped)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = event_accumulator.EventAccumulator(
      logdir, size_guidance={event_accumulator.SCALARS: 0})
  accumulator.Reload()
  return {tag: {e.step: e.value for e in accumulator.Scalars(tag)}
          for tag in accumulator.Tags()["scalars"]}
