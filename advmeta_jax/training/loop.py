"""Meta-training: the loop around the jitted train iteration.

    config ──build──▶ model + bound learner ──▶ jitted iteration (step.py)
    workdir ──open_run──▶ checkpoints, config.json (rundir.py)
    loop: dispatch steps; check losses one step behind; log, save, stop

`train` resumes from the latest checkpoint in the workdir, saves a checkpoint
every `checkpoint_every` steps, on SIGTERM / preemption / Ctrl-C and at the end,
and stops with a clear message at the first non-finite loss, keeping the last
good checkpoint. Every step's randomness is `fold_in(seed, step)`, so a resumed
run is bitwise the same run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
import numpy as np
import tqdm

from advmeta_jax import datasets
from advmeta_jax.config import Config
from advmeta_jax.core import episodes
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError, DataError, Interrupted
from advmeta_jax.errors import NonFiniteLossError
from advmeta_jax.config import autotune
from advmeta_jax.training import checkpoints
from advmeta_jax.training import executables
from advmeta_jax.training import rundir
from advmeta_jax.training import sharding as sharding_lib
from advmeta_jax.training.builders import build
from advmeta_jax.training.builders import Built
from advmeta_jax.training.builders import load_split
from advmeta_jax.training.checkpoints import CHECKPOINT_DIR
from advmeta_jax.training.checkpoints import METRICS_FILE
from advmeta_jax.training.step import init_state
from advmeta_jax.training.step import iteration_config
from advmeta_jax.training.step import jitted_train_iteration
from advmeta_jax.training.step import config_optimizer
from advmeta_jax.training.step import run_keys
from advmeta_jax.training.step import TrainState
from advmeta_jax.training.summaries import SummaryWriter
from advmeta_jax.training.summaries import TB_DIR

StepCallback = Callable[[int, Dict[str, float]], None]


def train(config: Config, workdir: str, *,
          train_split: Optional[datasets.ClassSplit] = None,
          progress: bool = True,
          step_callback: Optional[StepCallback] = None) -> TrainState:
  """Meta-trains `config` in `workdir`, resuming from its latest checkpoint.

  Args:
    config: the run's config (validated here).
    workdir: directory for config.json, metrics.jsonl and checkpoints/.
    train_split: the meta-train `ClassSplit` (loaded from the config if None).
    progress: show a progress bar.
    step_callback: called as `fn(step, metrics)` after each logged step (used by
      tests to interrupt a run).

  Returns:
    The final `TrainState`.

  Raises:
    ConfigError, DataError: bad config or data, before any compilation.
    NonFiniteLossError: the loss became NaN/inf; the last good checkpoint stays.
  """
  began = time.perf_counter()
  config.validate()
  built = build(config)
  train_split = _checked_split(config, built, train_split)
  mesh = sharding_lib.make_mesh(config.loop.num_devices)
  sharding_lib.check_task_batch(config.meta.task_batch_size, mesh,
                                built.config.loop.parallel_tasks)
  primary = jax.process_index() == 0
  lock = rundir.lock_workdir(workdir) if primary else None
  try:
    manager = rundir.open_run(workdir, config, primary=primary)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  try:
    logging.info("config: %s (all settings in %s/config.json)",
                 config.describe(), workdir)
    logging.info("speed settings: %s", autotune.describe(config, built.config))
    logging.info("devices: %s", ", ".join(str(d) for d in mesh.devices.flat))
    state, resumed = _initial_state(built, manager, mesh)
    if primary:
      checkpoints.truncate_metrics(workdir, int(state.step))
    logging.info("%s: %d parameters; meta-training steps %d..%d on %d "
                 "device(s)", config.model.backbone,
                 models.num_params(state.params), int(state.step),
                 config.loop.num_steps, mesh.devices.size)
    source = sharding_lib.replicate(
        episodes.make_source(train_split, jax.local_devices()[0]), mesh)
    # The step runs the resolved config (`auto` speed settings for the
    # backend); config.json keeps what was asked. A relaunch loads its
    # executable when a launcher turned that on (executables.py).
    step_fn = executables.Cached(
        jitted_train_iteration(built.learner, built.config, mesh,
                               built.batch_stats_fn),
        (iteration_config(built.config), mesh), list(mesh.devices.flat))
    state = _run_steps(config, workdir, manager, state, source, step_fn,
                       resumed=resumed, progress=progress and primary,
                       primary=primary, step_callback=step_callback,
                       began=began)
  finally:
    _close(manager, lock)
  return sharding_lib.to_local(state, mesh)


def _close(manager, lock) -> None:
  """Closes the checkpoint manager and frees the workdir. A save that failed
  (a full disk) may raise again from orbax's close: while another error is
  on its way out that is dropped (the first error says what happened);
  otherwise it becomes one line."""
  failing = sys.exc_info()[0] is not None   # called from train's `finally`
  try:
    checkpoints.close(manager)
  except Exception as e:  # pylint: disable=broad-except
    if failing:
      logging.warning("closing the checkpoints after an error: %s",
                      str(e).splitlines()[0] if str(e) else type(e).__name__)
    elif checkpoints.is_disk_full(e):
      raise DataError(f"no space left on the device while finishing the "
                      f"checkpoints in {manager.directory}: free some space "
                      "and run the same command to resume.") from None
    else:
      raise
  finally:
    if lock is not None:
      lock.release()


def _checked_split(config: Config, built: Built,
                   train_split: Optional[datasets.ClassSplit]
                   ) -> datasets.ClassSplit:
  """The meta-train split (loaded if None), checked against the episodes and
  the model's input shape."""
  if train_split is None:
    train_split = load_split(config, "train")
  else:
    d = config.data
    episodes.check_episode_shape(train_split, n_way=d.n_way, k_shot=d.k_shot,
                                 q_query=d.q_query)
  if tuple(train_split.image_shape) != built.image_shape:
    raise ConfigError(f"the data's images are {train_split.image_shape}, the "
                      f"model expects {built.image_shape}.")
  return train_split


