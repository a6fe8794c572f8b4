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
checkpoint.

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

import dataclasses
import functools
import inspect
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from advmeta_jax import attacks
from advmeta_jax import datasets
from advmeta_jax import episodes
from advmeta_jax import learners
from advmeta_jax import models
from advmeta_jax.errors import ConfigError, DataError, NonFiniteLossError

Array = jax.Array
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a meta-training run (saved as config.json).

  The defaults are the quickstart: MAML, 5-way 1-shot on the offline `digits`.
  """
  dataset: str = "digits"
  data_dir: Optional[str] = None
  image_size: Optional[int] = None      # None: the dataset's default
  learner: str = "maml"
  # The robust loss around the learner's adaptation (learners.ROBUST_LOSSES):
  # "none", "aq" or "tafl"; for maml, protonet, matchingnet only.
  robust: str = "none"
  n_way: int = 5
  k_shot: int = 1
  q_query: int = 15
  task_batch_size: int = 4
  inner_lr: float = 0.01
  inner_steps: int = 5
  first_order: bool = False
  # Memory: rematerialize the inner steps; bfloat16 convolution inputs.
  remat: bool = False
  compute_dtype: str = "float32"
  # Tasks adapted at once (0: the whole batch); fewer: less memory.
  parallel_tasks: int = 0
  meta_lr: float = 1e-3
  filters: int = 32
  conv_impl: str = "matmul"
  # Devices the task batch is sharded over (0: all devices of all hosts).
  num_devices: int = 0
  num_steps: int = 300
  seed: int = 0
  log_every: int = 50
  checkpoint_every: int = 100
  # Meta-test at the end of training (0 disables it) and at evaluate time.
  eval_episodes: int = 600
  eval_inner_steps: int = 10
  eval_batch_size: int = 20
  # The training attack of the robust learners (ignored by maml). None / "":
  # the learner's default (DEFAULT_TRAIN_ATTACKS).
  train_attack: Optional[str] = None
  train_eps: str = ""
  train_attack_steps: int = 7
  train_step_size: str = "2/255"
  adv_fraction: float = 1.0
  adml_inner_lr_adv: float = 0.01
  adml_beta_clean: float = 1.0
  adml_beta_adv: float = 1.0
  adml_sequential: bool = False
  tafl_gamma: float = 2.0
  tafl_k: float = 1.0
  tafl_delta: float = 1e-3
  tafl_reduction: str = "mean"

  # Fields that may change when a run is resumed (they do not change the result
  # of the steps already taken).
  RESUMABLE_CHANGES = ("num_steps", "log_every", "checkpoint_every",
                       "eval_episodes", "eval_inner_steps", "eval_batch_size",
                       "data_dir", "num_devices", "remat",
                       "parallel_tasks")

  def validate(self) -> "TrainConfig":
    """Checks every field; raises `ConfigError` naming the field and the value."""
    if self.dataset not in datasets.names():
      raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of: "
                        f"{', '.join(datasets.names())}.")
    learners.get(self.learner)
    learners.check_robust(self.learner, self.robust)
    positive_ints = ("n_way", "k_shot", "q_query", "task_batch_size",
                     "inner_steps", "filters", "num_steps", "log_every",
                     "checkpoint_every", "eval_inner_steps", "eval_batch_size")
    for name in positive_ints:
      value = getattr(self, name)
      if isinstance(value, bool) or int(value) != value or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if self.n_way < 2:
      raise ConfigError(f"n_way must be at least 2, got {self.n_way}.")
    if (isinstance(self.parallel_tasks, bool) or int(self.parallel_tasks) !=
        self.parallel_tasks or self.parallel_tasks < 0 or (
            self.parallel_tasks and self.task_batch_size % self.parallel_tasks)):
      raise ConfigError(
          f"parallel_tasks must be 0 (the whole batch) or a divisor of "
          f"task_batch_size={self.task_batch_size}, got "
          f"{self.parallel_tasks!r}.")
    if (isinstance(self.num_devices, bool) or int(self.num_devices) !=
        self.num_devices or self.num_devices < 0):
      raise ConfigError(f"num_devices must be an integer >= 0 (0: all "
                        f"devices), got {self.num_devices!r}.")
    if self.eval_episodes < 0:
      raise ConfigError(
          f"eval_episodes must be >= 0 (0 skips the meta-test), got "
          f"{self.eval_episodes}.")
    for name in ("inner_lr", "meta_lr"):
      value = getattr(self, name)
      if not (np.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value}.")
    if self.image_size is not None:
      if models.feature_map_size(self.image_size) < 1:
        raise ConfigError(f"image_size must be at least 16 (conv4 pools four "
                          f"times by 2), got {self.image_size}.")
    if self.compute_dtype not in models.COMPUTE_DTYPES:
      raise ConfigError(f"unknown compute_dtype {self.compute_dtype!r}; "
                        f"choose one of {', '.join(models.COMPUTE_DTYPES)}.")
    if self.conv_impl not in models.CONV_IMPLS:
      raise ConfigError(f"unknown conv_impl {self.conv_impl!r}; choose one of "
                        f"{', '.join(models.CONV_IMPLS)}.")
    if self.train_attack:
      attacks.get(self.train_attack)
      if "eps" not in attacks.hyperparameters(self.train_attack):
        raise ConfigError(
            f"train_attack {self.train_attack!r} is not an L-inf attack with a "
            f"budget eps; choose one of: {', '.join(TRAIN_ATTACKS)}.")
    attacks.parse_eps(self.train_eps or "0", "train_eps")
    if isinstance(self.train_attack_steps, bool) or int(
        self.train_attack_steps) != self.train_attack_steps or (
            self.train_attack_steps < 1):
      raise ConfigError(f"train_attack_steps must be a positive integer, got "
                        f"{self.train_attack_steps!r}.")
    step_size = attacks.parse_eps(self.train_step_size, "train_step_size")
    if step_size <= 0:
      raise ConfigError(f"train_step_size must be > 0, got "
                        f"{self.train_step_size!r}.")
    # The learner's own fields are checked in one place: LearnerConfig.
    learners.LearnerConfig(apply_fn=None, **learner_fields(self))
    return self

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @property
  def learner_label(self) -> str:
    """The learner as a results row names it: "protonet+tafl", or "maml"."""
    if self.robust == "none":
      return self.learner
    return f"{self.learner}+{self.robust}"

  @classmethod
  def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"unknown config fields {unknown}; known: {sorted(known)}.")
    return cls(**d)


# The training attack and ε of each robust learner when --train_attack /
# --train_eps are not given (ADML: FGSM 2/255; AQ, TAFL: PGD 8/255); a
# --robust loss takes the default of the learner of the same name.
DEFAULT_TRAIN_ATTACKS = {"maml_ad": ("fgsm", "2/255"), "adml": ("fgsm", "2/255"),
                         "aq": ("pgd", "8/255"), "tafl": ("pgd", "8/255")}
TRAIN_ATTACKS = tuple(n for n in attacks.names()
                      if "eps" in attacks.hyperparameters(n))


def learner_fields(config: TrainConfig) -> Dict[str, Any]:
  """The `LearnerConfig` fields that a `TrainConfig` carries under the same name
  (all but the model function and the built training attack)."""
  return {f.name: getattr(config, f.name)
          for f in dataclasses.fields(learners.LearnerConfig)
          if f.name not in ("apply_fn", "train_attack")}


def make_train_attack(config: TrainConfig):
  """The training attack of `config` (see `_train_attack`); equal settings
  give the same function object, so equal runs share compiled steps."""
  robust = config.robust if config.robust != "none" else config.learner
  default_attack, default_eps = DEFAULT_TRAIN_ATTACKS.get(robust, (None, None))
  return _train_attack(config.train_attack or default_attack,
                       config.train_eps or default_eps or "0",
                       config.train_attack_steps, config.train_step_size)


@functools.lru_cache(maxsize=None)
def _train_attack(name: Optional[str], eps_text: str, steps: int,
                  step_size_text: str):
  """Attack `name` at budget `eps_text` (None for a learner that uses none).

  Iterative attacks get `steps` steps (`train_attack_steps`); PGD (random
  start) steps of `train_step_size`, while MI-FGSM keeps its own a = ε/T and
  APGD needs none. FGSM ignores both.
  """
  if name is None:
    return None
  eps = attacks.parse_eps(eps_text, "train_eps")
  allowed = attacks.hyperparameters(name)
  hparams = {"eps": eps}
  if "num_steps" in allowed:
    hparams["num_steps"] = steps
  if allowed.get("step_size", None) is inspect.Parameter.empty:
    hparams["step_size"] = attacks.parse_eps(step_size_text,
                                             "train_step_size")
  return attacks.make_attack(name, hparams)


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


def map_over_tasks(fn, tasks: episodes.Task, keys: Array, *,
                   parallel_tasks: int = 0):
  """`jax.vmap(fn)(tasks, keys)`, optionally `parallel_tasks` tasks at a time.

  With `0 < parallel_tasks < B`, the tasks run in B/parallel_tasks sequential
  rounds (`lax.map`) of `parallel_tasks` vmapped tasks, each round under
  `jax.checkpoint`: the meta-gradient keeps only one round's intermediates
  alive and recomputes each round's forward pass in the backward pass (the
  training attacks' results are kept, not recomputed). The same function as
  the plain vmap, in the same task order: memory over B tasks becomes that of
  `parallel_tasks` for one extra forward pass. Round r holds tasks
  `r, r + B/p, r + 2·B/p, ...`, so a task axis sharded over devices stays
  sharded (`parallel_tasks` a multiple of the device count).
  """
  b = keys.shape[0]
  if not parallel_tasks or parallel_tasks >= b:
    return jax.vmap(fn)(tasks, keys)
  if b % parallel_tasks:
    raise ConfigError(f"parallel_tasks={parallel_tasks} does not divide the "
                      f"task batch of {b}.")
  rounds = b // parallel_tasks
  split = lambda x: jnp.swapaxes(
      x.reshape(parallel_tasks, rounds, *x.shape[1:]), 0, 1)
  merge = lambda x: jnp.swapaxes(x, 0, 1).reshape(b, *x.shape[2:])
  policy = jax.checkpoint_policies.save_only_these_names(
      learners.ADVERSARIAL_IMAGES)
  one_round = jax.checkpoint(lambda args: jax.vmap(fn)(*args), policy=policy)
  out = jax.lax.map(one_round, jax.tree.map(split, (tasks, keys)))
  return jax.tree.map(merge, out)


def batch_outer_loss(outer_loss: learners.OuterLoss,
                     config: learners.LearnerConfig,
                     batch_combine: Optional[learners.BatchCombine] = None,
                     parallel_tasks: int = 0):
  """`(params, tasks, key) -> (loss, metrics)` over a batch of tasks.

  The per-task outer losses are vmapped over the tasks (`parallel_tasks` at
  a time, see `map_over_tasks`) and combined by `batch_combine` (default: the
  hook registered with `outer_loss`, the mean for most learners). `metrics`
  are the batch means of the per-task aux plus what the combine hook returns.
  """
  combine = batch_combine or learners.batch_combine_of(outer_loss)

  def fn(params, tasks: episodes.Task, key: Array):
    keys = jax.random.split(key, tasks.query_labels.shape[0])
    losses, aux = map_over_tasks(
        lambda t, k: outer_loss(params, t, k, config), tasks, keys,
        parallel_tasks=parallel_tasks)
    loss, extra = combine(losses, aux, config)
    metrics = jax.tree.map(jnp.mean, aux)
    metrics.update(extra)
    return loss, metrics
  return fn


def make_train_step(outer_loss: learners.OuterLoss,
                    config: learners.LearnerConfig,
                    optimizer: optax.GradientTransformation, *,
                    parallel_tasks: int = 0):
  """The meta-train step `(state, tasks, key) -> (state, metrics)`.

  Pure and un-jitted. The meta-gradient is the gradient of the batch outer
  loss (`batch_outer_loss`; second-order through the inner loop unless
  `config.first_order`); one optimizer update per step, or one per phase in
  turn for a learner with sequential update phases (ADML's
  `adml_sequential`). Then "loss" is the sum of the phases' losses, each at
  the parameters it updated, "grad_norm" the norm of all their gradients, and
  the other metrics are those of the last phase. `parallel_tasks` bounds
  the tasks adapted at once (memory; `map_over_tasks`).
  """
  phases = learners.update_phases_of(outer_loss, config)
  loss_fns = [batch_outer_loss(outer_loss, config, combine, parallel_tasks)
              for combine in (phases or (None,))]

  def train_step(state: TrainState, tasks: episodes.Task, key: Array):
    params, opt_state = state.params, state.opt_state
    loss, sq_norm = 0.0, 0.0
    for loss_fn in loss_fns:
      (phase_loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, tasks, key)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      loss = loss + phase_loss
      sq_norm = sq_norm + optax.tree.norm(grads, squared=True)
    metrics = {"loss": loss, "grad_norm": jnp.sqrt(sq_norm), **aux}
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


@functools.lru_cache(maxsize=None)
def _jitted_train_iteration(outer_loss: learners.OuterLoss,
                            learner_config: learners.LearnerConfig,
                            config: "TrainConfig", mesh):
  """The jitted, sharded train iteration of `train`; cached, so runs with the
  same config in one process (reproductions, tests) compile it once."""
  return jit_train_iteration(make_train_iteration(
      make_train_step(outer_loss, learner_config,
                      make_optimizer(config.meta_lr),
                      parallel_tasks=config.parallel_tasks),
      config, task_sharding(mesh)), mesh)


@dataclasses.dataclass
class Experiment:
  """What a config builds: the model, its functions and the data source.

  For a metric learner (`learners.is_metric`) the model is conv4 without its
  head and `apply_fn` returns embeddings.
  """
  config: TrainConfig
  model: models.Conv4
  apply_fn: Callable
  learner_config: learners.LearnerConfig
  image_shape: Tuple[int, int, int]


def build(config: TrainConfig) -> Experiment:
  """Builds model and learner config from a validated `TrainConfig`."""
  info = datasets.info(config.dataset)
  size = config.image_size or info.default_image_size
  if learners.is_metric(config.learner):
    model = models.make_conv4_embedding(
        filters=config.filters, conv_impl=config.conv_impl, image_size=size,
        compute_dtype=config.compute_dtype)
  else:
    model = models.make_conv4(num_classes=config.n_way, filters=config.filters,
                              conv_impl=config.conv_impl, image_size=size,
                              compute_dtype=config.compute_dtype)
  apply_fn = models.make_apply_fn(model)
  learner_config = learners.LearnerConfig(
      apply_fn=apply_fn, train_attack=make_train_attack(config),
      **learner_fields(config))
  return Experiment(config, model, apply_fn, learner_config,
                    (size, size, info.channels))


def load_split(config: TrainConfig, split: str) -> datasets.ClassSplit:
  """Loads a split and checks it can give the configured episodes."""
  data = datasets.load(config.dataset, split, data_dir=config.data_dir,
                       image_size=config.image_size)
  episodes.check_episode_shape(data, n_way=config.n_way, k_shot=config.k_shot,
                               q_query=config.q_query)
  return data


# --- devices ----------------------------------------------------------------

TASK_AXIS = "tasks"


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A 1-D mesh whose axis `TASK_AXIS` shards the task batch.

  Args:
    num_devices: how many devices to use (0: all devices of all processes).
      With several processes (hosts) it must be 0 or the global device count.

  Raises:
    ConfigError: more devices than there are, or a subset across hosts.
  """
  available = jax.devices()
  n = num_devices or len(available)
  if n > len(available):
    raise ConfigError(
        f"num_devices={num_devices}, but only {len(available)} "
        f"{available[0].platform} device(s) are visible; use 0 (all) or at "
        f"most {len(available)}.")
  if jax.process_count() > 1 and n != len(available):
    raise ConfigError(
        f"num_devices={num_devices} with {jax.process_count()} processes: "
        f"multi-host training uses all {len(available)} devices (set 0).")
  return jax.make_mesh((n,), (TASK_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=available[:n])


def check_task_batch(task_batch_size: int, mesh: jax.sharding.Mesh,
                     parallel_tasks: int = 0) -> None:
  """Raises `ConfigError` unless the task batch (and each round of
  `parallel_tasks`) splits evenly over the mesh."""
  n = mesh.devices.size
  if parallel_tasks and parallel_tasks < task_batch_size and parallel_tasks % n:
    raise ConfigError(
        f"parallel_tasks={parallel_tasks} does not divide over {n} devices: "
        f"use a multiple of {n} that divides task_batch_size="
        f"{task_batch_size}, or 0.")
  if task_batch_size % n:
    divisors = [d for d in range(1, n + 1) if task_batch_size % d == 0]
    raise ConfigError(
        f"task_batch_size={task_batch_size} does not divide over {n} devices: "
        f"each device adapts the same number of tasks. Use a task_batch_size "
        f"that is a multiple of {n}, or num_devices in {divisors}.")


def task_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Arrays with a leading task axis, split over the mesh."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(TASK_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Arrays held whole on every device of the mesh (params, optimizer state)."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def replicate(tree, mesh: jax.sharding.Mesh):
  """Places a pytree of host-identical values on every device of `mesh`.

  With several processes every process must pass the same values (the seed
  makes them so); each contributes its own devices' copies.
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      tree)


def sample_task_batch(key: Array, source: episodes.EpisodeSource, *,
                      batch_size: int, n_way: int, k_shot: int, q_query: int,
                      sharding: Optional[jax.sharding.Sharding] = None
                      ) -> episodes.Task:
  """`episodes.sample_tasks`, with the task axis sharded by `sharding`.

  Task i comes from the i-th key of `split(key, batch_size)` whatever the
  sharding (equal to `episodes.sample_tasks`); under `jit`, each device
  samples only the tasks it holds.
  """
  keys = jax.random.split(key, batch_size)
  constrain = ((lambda t: t) if sharding is None else
               (lambda t: jax.lax.with_sharding_constraint(t, sharding)))
  keys = constrain(keys)
  tasks = jax.vmap(lambda k: episodes.sample_task(
      k, source, n_way=n_way, k_shot=k_shot, q_query=q_query))(keys)
  return constrain(tasks)


def run_keys(seed: int) -> Tuple[Array, Array]:
  """`(init_key, loop_key)` of a run: initialization, and the key whose
  `fold_in(loop_key, step)` gives every step's randomness."""
  init_key, loop_key = jax.random.split(jax.random.key(seed))
  return init_key, loop_key


def make_train_iteration(train_step, config: TrainConfig,
                         sharding: Optional[jax.sharding.Sharding] = None):
  """One whole iteration `(state, source) -> (state, metrics)`.

  Samples the step's tasks on the devices from `fold_in(loop_key, state.step)`
  (`run_keys(config.seed)`) and runs `train_step` on them, so a jitted
  iteration is one dispatch per step with no host work. Pure and un-jitted.
  """
  def iteration(state: TrainState, source: episodes.EpisodeSource):
    _, loop_key = run_keys(config.seed)
    sample_key, step_key = jax.random.split(
        jax.random.fold_in(loop_key, state.step))
    tasks = sample_task_batch(
        sample_key, source, batch_size=config.task_batch_size,
        n_way=config.n_way, k_shot=config.k_shot, q_query=config.q_query,
        sharding=sharding)
    return train_step(state, tasks, step_key)
  return iteration


def jit_train_iteration(iteration, mesh: jax.sharding.Mesh):
  """`jax.jit` of an iteration on `mesh`: replicated state (donated) and
  source in; replicated state and metrics out. Compiles once."""
  rep = replicated(mesh)
  return jax.jit(iteration, in_shardings=(rep, rep), out_shardings=(rep, rep),
                 donate_argnums=0)


# --- checkpoints ------------------------------------------------------------

def checkpoint_manager(workdir: str, *, max_to_keep: int = 3):
  import orbax.checkpoint as ocp  # local: orbax imports are slow
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           create=True))


