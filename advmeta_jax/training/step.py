"""The train state and the pure, jitted train step of meta-training.

    tasks (on device) → learner's outer loss, vmapped over tasks (or in rounds)
            → meta-gradient → Adam update: `(state, tasks, key) -> (state, metrics)`

`make_train_step` returns the pure step, left un-jitted so callers compose it;
`make_train_iteration` samples the step's tasks on the devices from
`fold_in(loop_key, step)` (so a resumed run is bitwise the same run) and runs
the step; `jit_train_iteration` jits it once on a mesh with the state donated.

Data parallelism: the iteration runs on a 1-D mesh whose axis "tasks" shards
the task batch (sharding.py); parameters and optimizer state are replicated,
and `jax.jit` with `NamedSharding`s partitions the step (XLA inserts the
all-reduce of the meta-gradient). Task i of a step is always drawn from the
i-th key of `split(sample_key, B)`, whatever the number of devices or hosts,
so a run gives the same parameters on 1, 2 or 4 devices, up to float
reduction order.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from advmeta_jax import learners
from advmeta_jax.config import Config
from advmeta_jax.core import episodes
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError
from advmeta_jax.learners import objectives
from advmeta_jax.training import sharding as sharding_lib

Array = jax.Array


class TrainState(NamedTuple):
  """The whole state of meta-training (a pytree, checkpointed as is):
  the step, the parameters, the optimizer's state and, with
  `--batchnorm=running`, the BatchNorm running averages
  (`models.init_running_stats`; None otherwise)."""
  step: Array
  params: Any
  opt_state: Any
  batch_stats: Any = None

  @property
  def meta_test_params(self):
    """The parameters the meta-test runs: `params`, with the running
    averages beside each BatchNorm's scale and offset when there are
    (`models.with_running_stats`)."""
    return models.with_running_stats(self.params, self.batch_stats)


def make_optimizer(meta_lr: float, *, halve_every: int = 0,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
  """The meta-optimizer: Adam with step size β (MAML and ADML use 1e-3),
  halved every `halve_every` steps when it is > 0, with `weight_decay`·θ
  added to the gradient before Adam when it is > 0 (PyTorch's
  `Adam(weight_decay=...)`)."""
  lr = meta_lr if not halve_every else optax.exponential_decay(
      meta_lr, transition_steps=halve_every, decay_rate=0.5, staircase=True)
  adam = optax.adam(lr)
  if not weight_decay:
    return adam
  return optax.chain(optax.add_decayed_weights(weight_decay), adam)


def config_optimizer(config: Config) -> optax.GradientTransformation:
  """`make_optimizer` with a run's `meta_lr`, `meta_lr_halve_every` and
  `meta_weight_decay`."""
  m = config.meta
  return make_optimizer(m.meta_lr, halve_every=m.meta_lr_halve_every,
                        weight_decay=m.meta_weight_decay)


def init_state(params, optimizer: optax.GradientTransformation,
               batch_stats=None) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), batch_stats=batch_stats)


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


def update_running_stats(batch_stats_fn, params, tasks: episodes.Task,
                         running, *, parallel_tasks: int = 0):
  """The BatchNorm running averages after one step's tasks, as MetaOptNet's
  training step moves them: its embedding is called on the support, then on
  the query, and each call moves PyTorch's running averages by momentum 0.1
  towards that batch's mean and unbiased variance. Here each task is a
  batch of its own (the learners normalize per task), so a call's
  statistics are those of the tasks' supports (then queries) averaged over
  the B tasks: two updates per step, at the step's parameters θ before its
  update, from the clean images.

  Args:
    batch_stats_fn: `models.make_batch_stats_fn(model)`.
    params: θ.
    tasks: the step's tasks (`[B, ...]`).
    running: the running averages (`models.init_running_stats`).
    parallel_tasks: tasks at a time (`map_over_tasks`).
  """
  b = tasks.query_labels.shape[0]
  per_task = lambda t, _: (batch_stats_fn(params, t.support_images),
                           batch_stats_fn(params, t.query_images))
  support, query = map_over_tasks(per_task, tasks, jnp.zeros((b,)),
                                  parallel_tasks=parallel_tasks)
  for stats in (support, query):
    running = models.update_running_stats(
        running, jax.tree.map(lambda s: jnp.mean(s, axis=0), stats))
  return jax.lax.stop_gradient(running)


def make_train_step(learner: learners.Bound,
                    optimizer: optax.GradientTransformation, *,
                    parallel_tasks: int = 0, batch_stats_fn=None):
  """The meta-train step `(state, tasks, key) -> (state, metrics)`.

  Pure and un-jitted. The meta-gradient is the gradient of the batch outer
  loss (`batch_outer_loss`; second-order through the inner loop unless
  `first_order`); one optimizer update per step, or one per phase in turn
  for an objective with sequential update phases (ADML's `adml_sequential`).
  Then "loss" is the sum of the phases' losses, each at the parameters it
  updated, "grad_norm" the norm of all their gradients, and the other
  metrics are those of the last phase. `parallel_tasks` bounds the tasks
  adapted at once (memory; `batch_value_and_grad`). With `batch_stats_fn`
  (`models.make_batch_stats_fn`, for `--batchnorm=running`) the step also
  moves the state's BatchNorm running averages (`update_running_stats`).
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
    batch_stats = state.batch_stats
    if batch_stats_fn is not None:
      batch_stats = update_running_stats(batch_stats_fn, state.params, tasks,
                                         batch_stats,
                                         parallel_tasks=parallel_tasks)
    return TrainState(state.step + 1, params, opt_state,
                      batch_stats), metrics

  return train_step


# The settings that the train iteration does not read: when to log, save and
# stop, where the data is, and the meta-test's.
_NOT_IN_THE_ITERATION = ("num_steps", "log_every", "tensorboard",
                         "checkpoint_every", "keep_checkpoints", "data_dir",
                         "cache_dir")


def iteration_config(config: Config) -> Config:
  """`config` with the settings the train iteration does not read at their
  defaults: runs that differ only in them (a longer run, another log
  interval) share the jitted iteration in memory (`jitted_train_iteration`)
  and the stored one of a relaunch (executables.py)."""
  defaults = type(config.loop)()
  loop = dataclasses.replace(config.loop, **{
      name: getattr(defaults, name) for name in _NOT_IN_THE_ITERATION})
  return dataclasses.replace(config, loop=loop, eval=type(config.eval)())


def jitted_train_iteration(learner: learners.Bound, config: Config, mesh,
                           batch_stats_fn=None):
  """The jitted, sharded train iteration of `train`; cached on the settings
  it reads (`iteration_config`), so runs in one process (reproductions,
  tests) that differ only in their length, logging or meta-test trace and
  compile it once. `batch_stats_fn`: as `make_train_step`'s."""
  return _jitted_train_iteration(learner, iteration_config(config), mesh,
                                 batch_stats_fn)


@functools.lru_cache(maxsize=None)
def _jitted_train_iteration(learner: learners.Bound, config: Config, mesh,
                            batch_stats_fn=None):
  return jit_train_iteration(make_train_iteration(
      make_train_step(learner, config_optimizer(config),
                      parallel_tasks=config.loop.parallel_tasks,
                      batch_stats_fn=batch_stats_fn),
      config, sharding_lib.task_sharding(mesh)), mesh)


jitted_train_iteration.cache_clear = _jitted_train_iteration.cache_clear


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