def _initial_state(built: Built, manager, mesh) -> Tuple[TrainState, bool]:
  """The newest checkpoint's state (and True), or a fresh one from the seed."""
  config = built.config
  init_key, _ = run_keys(config.meta.seed)
  params = models.init_params(built.model, init_key, built.image_shape)
  state = sharding_lib.replicate(
      init_state(params, config_optimizer(config),
                 built.initial_batch_stats(params)), mesh)
  restored = checkpoints.restore(manager, state, fall_back=True)
  if restored is None:
    return state, False
  logging.info("resumed from the checkpoint at step %d", int(restored.step))
  return restored, True


def seconds_since_process_start() -> Optional[float]:
  """How long ago this process started (from /proc), or None where that
  cannot be read."""
  try:
    with open("/proc/self/stat") as f:
      ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError, AttributeError):
    return None


def _log_first_step(began: float) -> None:
  """Logs when the first step of this launch started (its program compiled
  or loaded, and dispatched): the startup a relaunch's caches shorten."""
  launch = seconds_since_process_start()
  with tqdm.tqdm.external_write_mode():   # a line of its own, not the bar's
    logging.info("first step started %s%.1f s after training began",
                 "" if launch is None else
                 f"{launch:.1f} s after the process started, ",
                 time.perf_counter() - began)


def _to_python(metrics) -> Dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


class _LossCheck:
  """Reads steps' metrics one step behind the dispatch, so the host never
  idles the device, and stops at a non-finite loss.

  The loss of step n is computed with the parameters of step n - 1: when it
  is not finite, a checkpoint of step n - 1 holds diverged parameters and is
  set aside (renamed `<step>.diverged`); the last good checkpoint is the one
  before it.
  """

  def __init__(self, config: Config, workdir: str, manager,
               last_good: Optional[int]):
    self.config, self.workdir, self.manager = config, workdir, manager
    self.last_good = last_good
    self.unchecked: List[Tuple[int, dict]] = []   # (step, metrics) not read

  def check(self, done: int, metrics) -> Dict[str, float]:
    metrics = _to_python(metrics)
    if np.isfinite(metrics["loss"]):
      return metrics
    aside = checkpoints.set_aside_diverged(self.manager, done - 1)
    if aside is not None:
      self.last_good = self.manager.latest_step()
    kept = (f"The last good checkpoint (step {self.last_good}) is kept in "
            f"{os.path.join(self.workdir, CHECKPOINT_DIR)}"
            if self.last_good is not None else "No good checkpoint is saved")
    aside = (f" (the checkpoint of step {done - 1}, whose parameters gave "
             f"that loss, is set aside as {os.path.basename(aside)})"
             if aside else "")
    meta = self.config.meta
    raise NonFiniteLossError(
        f"the meta-training loss became {metrics['loss']} at step {done}. "
        f"{kept}{aside}. A resumed run takes the same flags, so to try a "
        f"smaller --meta_lr (now {meta.meta_lr}) or --inner_lr (now "
        f"{meta.inner_lr}) start a new --workdir.")

  def dispatched(self, done: int, metrics) -> None:
    """Records a dispatched step; checks the ones before it."""
    self.unchecked.append((done, metrics))
    while len(self.unchecked) > 1:
      self.check(*self.unchecked.pop(0))

  def newest(self) -> Dict[str, float]:
    """Checks the newest dispatched step now (logged and saved steps)."""
    return self.check(*self.unchecked.pop(0))

  def all_finite(self) -> bool:
    return all(np.isfinite(float(m["loss"])) for _, m in self.unchecked)