def save_checkpoint(manager, state: TrainState) -> None:
  import orbax.checkpoint as ocp
  step = int(state.step)
  if manager.latest_step() == step:
    return
  manager.save(step, args=ocp.args.StandardSave(state), force=True)
  manager.wait_until_finished()


def restore_checkpoint(manager, target: TrainState,
                       step: Optional[int] = None) -> Optional[TrainState]:
  """The checkpoint at `step` (default: latest), or None when there is none."""
  import orbax.checkpoint as ocp
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def load_config(workdir: str) -> TrainConfig:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ConfigError(f"no {CONFIG_FILE} in workdir {workdir!r}: is it the "
                      "--workdir of a training run?")
  with open(path) as f:
    return TrainConfig.from_dict(json.load(f))


def _check_resumable(workdir: str, config: TrainConfig) -> None:
  """Refuses to resume a checkpointed run with a config that changes results."""
  old = load_config(workdir)
  diffs = [f"{k}: {getattr(old, k)!r} -> {getattr(config, k)!r}"
           for k in config.to_dict()
           if getattr(old, k) != getattr(config, k)
           and k not in TrainConfig.RESUMABLE_CHANGES]
  if diffs:
    raise ConfigError(
        f"workdir {workdir!r} holds a run with a different config ("
        + "; ".join(diffs) + "). Resume with the same flags, or use a new "
        "--workdir.")


