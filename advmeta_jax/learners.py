"""Meta-learners as outer losses, and their registry.

A learner is one pure function

    outer_loss(params, task, key, config) -> (loss, aux)

of the meta-parameters θ, ONE task (`episodes.Task` without the task axis), a
PRNG key and a static `LearnerConfig`. `aux` is a dict of scalars (metrics).
The train step (`training.make_train_step`) batches it over tasks with
`jax.vmap` and combines the per-task losses with the learner's batch-combine
hook `(per_task_losses, per_task_aux, config) -> (loss, metrics)` (default: the
mean over tasks; TAFL weights tasks by its modulating factor). A new learner is
one function plus one `register`.

Who is attacked (SPEC, "Attacks"): a query attack targets the adapted
parameters θ' of the task; a support attack (ADML, MAML-AD) targets the
meta-initialization θ. Every adversarial example is `stop_gradient`ed before it
enters a meta-loss, so the meta-gradient never flows through an attack.

conv4's BatchNorm is transductive (models.py): each attack and each loss sees
the batch it is called on (the clean or the adversarial copy of a set, or their
concatenation for MAML-AD).

The robust losses are wrappers over a learner's `Adaptation` (its classifier
built from a support set): `adversarial_query_loss` is AQ's per-task loss (and
TAFL's, whose `tafl_batch_combine` weights the tasks) for any adaptation.
`LearnerConfig.robust` ("none", "aq", "tafl"; the `--robust` flag) applies it
to the learners whose own loss is the clean query loss of their adaptation:
`maml` (where `--robust=aq` is the `aq` learner and `--robust=tafl` the `tafl`
learner, the same code path) and the metric learners `protonet` and
`matchingnet` (metric.py), whose adaptation builds class prototypes / the
attention over the support embeddings. The learners with their own adversarial
loss (maml_ad, adml, aq, tafl) refuse `robust` other than "none".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
import numpy as np
import optax

from advmeta_jax import maml
from advmeta_jax import metric
from advmeta_jax.episodes import Task
from advmeta_jax.errors import ConfigError

Array = jax.Array
TAFL_REDUCTIONS = ("mean", "sum")
# The robust loss wrapped around a learner's adaptation ("none": its own loss).
ROBUST_LOSSES = ("none", "aq", "tafl")
# The `checkpoint_name` of every training attack's result (a rematerialized
# train step saves it instead of running the attack again).
ADVERSARIAL_IMAGES = "adversarial_images"


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
  """Static hyperparameters of a learner (hashable: safe as a jit constant).

  Attributes:
    apply_fn: the model, `(params, images) -> logits`; for the metric
      learners (protonet, matchingnet) `(params, images) -> embeddings`
      (conv4 without its head, `models.make_conv4_embedding`).
    inner_lr: α, the inner-loop step size.
    inner_steps: inner steps in meta-training.
    first_order: FOMAML (no gradient through inner gradients).
    remat: rematerialize the inner steps in the meta-gradient (memory).
    train_attack: the training attack `(logits_fn, x, y, *, key) -> x_adv`
      (built by `attacks.make_attack`); required by the robust learners.
    adv_fraction: MAML-AD: the fraction of the support and of the query that
      gets an adversarial copy appended (1.0: both full copies).
    adml_inner_lr_adv: ADML's α1, the inner step size on the adversarial
      support (α2 is `inner_lr`).
    adml_beta_clean: ADML's β1, weight of L(θ'_adv, Q_clean).
    adml_beta_adv: ADML's β2, weight of L(θ'_c, Q_adv).
    adml_sequential: ADML: two sequential meta-updates per step, as line 11
      of Algorithm 1 is written, instead of one on the weighted sum.
    tafl_gamma: TAFL's γ (0 gives uniform task weights, i.e. AQ).
    tafl_k: TAFL's k, the scale of L_AR in the modulating factor.
    tafl_delta: TAFL's δ > 0, the floor of L_AR.
    tafl_reduction: per-task cross-entropy over the queries, "mean" (SPEC
      default) or "sum" (the seed's).
    n_way: N, the classes of a task; the metric learners need it (one
      prototype / one class probability per class).
    robust: the robust loss wrapped around the learner's adaptation: "none"
      (its own loss), "aq" (`adversarial_query_loss`) or "tafl" (that loss,
      weighted per task by `tafl_batch_combine`). Only for the learners
      registered with `robust=True` (maml, protonet, matchingnet).
  """
  apply_fn: Callable[[dict, Array], Array]
  inner_lr: float = 0.01
  inner_steps: int = 5
  first_order: bool = False
  remat: bool = False
  train_attack: Optional[Callable[..., Array]] = None
  adv_fraction: float = 1.0
  adml_inner_lr_adv: float = 0.01
  adml_beta_clean: float = 1.0
  adml_beta_adv: float = 1.0
  adml_sequential: bool = False
  tafl_gamma: float = 2.0
  tafl_k: float = 1.0
  tafl_delta: float = 1e-3
  tafl_reduction: str = "mean"
  n_way: Optional[int] = None
  robust: str = "none"

  def __post_init__(self):
    if self.robust not in ROBUST_LOSSES:
      raise ConfigError(f"unknown robust loss {self.robust!r}; choose one of: "
                        f"{', '.join(ROBUST_LOSSES)}.")
    if self.n_way is not None and (
        isinstance(self.n_way, bool) or int(self.n_way) != self.n_way
        or self.n_way < 2):
      raise ConfigError(
          f"n_way must be an integer >= 2 (or None), got {self.n_way!r}.")
    if not self.inner_lr > 0:
      raise ConfigError(f"inner_lr must be > 0, got {self.inner_lr}.")
    if int(self.inner_steps) != self.inner_steps or self.inner_steps < 1:
      raise ConfigError(
          f"inner_steps must be an integer >= 1, got {self.inner_steps}.")
    if not 0 < self.adv_fraction <= 1:
      raise ConfigError(
          f"adv_fraction must be in (0, 1], got {self.adv_fraction}.")
    if not (np.isfinite(self.adml_inner_lr_adv) and self.adml_inner_lr_adv > 0):
      raise ConfigError(f"adml_inner_lr_adv must be a finite number > 0, got "
                        f"{self.adml_inner_lr_adv}.")
    for name in ("adml_beta_clean", "adml_beta_adv", "tafl_gamma", "tafl_k"):
      value = getattr(self, name)
      if not (np.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value}.")
    if self.adml_beta_clean + self.adml_beta_adv == 0:
      raise ConfigError("adml_beta_clean and adml_beta_adv are both 0: the "
                        "ADML loss would be 0.")
    if not (np.isfinite(self.tafl_delta) and self.tafl_delta > 0):
      raise ConfigError(
          f"tafl_delta must be a finite number > 0, got {self.tafl_delta}.")
    if self.tafl_reduction not in TAFL_REDUCTIONS:
      raise ConfigError(f"unknown tafl_reduction {self.tafl_reduction!r}; "
                        f"choose one of: {', '.join(TAFL_REDUCTIONS)}.")


OuterLoss = Callable[[dict, Task, Array, LearnerConfig],
                     Tuple[Array, Dict[str, Array]]]
# (per-task losses [B], per-task aux {name: [B]}, config) -> (loss, metrics).
BatchCombine = Callable[[Array, Dict[str, Array], LearnerConfig],
                        Tuple[Array, Dict[str, Array]]]


def mean_over_tasks(losses: Array, aux: Dict[str, Array],
                    config: LearnerConfig) -> Tuple[Array, Dict[str, Array]]:
  """The default batch combine: the mean outer loss over the task batch."""
  del aux, config
  return losses.mean(), {}


def robust_batch_combine(losses: Array, aux: Dict[str, Array],
                         config: LearnerConfig
                         ) -> Tuple[Array, Dict[str, Array]]:
  """The batch combine of the learners that take `config.robust`: TAFL's
  per-task weights with `robust="tafl"`, else the mean over tasks."""
  if config.robust == "tafl":
    return tafl_batch_combine(losses, aux, config)
  return mean_over_tasks(losses, aux, config)


# config -> None (one meta-update per step on the batch loss) or a tuple of
# batch combines, each giving one meta-update in turn (ADML's line 11).
UpdatePhases = Callable[[LearnerConfig], Optional[Tuple[BatchCombine, ...]]]


def _one_update(config: LearnerConfig) -> None:
  del config
  return None


class Adaptation(NamedTuple):
  """How a learner turns a support set into a classifier (meta-testing).

  The evaluation protocol (`evaluation.py`) and the test-time attacks only see
  a learner through this interface, so it runs unchanged on gradient-based
  learners (θ' = adapt(θ, S)) and on metric learners (prototypes / attention
  built from S).

  Attributes:
    adapt: `(params, images, labels, *, num_steps, track_fn=None) ->
      (state, curve)`: the adapted classifier `state` from a support set, and
      `curve`, a dict of `[num_steps]` arrays holding `track_fn(state)` after
      each step (`{}` when `track_fn` is None or there are no steps).
      `num_steps` is the number of inner steps (ignored by learners without
      an inner loop, which return their single state's `track_fn` as a
      `[1]` curve).
    logits: `(state, images) -> logits`: the adapted classifier. A query
      attack is an attack on `lambda x: logits(state, x)` (the adapted model).
    initial_logits: `(params, support_images, support_labels, images) ->
      logits`: the model before adaptation, the target of a support attack
      (SPEC, "Who is attacked": the meta-initialization).
  """
  adapt: Callable[..., Tuple[Any, Dict[str, Array]]]
  logits: Callable[[Any, Array], Array]
  initial_logits: Callable[[Any, Array, Array, Array], Array]


def gradient_adaptation(config: "LearnerConfig") -> Adaptation:
  """MAML's adaptation: SGD steps of size `inner_lr` on the support loss.

  Cached on what it depends on (model, α, first-order), so every MAML-style
  learner of one architecture shares one `Adaptation` and its compiled
  meta-test functions.
  """
  return _gradient_adaptation(config.apply_fn, config.inner_lr,
                              config.first_order, config.remat)


@functools.lru_cache(maxsize=None)
def _gradient_adaptation(apply_fn, inner_lr: float, first_order: bool,
                         remat: bool) -> Adaptation:

  def adapt(params, images, labels, *, num_steps, track_fn=None):
    return maml.adapt(apply_fn, params, images, labels,
                      inner_lr=inner_lr, num_steps=num_steps,
                      first_order=first_order, remat=remat,
                      track_fn=track_fn)

  def initial_logits(params, support_images, support_labels, images):
    del support_images, support_labels
    return apply_fn(params, images)

  return Adaptation(adapt, apply_fn, initial_logits)


# --- metric adaptation ------------------------------------------------------

class PrototypeState(NamedTuple):
  """ProtoNet adapted to a support set: the embedding's parameters and the
  `[N, D]` class prototypes."""
  params: Any
  prototypes: Array


class MatchingState(NamedTuple):
  """Matching Networks adapted to a support set: the embedding's parameters,
  the `[S, D]` support embeddings and their `[S]` labels."""
  params: Any
  support_embeddings: Array
  support_labels: Array


def _require_n_way(config: LearnerConfig, learner: str) -> int:
  if config.n_way is None:
    raise ConfigError(
        f"learner {learner!r} needs LearnerConfig.n_way (the classes of a "
        "task; training.build sets it from --n_way).")
  return int(config.n_way)


def _metric_adaptation(build: Callable[[Any, Array, Array], Any],
                       logits: Callable[[Any, Array], Array]) -> Adaptation:
  """An `Adaptation` whose adaptation is one function of the support.

  There is no inner loop: `num_steps` is ignored and the curve is the single
  point `track_fn(state)` (`[1]` arrays). The classifier "before adaptation"
  (`initial_logits`, the target of a support attack) is the classifier built
  from the given clean support at the meta-parameters, which is the same as
  the adapted one: a metric learner has no other.
  """
  def adapt(params, images, labels, *, num_steps, track_fn=None):
    del num_steps
    state = build(params, images, labels)
    curve = ({} if track_fn is None
             else {k: v[None] for k, v in track_fn(state).items()})
    return state, curve

  def initial_logits(params, support_images, support_labels, images):
    return logits(build(params, support_images, support_labels), images)

  return Adaptation(adapt, logits, initial_logits)


def prototype_adaptation(config: LearnerConfig) -> Adaptation:
  """Prototypical Networks (Snell et al. 2017): prototypes from the support,
  logits −‖f(x) − c_k‖² (metric.py). `config.apply_fn` is the embedding f."""
  embed, n_way = config.apply_fn, _require_n_way(config, "protonet")

  def build(params, images, labels):
    return PrototypeState(params, metric.class_prototypes(
        embed(params, images), labels, n_way))

  def logits(state, images):
    return metric.prototype_logits(embed(state.params, images),
                                   state.prototypes)

  return _metric_adaptation(build, logits)


def matching_adaptation(config: LearnerConfig) -> Adaptation:
  """Matching Networks (Vinyals et al. 2016) without FCE: cosine attention
  over the support embeddings; logits log p(y = k | x) (metric.py).
  `config.apply_fn` is the embedding f = g."""
  embed, n_way = config.apply_fn, _require_n_way(config, "matchingnet")

  def build(params, images, labels):
    return MatchingState(params, embed(params, images), labels)

  def logits(state, images):
    return metric.matching_log_probs(embed(state.params, images),
                                     state.support_embeddings,
                                     state.support_labels, n_way)

  return _metric_adaptation(build, logits)


class Learner(NamedTuple):
  """A registry entry: the per-task outer loss, how a batch combines, how
  the learner adapts at test time, whether its model is conv4's embedding
  (`metric`, no head) and whether it takes `LearnerConfig.robust`."""
  outer_loss: OuterLoss
  batch_combine: BatchCombine = mean_over_tasks
  update_phases: UpdatePhases = _one_update
  adaptation: Callable[["LearnerConfig"], Adaptation] = gradient_adaptation
  metric: bool = False
  robust: bool = False


_REGISTRY: Dict[str, Learner] = {}


def register(name: str, *, batch_combine: Optional[BatchCombine] = None,
             update_phases: Optional[UpdatePhases] = None,
             adaptation: Optional[Callable[[LearnerConfig], Adaptation]] = None,
             metric: bool = False, robust: bool = False):
  """Decorator registering an outer loss under `name` (the --learner value).

  Args:
    name: the learner's name.
    batch_combine: `(per_task_losses, per_task_aux, config) -> (loss,
      metrics)`, for learners whose batch loss is not the mean of the per-task
      losses (TAFL); default `mean_over_tasks`.
    update_phases: `config -> None or (batch_combine, ...)`: several
      sequential meta-updates per step, one per combine (ADML's
      `adml_sequential`); default one update.
    adaptation: `LearnerConfig -> Adaptation`, how the learner adapts to a
      support set at test time; default `gradient_adaptation` (MAML's).
    metric: the model is conv4's embedding without a head (`apply_fn`
      returns embeddings; `training.build` builds it).
    robust: the outer loss takes `LearnerConfig.robust` (it must then also
      pass `robust_batch_combine`, or a combine that calls it).
  """
  def wrap(fn: OuterLoss) -> OuterLoss:
    _REGISTRY[name] = Learner(fn, batch_combine or mean_over_tasks,
                              update_phases or _one_update,
                              adaptation or gradient_adaptation,
                              metric, robust)
    return fn
  return wrap


def names() -> Tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def get(name: str) -> OuterLoss:
  """The outer loss registered as `name`; a clear error for unknown names."""
  if name not in _REGISTRY:
    raise ConfigError(
        f"unknown learner {name!r}; choose one of: {', '.join(names())}.")
  return _REGISTRY[name].outer_loss


def _entry_of(outer_loss: OuterLoss) -> Learner:
  for entry in _REGISTRY.values():
    if entry.outer_loss is outer_loss:
      return entry
  return Learner(outer_loss)


def is_metric(name: str) -> bool:
  """Whether learner `name` classifies with a metric over conv4's embedding
  (its model has no head)."""
  get(name)
  return _REGISTRY[name].metric


def robust_learners() -> Tuple[str, ...]:
  """The learners that take `LearnerConfig.robust` (`--robust`)."""
  return tuple(n for n in names() if _REGISTRY[n].robust)


def check_robust(name: str, robust: str) -> None:
  """Refuses a `robust` loss that is unknown or that learner `name` does not
  take, with what is allowed.

  Raises:
    ConfigError: the combination is not allowed.
  """
  if robust not in ROBUST_LOSSES:
    raise ConfigError(f"unknown robust loss {robust!r}; choose one of: "
                      f"{', '.join(ROBUST_LOSSES)}.")
  get(name)
  if robust != "none" and not _REGISTRY[name].robust:
    raise ConfigError(
        f"robust={robust!r} does not apply to learner {name!r}, which has its "
        f"own adversarial loss; robust applies to: "
        f"{', '.join(robust_learners())} (maml with robust=aq/tafl is the "
        "aq/tafl learner). Use robust='none' with this learner.")


def batch_combine_of(outer_loss: OuterLoss) -> BatchCombine:
  """The batch-combine hook registered with `outer_loss` (default: the mean)."""
  return _entry_of(outer_loss).batch_combine


def adaptation_of(learner, config: LearnerConfig) -> Adaptation:
  """The test-time `Adaptation` of a learner (its name or its outer loss)."""
  outer_loss = get(learner) if isinstance(learner, str) else learner
  return _entry_of(outer_loss).adaptation(config)


def update_phases_of(outer_loss: OuterLoss, config: LearnerConfig
                     ) -> Optional[Tuple[BatchCombine, ...]]:
  """The sequential meta-updates of `outer_loss` under `config` (None: one)."""
  return _entry_of(outer_loss).update_phases(config)


def adapt_to_support(params, task: Task, config: LearnerConfig,
                     num_steps: int = None):
  """θ' from the task's clean support set (the shared first half of MAML)."""
  return maml.adapt(config.apply_fn, params, task.support_images,
                    task.support_labels, inner_lr=config.inner_lr,
                    num_steps=config.inner_steps if num_steps is None
                    else num_steps,
                    first_order=config.first_order, remat=config.remat)


def _support_metrics(curve: Dict[str, Array]) -> Dict[str, Array]:
  """The support loss before adaptation, where the adaptation reports one
  (gradient learners; a metric learner has no support loss)."""
  if "support_loss" in curve:
    return {"support_loss": curve["support_loss"][0]}
  return {}


def clean_query_loss(adaptation: Adaptation, params, task: Task,
                     config: LearnerConfig):
  """L(adapted, Q_clean): the query cross-entropy of the classifier that
  `adaptation` builds from the clean support (`config.inner_steps` steps for
  a gradient learner). The loss of maml, protonet and matchingnet.

  Returns:
    `(query cross-entropy, {"query_accuracy"[, "support_loss"]})`.
  """
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels,
                                  num_steps=config.inner_steps)
  logits = adaptation.logits(state, task.query_images)
  loss = maml.cross_entropy(logits, task.query_labels)
  return loss, {"query_accuracy": maml.accuracy(logits, task.query_labels),
                **_support_metrics(curve)}


def adaptation_loss(adaptation: Adaptation, params, task: Task, key: Array,
                    config: LearnerConfig, *, learner: str):
  """The outer loss of a learner defined by its adaptation, under
  `config.robust`: "none" `clean_query_loss`; "aq" and "tafl"
  `adversarial_query_loss` (TAFL's task weights are applied by
  `robust_batch_combine`, its per-task reduction here)."""
  if config.robust == "none":
    return clean_query_loss(adaptation, params, task, config)
  _require_attack(config, learner)
  reduction = config.tafl_reduction if config.robust == "tafl" else "mean"
  return adversarial_query_loss(adaptation, params, task, key, config,
                                reduction=reduction)


@register("maml", batch_combine=robust_batch_combine, robust=True)
def maml_loss(params, task: Task, key: Array, config: LearnerConfig):
  """MAML (Finn et al. 2017): L(θ', Q_clean) with θ' adapted on the clean support.

  With `config.robust` "aq" or "tafl" this is the loss of the aq or tafl
  learner (the same `adversarial_query_loss` on MAML's adaptation).

  Returns:
    `(query cross-entropy, {"query_accuracy", "support_loss"})`.
  """
  return adaptation_loss(gradient_adaptation(config), params, task, key,
                         config, learner="maml")


# --- adversarial learners ---------------------------------------------------

def _require_attack(config: LearnerConfig, learner: str) -> None:
  if config.train_attack is None:
    robust = ("" if config.robust == "none"
              else f" with robust={config.robust!r}")
    raise ConfigError(
        f"learner {learner!r}{robust} needs a training attack: set "
        "LearnerConfig.train_attack (built by attacks.make_attack), or "
        "--train_attack when training from flags.")


def attack_images(config: LearnerConfig, params, images: Array, labels: Array,
                  key: Array, *, logits_fn: Optional[Callable] = None
                  ) -> Array:
  """`config.train_attack` against the model at `params`, `stop_gradient`ed.

  The parameters the attacker sees are constants too: the perturbation is a
  fixed input to the meta-loss, no gradient flows through it (SPEC, "Attacks").

  Args:
    config: holds the attack and the model `apply_fn`.
    params: the attacked classifier's parameters, or any pytree that
      `logits_fn` takes (an adapted state of an `Adaptation`).
    images, labels: the set to attack.
    key: the attack's randomness.
    logits_fn: `(params, images) -> logits` of the attacked classifier;
      default `config.apply_fn` (e.g. `Adaptation.logits`).
  """
  logits_of = config.apply_fn if logits_fn is None else logits_fn
  frozen = jax.lax.stop_gradient(params)
  x_adv = jax.lax.stop_gradient(config.train_attack(
      lambda x: logits_of(frozen, x), images, labels, key=key))
  # Named so that a rematerialized train step keeps it, not the attack.
  return checkpoint_name(x_adv, ADVERSARIAL_IMAGES)


def _adapt(params, images: Array, labels: Array, config: LearnerConfig,
           inner_lr: float):
  return maml.adapt(config.apply_fn, params, images, labels,
                    inner_lr=inner_lr, num_steps=config.inner_steps,
                    first_order=config.first_order, remat=config.remat)


def _subset(images: Array, labels: Array, fraction: float, key: Array):
  """A random `fraction` of a set (all of it, in order, when fraction is 1)."""
  n = images.shape[0]
  n_adv = max(1, int(round(fraction * n)))
  if n_adv == n:
    return images, labels
  idx = jax.random.permutation(key, n)[:n_adv]
  return images[idx], labels[idx]


@register("maml_ad")
def maml_ad_loss(params, task: Task, key: Array, config: LearnerConfig):
  """MAML-AD, MAML on mixed clean + adversarial sets (Yin et al. 2018, eqs. 2–3).

  D_i = S_clean ∪ A_θ(S') and D'_i = Q_clean ∪ A_θ'(Q'), where S', Q' are
  random `adv_fraction` subsets (both full copies by default); the support
  attack targets θ, the query attack the adapted θ' (SPEC, "Who is attacked").
  θ' = adapt(θ, D_i) (eq. 2); the outer loss is L(θ', D'_i) (eq. 3).

  Returns:
    `(mixed query cross-entropy, {"query_accuracy", "adv_query_accuracy",
    "support_loss"})`.
  """
  check_robust("maml_ad", config.robust)
  _require_attack(config, "maml_ad")
  sel_s, att_s, sel_q, att_q = jax.random.split(key, 4)
  xs, ys = _subset(task.support_images, task.support_labels,
                   config.adv_fraction, sel_s)
  xs_adv = attack_images(config, params, xs, ys, att_s)
  adapted, inner = _adapt(
      params, jnp.concatenate([task.support_images, xs_adv]),
      jnp.concatenate([task.support_labels, ys]), config, config.inner_lr)
  xq, yq = _subset(task.query_images, task.query_labels, config.adv_fraction,
                   sel_q)
  xq_adv = attack_images(config, adapted, xq, yq, att_q)
  logits = config.apply_fn(adapted,
                           jnp.concatenate([task.query_images, xq_adv]))
  loss = maml.cross_entropy(logits, jnp.concatenate([task.query_labels, yq]))
  n = task.query_images.shape[0]
  return loss, {
      "query_accuracy": maml.accuracy(logits[:n], task.query_labels),
      "adv_query_accuracy": maml.accuracy(logits[n:], yq),
      "support_loss": inner["support_loss"][0]}


def _adml_phases(config: LearnerConfig):
  """ADML's line 11 as written: θ ← θ − β1∇Σ L(θ'_adv, Q_clean), then
  θ ← θ − β2∇Σ L(θ'_c, Q_adv) at the updated θ (with `adml_sequential`)."""
  if not config.adml_sequential:
    return None

  def clean_query_term(losses, aux, cfg):
    del losses
    return cfg.adml_beta_clean * aux["query_loss_clean"].mean(), {}

  def adv_query_term(losses, aux, cfg):
    del losses
    return cfg.adml_beta_adv * aux["query_loss_adv"].mean(), {}

  return (clean_query_term, adv_query_term)


@register("adml", update_phases=_adml_phases)
def adml_loss(params, task: Task, key: Array, config: LearnerConfig):
  """ADML (Yin et al. 2018, Algorithm 1), one-update form.

  θ'_adv = adapt(θ, S_adv; α1) with S_adv = A_θ(S) (the support attack targets
  the meta-initialization); θ'_c = adapt(θ, S_clean; α2) (line 7). The outer
  loss is β1·L(θ'_adv, Q_clean) + β2·L(θ'_c, Q_adv), with Q_adv = A_θ'_c(Q)
  (line 9; the query attack targets θ'_c). By default one Adam step on this
  sum replaces the two sequential updates of line 11; `adml_sequential` takes
  them in turn (`_adml_phases`), each an Adam step of the shared meta-optimizer
  on its β-weighted term, the second recomputed at the updated θ (same tasks
  and key).

  Returns:
    `(weighted loss, {"query_accuracy" (θ'_c on Q_clean),
    "adv_query_accuracy" (θ'_c on Q_adv), "adv_support_query_accuracy"
    (θ'_adv on Q_clean), "query_loss_clean", "query_loss_adv",
    "support_loss"})`.
  """
  check_robust("adml", config.robust)
  _require_attack(config, "adml")
  support_key, query_key = jax.random.split(key)
  xs_adv = attack_images(config, params, task.support_images,
                         task.support_labels, support_key)
  adapted_adv, _ = _adapt(params, xs_adv, task.support_labels, config,
                          config.adml_inner_lr_adv)
  adapted_clean, inner = _adapt(params, task.support_images,
                                task.support_labels, config, config.inner_lr)
  xq_adv = attack_images(config, adapted_clean, task.query_images,
                         task.query_labels, query_key)
  logits_adv_clean = config.apply_fn(adapted_adv, task.query_images)
  logits_clean_adv = config.apply_fn(adapted_clean, xq_adv)
  loss_clean = maml.cross_entropy(logits_adv_clean, task.query_labels)
  loss_adv = maml.cross_entropy(logits_clean_adv, task.query_labels)
  loss = config.adml_beta_clean * loss_clean + config.adml_beta_adv * loss_adv
  clean_logits = config.apply_fn(jax.lax.stop_gradient(adapted_clean),
                                 task.query_images)
  return loss, {
      "query_accuracy": maml.accuracy(clean_logits, task.query_labels),
      "adv_query_accuracy": maml.accuracy(logits_clean_adv, task.query_labels),
      "adv_support_query_accuracy": maml.accuracy(logits_adv_clean,
                                                  task.query_labels),
      "query_loss_clean": loss_clean, "query_loss_adv": loss_adv,
      "support_loss": inner["support_loss"][0]}


def _query_losses(per_example: Array, reduction: str) -> Array:
  return per_example.sum() if reduction == "sum" else per_example.mean()


def adversarial_query_loss(adaptation: Adaptation, params, task: Task,
                           key: Array, config: LearnerConfig, *,
                           reduction: str = "mean"):
  """Adversarial querying over any adaptation (AQ's and TAFL's per-task loss).

  The classifier is adapted to the clean support (θ' for MAML; prototypes or
  attention for a metric learner); the query is attacked by
  `config.train_attack` against that adapted classifier (SPEC, "Who is
  attacked"), and the perturbation, with the state the attacker saw, is
  `stop_gradient`ed. The loss is the cross-entropy of the adapted classifier
  on A(Q), whose meta-gradient flows through the adaptation (the inner loop,
  or the prototype / support-embedding computation).

  Args:
    adaptation: the learner's `Adaptation`.
    params: the meta-parameters θ.
    task: one task.
    key: the attack's randomness.
    config: holds `train_attack` and `inner_steps`.
    reduction: the per-task cross-entropy over the queries, "mean" or "sum"
      (TAFL's `tafl_reduction`).

  Returns:
    `(adversarial query cross-entropy, {"query_accuracy",
    "adv_query_accuracy", "adv_query_loss", "clean_query_loss"
    (stop_gradient'ed)[, "support_loss"]})`.
  """
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels,
                                  num_steps=config.inner_steps)
  xq_adv = attack_images(config, state, task.query_images, task.query_labels,
                         key, logits_fn=adaptation.logits)
  adv_logits = adaptation.logits(state, xq_adv)
  clean_logits = adaptation.logits(state, task.query_images)
  ce = optax.softmax_cross_entropy_with_integer_labels
  adv_loss = _query_losses(ce(adv_logits, task.query_labels), reduction)
  clean_loss = _query_losses(ce(clean_logits, task.query_labels), reduction)
  return adv_loss, {
      "query_accuracy": maml.accuracy(clean_logits, task.query_labels),
      "adv_query_accuracy": maml.accuracy(adv_logits, task.query_labels),
      "adv_query_loss": adv_loss,
      "clean_query_loss": jax.lax.stop_gradient(clean_loss),
      **_support_metrics(curve)}


@register("aq")
def aq_loss(params, task: Task, key: Array, config: LearnerConfig):
  """Adversarial Querying (Goldblum et al. 2020): L(θ', A_θ'(Q)).

  θ' is adapted on the clean support; the query is attacked (PGD by default)
  against θ', and the perturbation is a constant of the meta-loss.

  Returns:
    `(adversarial query cross-entropy, {"query_accuracy",
    "adv_query_accuracy", "adv_query_loss", "clean_query_loss",
    "support_loss"})`.
  """
  check_robust("aq", config.robust)
  _require_attack(config, "aq")
  return adversarial_query_loss(gradient_adaptation(config), params, task, key,
                                config)


def adversarial_robustness_loss(adv_losses: Array, clean_losses: Array, *,
                                delta: float) -> Array:
  """L_AR(τ) = max(L_CE(θ_τ, A(x_q)) − L_CE(θ_τ, x_q), δ) (TAFL seed, eq. 5)."""
  return jnp.maximum(adv_losses - clean_losses, delta)


def tafl_weights(adv_losses: Array, clean_losses: Array, *, gamma: float,
                 k: float, delta: float) -> Array:
  """TAFL's normalized modulating factors M̃(τ) (TAFL seed, eqs. 5–6).

  M(τ) = (1 − exp(−k·L_AR(τ)))^γ, linearly normalized within the task batch:
  M̃(τ) = B·M(τ)/Σ_τ' M(τ') (mean 1). γ = 0 gives uniform weights. The result
  is `stop_gradient`ed: the factors are not a function of θ to be minimized.

  Args:
    adv_losses: `[B]` per-task cross-entropy on the attacked queries.
    clean_losses: `[B]` per-task cross-entropy on the clean queries.
    gamma: γ >= 0, the focusing exponent.
    k: the scale of L_AR.
    delta: δ > 0, the floor of L_AR.

  Returns:
    `[B]` weights with mean 1.
  """
  l_ar = adversarial_robustness_loss(jax.lax.stop_gradient(adv_losses),
                                     jax.lax.stop_gradient(clean_losses),
                                     delta=delta)
  m = (-jnp.expm1(-k * l_ar)) ** gamma   # 1 − exp(−k·L_AR), accurate near δ
  return jax.lax.stop_gradient(m.shape[0] * m / m.sum())


def tafl_batch_combine(losses: Array, aux: Dict[str, Array],
                       config: LearnerConfig):
  """TAFL's batch loss: mean over tasks of M̃(τ)·L_CE(θ_τ, A(x_q)).

  Returns:
    `(loss, metrics)`: the batch mean and max of L_AR and of the weights.
  """
  weights = tafl_weights(aux["adv_query_loss"], aux["clean_query_loss"],
                         gamma=config.tafl_gamma, k=config.tafl_k,
                         delta=config.tafl_delta)
  l_ar = jax.lax.stop_gradient(adversarial_robustness_loss(
      aux["adv_query_loss"], aux["clean_query_loss"],
      delta=config.tafl_delta))
  return jnp.mean(weights * losses), {
      "tafl_l_ar_mean": l_ar.mean(), "tafl_l_ar_max": l_ar.max(),
      "tafl_weight_min": weights.min(), "tafl_weight_max": weights.max()}


@register("tafl", batch_combine=tafl_batch_combine)
def tafl_loss(params, task: Task, key: Array, config: LearnerConfig):
  """TAFL (TAFL seed, eqs. 5–6): AQ's loss, weighted per task in the batch.

  Per task this is the adversarial query cross-entropy L_CE(θ_τ, A(x_q)) (mean
  over the queries, or their sum with `tafl_reduction="sum"` as the seed
  writes it) plus the clean one for L_AR; `tafl_batch_combine` weights the
  tasks by M̃(τ).

  Returns:
    `(adversarial query cross-entropy, aux)` as `aq_loss`.
  """
  check_robust("tafl", config.robust)
  _require_attack(config, "tafl")
  return adversarial_query_loss(gradient_adaptation(config), params, task, key,
                                config, reduction=config.tafl_reduction)


# --- metric learners --------------------------------------------------------

@register("protonet", adaptation=prototype_adaptation,
          batch_combine=robust_batch_combine, metric=True, robust=True)
def protonet_loss(params, task: Task, key: Array, config: LearnerConfig):
  """Prototypical Networks (Snell et al. 2017) on conv4's embedding.

  Prototypes are the class means of the support embeddings; the loss is the
  query cross-entropy of the logits −‖f(x) − c_k‖², differentiated through
  the prototypes. `config.robust` "aq"/"tafl": adversarial querying / TAFL
  on this adaptation (`adaptation_loss`). `inner_steps` is not used.

  Returns:
    `(loss, aux)` as `clean_query_loss` or `adversarial_query_loss`.
  """
  return adaptation_loss(prototype_adaptation(config), params, task, key,
                         config, learner="protonet")


@register("matchingnet", adaptation=matching_adaptation,
          batch_combine=robust_batch_combine, metric=True, robust=True)
def matchingnet_loss(params, task: Task, key: Array, config: LearnerConfig):
  """Matching Networks (Vinyals et al. 2016), without full-context embeddings.

  The query's class probabilities are the cosine attention over the support
  embeddings summed per class; the loss is their negative log-likelihood on
  the query. `config.robust` as in `protonet_loss`; `inner_steps` is not used.

  Returns:
    `(loss, aux)` as `clean_query_loss` or `adversarial_query_loss`.
  """
  return adaptation_loss(matching_adaptation(config), params, task, key,
                         config, learner="matchingnet")
