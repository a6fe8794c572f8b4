"""Meta-training: the train state, the jitted train step, and the loop.

    dataset → episodes (on device) → learner's outer loss, vmapped over tasks
            → one jitted, donated train step → metrics (JSON lines) + checkpoints

`make_train_step` returns the pure function `(state, tasks, key) -> (state,
metrics)`; it is left un-jitted so callers can compose it (`train` jits it once
with the state donated). `train` runs the loop: it resumes from the latest
checkpoint in the workdir, derives every step's randomness from
`fold_in(seed, step)` (so a resumed run is bitwise the same run), saves a
checkpoint every `checkpoint_every` steps, on interruption and at the end, and
stops with a clear message at the first non-finite loss, keeping the last good
checkpoint. The device mesh is in sharding.py, the run directory (checkpoints,
config.json, metrics.jsonl) in checkpoints.py, what a config builds in
builders.py.

Data parallelism: `train` runs on a 1-D mesh of all devices (of every host,
`jax.distributed`) whose axis "tasks" shards the task batch; parameters and
optimizer state are replicated, and `jax.jit` with `NamedSharding`s partitions
the step (XLA inserts the all-reduce of the meta-gradient). Episodes are
sampled inside the same jitted iteration: task i of a step is always drawn
from the i-th key of `split(sample_key, B)`, whatever the number of devices or
hosts, and each device samples only the tasks it holds (so hosts sample
disjoint tasks and a run gives the same parameters on 1, 2 or 4 devices, up to
float reduction order).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from advmeta_jax import autotune
from advmeta_jax import checkpoints
from advmeta_jax import datasets
from advmeta_jax import episodes
from advmeta_jax import learners
from advmeta_jax import models
from advmeta_jax import objectives
from advmeta_jax import sharding as sharding_lib
from advmeta_jax.builders import build
from advmeta_jax.builders import Experiment
from advmeta_jax.builders import load_split
from advmeta_jax.builders import make_train_attack
from advmeta_jax.checkpoints import CHECKPOINT_DIR
from advmeta_jax.checkpoints import CONFIG_FILE
from advmeta_jax.checkpoints import load_config
from advmeta_jax.checkpoints import load_metrics
from advmeta_jax.checkpoints import METRICS_FILE
from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError, DataError, Interrupted
from advmeta_jax.errors import NonFiniteLossError
from advmeta_jax.sharding import check_task_batch
from advmeta_jax.sharding import make_mesh

Array = jax.Array
# The run's config; `Config` under the name earlier versions used.
TrainConfig = Config

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "Config", "Experiment",
           "METRICS_FILE", "TrainConfig", "TrainState", "batch_outer_loss",
           "batch_value_and_grad", "combine_ignores_aux_gradient",
           "build", "check_task_batch", "init_state", "load_config",
           "load_metrics", "load_split", "make_mesh", "make_optimizer",
           "make_train_attack", "make_train_step", "map_over_tasks",
           "restore_run", "train"]


class TrainState(NamedTuple):
  """The whole state of meta-training (a pytree, checkpointed as is)."""
  step: Array
  params: Any
  opt_state: Any


def make_optimizer(meta_lr: float) -> optax.GradientTransformation:
  """The meta-optimizer: Adam with step size β (MAML and ADML use 1e-3)."""
  return optax.adam(meta_lr)


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def _rounds(parallel_tasks: int, b: int):
  """`(split, merge)` of the task axis into B/parallel_tasks sequential rounds
  of `parallel_tasks` tasks: round r holds tasks `r, r + B/p, r + 2·B/p, ...`,
  so a task axis sharded over devices stays sharded (`parallel_tasks` a
  multiple of the device count)."""
  if b % parallel_tasks:
    raise ConfigError(f"parallel_tasks={parallel_tasks} does not divide the "
                      f"task batch of {b}.")
  rounds = b // parallel_tasks
  split = lambda x: jnp.swapaxes(
      x.reshape(parallel_tasks, rounds, *x.shape[1:]), 0, 1)
  merge = lambda x: jnp.swapaxes(x, 0, 1).reshape(b, *x.shape[2:])
  return split, merge


def _in_rounds(parallel_tasks: int, b: int) -> bool:
  return 0 < parallel_tasks < b


def map_over_tasks(fn, tasks: episodes.Task, keys: Array, *,
                   parallel_tasks: int = 0):
  """`jax.vmap(fn)(tasks, keys)`, optionally `parallel_tasks` tasks at a time.

  With `0 < parallel_tasks < B`, the tasks run in B/parallel_tasks sequential
  rounds (`lax.map`) of `parallel_tasks` vmapped tasks, each round under
  `jax.checkpoint`: a gradient of the result keeps only one round's
  intermediates alive and recomputes each round's forward pass in the
  backward pass (the training attacks' results are kept, not recomputed).
  The same function as the plain vmap, in the same task order. (The train
  step avoids the recomputation where it can: `batch_value_and_grad`.)
  """
  b = keys.shape[0]
  if not _in_rounds(parallel_tasks, b):
    return jax.vmap(fn)(tasks, keys)
  split, merge = _rounds(parallel_tasks, b)
  policy = jax.checkpoint_policies.save_only_these_names(
      objectives.ADVERSARIAL_IMAGES)
  one_round = jax.checkpoint(lambda args: jax.vmap(fn)(*args), policy=policy)
  out = jax.lax.map(one_round, jax.tree.map(split, (tasks, keys)))
  return jax.tree.map(merge, out)


def _combine_fn(learner: learners.Bound,
                batch_combine: Optional[objectives.BatchCombine]):
  def combine(losses, aux):
    if batch_combine is None:
      return learner.batch_combine(losses, aux)
    return batch_combine(losses, aux, learner.config)
  return combine


def _batch_metrics(aux: Dict[str, Array], extra: Dict[str, Array]):
  """The batch means of the per-task aux plus what the combine returned."""
  metrics = jax.tree.map(jnp.mean, aux)
  metrics.update(extra)
  return metrics


def batch_outer_loss(learner: learners.Bound,
                     batch_combine: Optional[objectives.BatchCombine] = None,
                     parallel_tasks: int = 0):
  """`(params, tasks, key) -> (loss, metrics)` over a batch of tasks.

  The per-task outer losses of the bound learner are vmapped over the tasks
  (`parallel_tasks` at a time, see `map_over_tasks`) and combined by
  `batch_combine` (default: its objective's, the mean for most learners).
  `metrics` are the batch means of the per-task aux plus what the combine
  returns.
  """
  combine = _combine_fn(learner, batch_combine)

  def fn(params, tasks: episodes.Task, key: Array):
    keys = jax.random.split(key, tasks.query_labels.shape[0])
    losses, aux = map_over_tasks(
        lambda t, k: learner.loss(params, t, k), tasks, keys,
        parallel_tasks=parallel_tasks)
    loss, extra = combine(losses, aux)
    return loss, _batch_metrics(aux, extra)
  return fn


def combine_ignores_aux_gradient(combine, losses: Array,
                                 aux: Dict[str, Array]) -> bool:
  """Whether `combine(losses, aux)`'s loss has no derivative through `aux`
  (it ignores aux, or reads it under `stop_gradient`, as the mean and TAFL's
  weights do), decided at trace time from the jaxpr of its linearization in
  `aux`: no operation, no input passed through. Conservative: anything else
  (ADML's sequential phases differentiate their aux terms) is False."""
  aux = jax.tree.map(jax.lax.stop_gradient, aux)
  _, tangent = jax.linearize(lambda a: combine(losses, a)[0], aux)
  jaxpr = jax.make_jaxpr(tangent)(aux).jaxpr
  inputs = {id(v) for v in jaxpr.invars}
  return not jaxpr.eqns and not any(id(v) in inputs for v in jaxpr.outvars)


def batch_value_and_grad(learner: learners.Bound,
                         batch_combine: Optional[objectives.BatchCombine] = None,
                         parallel_tasks: int = 0):
  """`(params, tasks, key) -> ((loss, metrics), meta_gradient)`: the value
  and gradient of `batch_outer_loss`, as the train step takes them.

  With the task batch in rounds (`0 < parallel_tasks < B`) and a combine
  whose loss depends on the tasks' aux only through `stop_gradient`
  (`combine_ignores_aux_gradient`: the mean, TAFL's weighted mean), each
  round computes its tasks' own loss gradients ∂L_τ/∂θ inside the
  `lax.map`, as a PyTorch loop over tasks calls `backward()` per task, and
  the meta-gradient is Σ_τ (∂loss/∂L_τ)·∂L_τ/∂θ with ∂loss/∂L_τ from the
  combine's VJP at the batch's losses. The same numbers as differentiating
  the rematerialized rounds of `map_over_tasks` (tested), without their
  second forward pass: one round's intermediates alive, each task's
  forward computed once. Otherwise `jax.value_and_grad(batch_outer_loss)`.
  """
  combine = _combine_fn(learner, batch_combine)
  plain = jax.value_and_grad(
      batch_outer_loss(learner, batch_combine, parallel_tasks), has_aux=True)

  def fn(params, tasks: episodes.Task, key: Array):
    b = tasks.query_labels.shape[0]
    if not _in_rounds(parallel_tasks, b):
      return plain(params, tasks, key)
    keys = jax.random.split(key, b)
    task_value_and_grad = jax.value_and_grad(learner.loss, has_aux=True)
    per_task = lambda t, k: task_value_and_grad(params, t, k)
    losses_aval, aux_aval = jax.eval_shape(
        jax.vmap(lambda t, k: learner.loss(params, t, k)), tasks, keys)
    if not combine_ignores_aux_gradient(
        combine, jnp.zeros(losses_aval.shape, losses_aval.dtype),
        jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), aux_aval)):
      return plain(params, tasks, key)
    split, merge = _rounds(parallel_tasks, b)
    (losses, aux), task_grads = jax.tree.map(merge, jax.lax.map(
        lambda args: jax.vmap(per_task)(*args),
        jax.tree.map(split, (tasks, keys))))
    aux = jax.lax.stop_gradient(aux)
    loss, combine_vjp, extra = jax.vjp(lambda l: combine(l, aux), losses,
                                       has_aux=True)
    (weights,) = combine_vjp(jnp.ones_like(loss))
    grads = jax.tree.map(
        lambda g: jnp.tensordot(weights.astype(g.dtype), g, axes=1),
        task_grads)
    return (loss, _batch_metrics(aux, extra)), grads
  return fn


def make_train_step(learner: learners.Bound,
                    optimizer: optax.GradientTransformation, *,
                    parallel_tasks: int = 0):
  """The meta-train step `(state, tasks, key) -> (state, metrics)`.

  Pure and un-jitted. The meta-gradient is the gradient of the batch outer
  loss (`batch_outer_loss`; second-order through the inner loop unless
  `first_order`); one optimizer update per step, or one per phase in turn
  for an objective with sequential update phases (ADML's `adml_sequential`).
  Then "loss" is the sum of the phases' losses, each at the parameters it
  updated, "grad_norm" the norm of all their gradients, and the other
  metrics are those of the last phase. `parallel_tasks` bounds the tasks
  adapted at once (memory; `batch_value_and_grad`).
  """
  phases = learner.update_phases()
  value_and_grads = [batch_value_and_grad(learner, combine, parallel_tasks)
                     for combine in (phases or (None,))]

  def train_step(state: TrainState, tasks: episodes.Task, key: Array):
    params, opt_state = state.params, state.opt_state
    loss, sq_norm = 0.0, 0.0
    for value_and_grad in value_and_grads:
      (phase_loss, aux), grads = value_and_grad(params, tasks, key)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      loss = loss + phase_loss
      sq_norm = sq_norm + optax.tree.norm(grads, squared=True)
    metrics = {"loss": loss, "grad_norm": jnp.sqrt(sq_norm), **aux}
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


@functools.lru_cache(maxsize=None)
def _jitted_train_iteration(learner: learners.Bound, config: Config, mesh):
  """The jitted, sharded train iteration of `train`; cached, so runs with the
  same config in one process (reproductions, tests) compile it once."""
  return jit_train_iteration(make_train_iteration(
      make_train_step(learner, make_optimizer(config.meta.meta_lr),
                      parallel_tasks=config.loop.parallel_tasks),
      config, sharding_lib.task_sharding(mesh)), mesh)


def run_keys(seed: int) -> Tuple[Array, Array]:
  """`(init_key, loop_key)` of a run: initialization, and the key whose
  `fold_in(loop_key, step)` gives every step's randomness."""
  init_key, loop_key = jax.random.split(jax.random.key(seed))
  return init_key, loop_key


def make_train_iteration(train_step, config: Config,
                         sharding: Optional[jax.sharding.Sharding] = None):
  """One whole iteration `(state, source) -> (state, metrics)`.

  Samples the step's tasks on the devices from `fold_in(loop_key, state.step)`
  (`run_keys(config.meta.seed)`) and runs `train_step` on them, so a jitted
  iteration is one dispatch per step with no host work. Pure and un-jitted.
  """
  def iteration(state: TrainState, source: episodes.EpisodeSource):
    _, loop_key = run_keys(config.meta.seed)
    sample_key, step_key = jax.random.split(
        jax.random.fold_in(loop_key, state.step))
    tasks = sharding_lib.sample_task_batch(
        sample_key, source, batch_size=config.meta.task_batch_size,
        n_way=config.data.n_way, k_shot=config.data.k_shot,
        q_query=config.data.q_query, sharding=sharding)
    return train_step(state, tasks, step_key)
  return iteration


def jit_train_iteration(iteration, mesh: jax.sharding.Mesh):
  """`jax.jit` of an iteration on `mesh`: replicated state (donated) and
  source in; replicated state and metrics out. Compiles once."""
  rep = sharding_lib.replicated(mesh)
  return jax.jit(iteration, in_shardings=(rep, rep), out_shardings=(rep, rep),
                 donate_argnums=0)


def _to_python(metrics: Dict[str, Array]) -> Dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


# --- the loop ---------------------------------------------------------------

def train(config: Config, workdir: str, *,
          train_split: Optional[datasets.ClassSplit] = None,
          progress: bool = True,
          step_callback: Optional[Callable[[int, Dict[str, float]], None]] = None
          ) -> TrainState:
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
  config.validate()
  exp = build(config)
  if train_split is None:
    train_split = load_split(config, "train")
  else:
    d = config.data
    episodes.check_episode_shape(train_split, n_way=d.n_way, k_shot=d.k_shot,
                                 q_query=d.q_query)
  if tuple(train_split.image_shape) != exp.image_shape:
    raise ConfigError(f"the data's images are {train_split.image_shape}, the "
                      f"model expects {exp.image_shape}.")
  loop = config.loop
  mesh = make_mesh(loop.num_devices)
  # `auto` speed settings, resolved for the backend (autotune.py): the step
  # runs the resolved config; config.json keeps what was asked.
  resolved = exp.config
  check_task_batch(config.meta.task_batch_size, mesh,
                   resolved.loop.parallel_tasks)
  primary = jax.process_index() == 0
  # Only a config whose data checks passed is written: a refused run leaves
  # nothing behind that would block the corrected command.
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
  logging.info("config: %s", json.dumps(config.to_dict(), sort_keys=True))
  logging.info("speed settings: %s", autotune.describe(config, resolved))

  optimizer = make_optimizer(config.meta.meta_lr)
  init_key, _ = run_keys(config.meta.seed)
  state = sharding_lib.replicate(init_state(models.init_params(exp.model, init_key,
                                                  exp.image_shape), optimizer),
                    mesh)
  restored = checkpoints.restore(manager, state, fall_back=True)
  if restored is not None:
    state = restored
    logging.info("resumed from the checkpoint at step %d", int(state.step))
  start = int(state.step)
  metrics_path = os.path.join(workdir, METRICS_FILE)
  if primary:
    checkpoints.truncate_metrics(workdir, start)
  logging.info("conv4: %d parameters; meta-training steps %d..%d on %d "
               "device(s)", models.num_params(state.params), start,
               loop.num_steps, mesh.devices.size)

  source = sharding_lib.replicate(
      episodes.make_source(train_split, jax.local_devices()[0]), mesh)
  step_fn = _jitted_train_iteration(exp.learner, resolved, mesh)

  bar = None
  if progress and primary and start < loop.num_steps:
    bar = tqdm.tqdm(total=loop.num_steps, initial=start, unit="step",
                    dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 30.0)
  last_good = start if restored is not None else None
  t_last, n_since = time.perf_counter(), 0
  # Steps dispatched whose loss has not been read yet: (step, metrics). A step
  # is checked (one scalar read) after the next one is dispatched, so the host
  # never idles the device, except at logged and checkpointed steps, which are
  # checked at once (the callback and the saved state see a checked step).
  unchecked = []

  def check(done, metrics):
    """Reads a step's metrics; stops at a non-finite loss (nothing saved)."""
    metrics = _to_python(metrics)
    if not np.isfinite(metrics["loss"]):
      kept = (f"The last good checkpoint (step {last_good}) is kept in "
              f"{os.path.join(workdir, CHECKPOINT_DIR)}."
              if last_good is not None else "No checkpoint was saved yet.")
      raise NonFiniteLossError(
          f"the meta-training loss became {metrics['loss']} at step "
          f"{done}. {kept} Try a smaller --meta_lr (now "
          f"{config.meta.meta_lr}) or --inner_lr (now "
          f"{config.meta.inner_lr}).")
    return metrics

  stop = _StopSignal()
  try:
    with stop, (open(metrics_path, "a") if primary
                else _NullFile()) as metrics_file:
      for step in range(start, loop.num_steps):
        done = step + 1
        state, metrics = step_fn(state, source)   # state is donated
        unchecked.append((done, metrics))
        while len(unchecked) > 1:
          check(*unchecked.pop(0))
        n_since += 1
        if bar is not None:
          bar.update(1)
        log_now = done % loop.log_every == 0 or done == loop.num_steps
        save_now = manager.should_save(done) or done == loop.num_steps
        # A SIGTERM (one host) or JAX's preemption sync point (all hosts
        # agree on the step): save this step, then stop.
        stopping = (manager.reached_preemption(done) if jax.process_count() > 1
                    else stop.signal is not None)
        if not (log_now or save_now or stopping):
          continue
        metrics = check(*unchecked.pop(0))
        if log_now:
          now = time.perf_counter()
          metrics["steps_per_sec"] = n_since / (now - t_last)
          metrics["step"] = done
          t_last, n_since = now, 0
          metrics_file.write(json.dumps(metrics) + "\n")
          metrics_file.flush()
          if bar is not None:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}",
                            acc=f"{metrics['query_accuracy']:.3f}",
                            refresh=False)
          elif primary:
            logging.info("step %d: %s", done, metrics)
          if step_callback is not None:
            step_callback(done, metrics)
        if save_now or stopping:
          checkpoints.save(manager, state, config)
          last_good = done
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
    if not any(x.is_deleted() for x in jax.tree.leaves(state)) and all(
        np.isfinite(float(m["loss"])) for _, m in unchecked):
      logging.warning("interrupted: saving a checkpoint at step %d",
                      int(state.step))
      checkpoints.save(manager, state, config)
    raise
  finally:
    if bar is not None:
      bar.close()
    manager.close()
  return sharding_lib.to_local(state, mesh)


class _StopSignal:
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


class _NullFile:
  """Stands for the metrics file on processes other than the first."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def write(self, text):
    del text

  def flush(self):
    pass


def restore_run(workdir: str, config: Config,
                step: Optional[int] = None) -> TrainState:
  """The train state of a finished or interrupted run in `workdir`."""
  exp = build(config.validate())
  optimizer = make_optimizer(config.meta.meta_lr)
  target = init_state(models.init_params(exp.model, jax.random.key(0),
                                         exp.image_shape), optimizer)
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