def load_metrics(workdir: str) -> List[Dict[str, float]]:
  """The logged training metrics of a run, one dict per logged step.

  Raises:
    DataError: `workdir` has no metrics file (not a training workdir, or no
      step was logged yet).
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise DataError(f"no training metrics in {workdir!r} (expected "
                    f"{METRICS_FILE}; is it the workdir of a training run?).")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _write_config(workdir: str, config: TrainConfig) -> None:
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path, "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)


def _truncate_metrics(path: str, last_step: int) -> None:
  """Drops metric lines past `last_step` (written before an interruption)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l)["step"] <= last_step]
  with open(path, "w") as f:
    f.writelines(lines)


def _to_python(metrics: Dict[str, Array]) -> Dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


# --- the loop ---------------------------------------------------------------

def train(config: TrainConfig, workdir: str, *,
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
    episodes.check_episode_shape(train_split, n_way=config.n_way,
                                 k_shot=config.k_shot, q_query=config.q_query)
  if tuple(train_split.image_shape) != exp.image_shape:
    raise ConfigError(f"the data's images are {train_split.image_shape}, the "
                      f"model expects {exp.image_shape}.")
  mesh = make_mesh(config.num_devices)
  check_task_batch(config.task_batch_size, mesh, config.parallel_tasks)
  primary = jax.process_index() == 0
  # Only a config whose data checks passed is written: a refused run leaves
  # nothing behind that would block the corrected command.
  os.makedirs(workdir, exist_ok=True)
  manager = checkpoint_manager(workdir)
  try:
    if manager.latest_step() is not None:
      _check_resumable(workdir, config)
  except ConfigError:
    manager.close()
    raise
  if primary:
    _write_config(workdir, config)
  logging.info("config: %s", json.dumps(config.to_dict(), sort_keys=True))

  optimizer = make_optimizer(config.meta_lr)
  init_key, _ = run_keys(config.seed)
  state = replicate(init_state(models.init_params(exp.model, init_key,
                                                  exp.image_shape), optimizer),
                    mesh)
  restored = restore_checkpoint(manager, state)
  if restored is not None:
    state = restored
    logging.info("resumed from the checkpoint at step %d", int(state.step))
  start = int(state.step)
  metrics_path = os.path.join(workdir, METRICS_FILE)
  if primary:
    _truncate_metrics(metrics_path, start)
  logging.info("conv4: %d parameters; meta-training steps %d..%d on %d "
               "device(s)", models.num_params(state.params), start,
               config.num_steps, mesh.devices.size)

  source = replicate(episodes.make_source(train_split, jax.local_devices()[0]),
                     mesh)
  step_fn = _jitted_train_iteration(learners.get(config.learner),
                                    exp.learner_config, config, mesh)

  bar = None
  if progress and primary and start < config.num_steps:
    bar = tqdm.tqdm(total=config.num_steps, initial=start, unit="step",
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
          f"{config.meta_lr}) or --inner_lr (now {config.inner_lr}).")
    return metrics

  try:
    with open(metrics_path, "a") if primary else _NullFile() as metrics_file:
      for step in range(start, config.num_steps):
        done = step + 1
        state, metrics = step_fn(state, source)   # state is donated
        unchecked.append((done, metrics))
        while len(unchecked) > 1:
          check(*unchecked.pop(0))
        n_since += 1
        if bar is not None:
          bar.update(1)
        log_now = done % config.log_every == 0 or done == config.num_steps
        save_now = done % config.checkpoint_every == 0 or (
            done == config.num_steps)
        if not (log_now or save_now):
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
        if save_now:
          save_checkpoint(manager, state)
          last_good = done
  except KeyboardInterrupt:
    # `state` is the last dispatched step unless the interruption hit while its
    # buffers were donated to a step being dispatched; it is saved only if its
    # loss and those of the steps before it are finite. Otherwise the last
    # checkpoint stands.
    if not any(x.is_deleted() for x in jax.tree.leaves(state)) and all(
        np.isfinite(float(m["loss"])) for _, m in unchecked):
      logging.warning("interrupted: saving a checkpoint at step %d",
                      int(state.step))
      save_checkpoint(manager, state)
    raise
  finally:
    if bar is not None:
      bar.close()
    manager.close()
  return _to_local(state, mesh)


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


def _to_local(tree, mesh: jax.sharding.Mesh):
  """A replicated pytree as plain single-device arrays (for evaluation)."""
  if mesh.devices.size == 1:
    return tree
  return jax.device_put(jax.device_get(tree), jax.local_devices()[0])


def restore_run(workdir: str, config: TrainConfig,
                step: Optional[int] = None) -> TrainState:
  """The train state of a finished or interrupted run in `workdir`."""
  exp = build(config.validate())
  optimizer = make_optimizer(config.meta_lr)
  target = init_state(models.init_params(exp.model, jax.random.key(0),
                                         exp.image_shape), optimizer)
  manager = checkpoint_manager(workdir)
  try:
    available = list(manager.all_steps())
    if not available:
      raise ConfigError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}"
                        ": train first (python -m launch.train --workdir=...).")
    if step is not None and step not in available:
      raise ConfigError(f"no checkpoint at step {step} in {workdir!r}; "
                        f"available: {sorted(available)}.")
    return restore_checkpoint(manager, target, step)
  finally:
    manager.close()