class _MetricsLog:
  """metrics.jsonl and the TensorBoard summaries (first process only), the
  progress bar and the step rate."""

  def __init__(self, path: Optional[str], bar: Optional[tqdm.tqdm],
               summaries: Optional[SummaryWriter] = None):
    self.file = open(path, "a") if path else None   # pylint: disable=consider-using-with
    self.bar = bar
    self.summaries = summaries
    self.t_last, self.n_since = time.perf_counter(), 0

  def step(self) -> None:
    self.n_since += 1
    if self.bar is not None:
      self.bar.update(1)

  def write(self, done: int, metrics: Dict[str, float]) -> None:
    now = time.perf_counter()
    metrics["steps_per_sec"] = self.n_since / (now - self.t_last)
    metrics["step"] = done
    self.t_last, self.n_since = now, 0
    if self.file is None:
      return
    self.file.write(json.dumps(metrics) + "\n")
    self.file.flush()
    if self.summaries is not None:
      self.summaries.scalars(done, {
          **{k: v for k, v in metrics.items() if k != "step"},
          "step_time_s": 1.0 / max(metrics["steps_per_sec"], 1e-12)},
                             prefix="train/")
      self.summaries.flush()
    if self.bar is not None:
      self.bar.set_postfix(loss=f"{metrics['loss']:.3f}",
                           acc=f"{metrics['query_accuracy']:.3f}",
                           refresh=False)
    else:
      logging.info("step %d: %s", done, metrics)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.file is not None:
      self.file.close()
    if self.summaries is not None:
      self.summaries.close()


def _progress_bar(num_steps: int, start: int) -> Optional[tqdm.tqdm]:
  """The steps' progress bar (refreshed every 30 s when stderr is not a
  terminal), or None when no step is left."""
  if start >= num_steps:
    return None
  return tqdm.tqdm(total=num_steps, initial=start, unit="step",
                   dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)


def _run_steps(config: Config, workdir: str, manager, state: TrainState,
               source, step_fn, *, resumed: bool, progress: bool,
               primary: bool, step_callback: Optional[StepCallback],
               began: Optional[float] = None) -> TrainState:
  """Steps `state` to `config.loop.num_steps`: logs every `log_every`, saves
  every `checkpoint_every`, at the end and when asked to stop."""
  loop, start = config.loop, int(state.step)
  bar = _progress_bar(loop.num_steps, start) if progress else None
  summaries = (SummaryWriter(os.path.join(workdir, TB_DIR),
                             resumed_at=start if resumed else None)
               if primary and loop.tensorboard else None)
  log = _MetricsLog(os.path.join(workdir, METRICS_FILE) if primary else None,
                    bar, summaries)
  losses = _LossCheck(config, workdir, manager, start if resumed else None)
  stop = rundir.StopSignal()
  try:
    with stop:
      for done in range(start + 1, loop.num_steps + 1):
        state, metrics = step_fn(state, source)   # state is donated
        if done == start + 1 and began is not None:
          _log_first_step(began)
        losses.dispatched(done, metrics)
        log.step()
        log_now = done % loop.log_every == 0 or done == loop.num_steps
        save_now = manager.should_save(done) or done == loop.num_steps
        # A SIGTERM (one host) or JAX's preemption sync point (all hosts
        # agree on the step): save this step, then stop.
        stopping = (manager.reached_preemption(done) if jax.process_count() > 1
                    else stop.signal is not None)
        if not (log_now or save_now or stopping):
          continue
        metrics = losses.newest()
        if log_now:
          log.write(done, metrics)
          if step_callback is not None:
            step_callback(done, metrics)
        if save_now or stopping:
          checkpoints.save(manager, state, config)
          losses.last_good = done
        if stopping:
          raise Interrupted(
              f"stopped by {stop.signal or 'a preemption notice'} at step "
              f"{done} of {loop.num_steps}; the checkpoint of step {done} is "
              f"saved in {os.path.join(workdir, CHECKPOINT_DIR)}. Run the "
              "same command to resume.")
  except KeyboardInterrupt:
    # `state` is the last dispatched step unless the interruption hit while its
    # buffers were donated to a step being dispatched; it is saved only if its
    # loss and those of the steps before it are finite. Otherwise the last
    # checkpoint stands.
    if (not any(x.is_deleted() for x in jax.tree.leaves(state))
        and losses.all_finite()):
      logging.warning("interrupted: saving a checkpoint at step %d",
                      int(state.step))
      checkpoints.save(manager, state, config)
    raise
  finally:
    log.close()
  return state
