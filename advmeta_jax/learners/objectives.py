"""Outer objectives: the meta-loss of one task, given a learner's adaptation.

An objective's per-task loss is one pure function

    loss(adaptation, params, task, key, *, attack, config) -> (loss, aux)

of an `adaptations.Adaptation` (how the classifier is built from the
support), the meta-parameters θ, ONE task (`episodes.Task` without the task
axis), a PRNG key, the built training attack (`(logits_fn, x, y, *, key) ->
x_adv`, or None) and the static `config.MetaConfig` (inner steps and the
objectives' hyperparameters). `aux` is a dict of scalars (metrics). The train
step vmaps it over the tasks and combines the per-task losses with the
objective's `batch_combine(per_task_losses, per_task_aux, config) -> (loss,
metrics)` (default: the mean over tasks; TAFL weights tasks by its
modulating factor).

    clean    L(adapted, Q_clean)                       (MAML, ProtoNet, ...)
    maml_ad  MAML on mixed clean + adversarial sets    (Yin et al., eqs. 2-3)
    adml     ADML, Algorithm 1                         (Yin et al.)
    aq       L(adapted, A(Q))                          (Goldblum et al. 2020)
    tafl     aq weighted per task by M̃(τ)              (Hou et al., eqs. 5-6)

Who is attacked: a query attack targets the adapted classifier of the task; a
support attack (ADML, MAML-AD) targets the meta-initialization θ. Every
adversarial example is `stop_gradient`ed before it enters a meta-loss, so the
meta-gradient never flows through an attack.

conv4's BatchNorm is transductive (models.py): each attack and each loss sees
the batch it is called on (the clean or the adversarial copy of a set, or their
concatenation for MAML-AD).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
import optax

from advmeta_jax.core import losses
from advmeta_jax.learners.adaptations import Adaptation
from advmeta_jax.learners.adaptations import support_metrics
from advmeta_jax.core.episodes import Task
from advmeta_jax.errors import ConfigError

Array = jax.Array
TAFL_REDUCTIONS = ("mean", "sum")
# TAFL's per-task weights: the paper's M̃(τ) (eqs. 5–6), or what the authors'
# code computes (`--adv-train AdvQ-rew`, `code_tafl_weight`).
TAFL_WEIGHTINGS = ("paper", "code")
# The `checkpoint_name` of every training attack's result (a rematerialized
# train step saves it instead of running the attack again).
ADVERSARIAL_IMAGES = "adversarial_images"

Loss = Callable[..., Tuple[Array, Dict[str, Array]]]
# (per-task losses [B], per-task aux {name: [B]}, config) -> (loss, metrics).
BatchCombine = Callable[[Array, Dict[str, Array], Any],
                        Tuple[Array, Dict[str, Array]]]


def mean_over_tasks(losses: Array, aux: Dict[str, Array],
                    config) -> Tuple[Array, Dict[str, Array]]:
  """The default batch combine: the mean outer loss over the task batch."""
  del aux, config
  return losses.mean(), {}


def one_update(config) -> None:
  """One meta-update per step on the batch loss (the default)."""
  del config
  return None


class AttackDefaults(NamedTuple):
  """The steps and step size of an objective's iterative training attack,
  used where --train_attack_steps / --train_step_size are not given.

  Attributes:
    steps: the number of steps.
    step_size: the step as a budget's text ("2/255"), or None when
      `step_of_eps` gives it.
    step_of_eps: the step as a multiple of the attack's ε (R-MAML's 1.25),
      or None.
  """
  steps: int = 7
  step_size: Optional[str] = "2/255"
  step_of_eps: Optional[float] = None


class Objective(NamedTuple):
  """A registered objective.

  Attributes:
    name: its registry name.
    loss: the per-task loss (module docstring).
    batch_combine: how the per-task losses of a batch combine.
    update_phases: `config -> None or (batch_combine, ...)`: several
      sequential meta-updates per step, one per combine (ADML's
      `adml_sequential`); None: one update.
    default_attack: `(attack, eps)` used when --train_attack / --train_eps
      are not given; None for an objective without a training attack.
    attack_defaults: the steps and step size of an iterative training
      attack when --train_attack_steps / --train_step_size are not given.
    kinds: the adaptation kinds it fits (None: every kind).
    robust: it may be put around another learner's adaptation (--robust).
    check_attack: `attack -> None`, refuses a training attack the objective
      cannot use (before anything compiles); None: any attack.
  """
  name: str
  loss: Loss
  batch_combine: BatchCombine = mean_over_tasks
  update_phases: Callable[[Any], Optional[Tuple[BatchCombine, ...]]] = (
      one_update)
  default_attack: Optional[Tuple[str, str]] = None
  attack_defaults: AttackDefaults = AttackDefaults()
  kinds: Optional[Tuple[str, ...]] = None
  robust: bool = False
  check_attack: Optional[Callable[[Any], Any]] = None

  @property
  def needs_attack(self) -> bool:
    return self.default_attack is not None


def require_attack(attack, what: str) -> None:
  """Refuses to run an adversarial objective without a training attack."""
  if attack is None:
    raise ConfigError(
        f"{what} needs a training attack: pass one built by "
        "attacks.make_attack, or --train_attack when training from flags.")


def attack_images(attack, logits_of: Callable, params, images: Array,
                  labels: Array, key: Array) -> Array:
  """`attack` against the classifier `logits_of(params, ·)`, `stop_gradient`ed.

  The parameters the attacker sees are constants too: the perturbation is a
  fixed input to the meta-loss, no gradient flows through it.

  Args:
    attack: `(logits_fn, x, y, *, key) -> x_adv`.
    logits_of: `(params, images) -> logits` of the attacked classifier
      (e.g. `Adaptation.logits` and an adapted state).
    params: what `logits_of` takes (θ, θ' or an adapted state).
    images, labels: the set to attack.
    key: the attack's randomness.
  """
  frozen = jax.lax.stop_gradient(params)
  x_adv = jax.lax.stop_gradient(attack(lambda x: logits_of(frozen, x), images,
                                       labels, key=key))
  # Named so that a rematerialized train step keeps it, not the attack.
  return checkpoint_name(x_adv, ADVERSARIAL_IMAGES)


def _query_losses(per_example: Array, reduction: str) -> Array:
  return per_example.sum() if reduction == "sum" else per_example.mean()


# --- clean ------------------------------------------------------------------

def clean_query_loss(adaptation: Adaptation, params, task: Task, key: Array,
                     *, attack=None, config):
  """L(adapted, Q_clean): the query cross-entropy of the classifier that
  `adaptation` builds from the clean support (`config.inner_steps` steps for
  a gradient learner). The objective of maml, protonet and matchingnet.

  Returns:
    `(query cross-entropy, {"query_accuracy"[, "support_loss"]})`.
  """
  del key, attack
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels,
                                  num_steps=config.inner_steps)
  logits = adaptation.logits(state, task.query_images)
  loss = losses.cross_entropy(logits, task.query_labels)
  return loss, {"query_accuracy": losses.accuracy(logits, task.query_labels),
                **support_metrics(curve)}


# --- MAML-AD and ADML -------------------------------------------------------

def _subset(images: Array, labels: Array, fraction: float, key: Array):
  """A random `fraction` of a set (all of it, in order, when fraction is 1)."""
  n = images.shape[0]
  n_adv = max(1, int(round(fraction * n)))
  if n_adv == n:
    return images, labels
  idx = jax.random.permutation(key, n)[:n_adv]
  return images[idx], labels[idx]


def maml_ad_loss(adaptation: Adaptation, params, task: Task, key: Array, *,
                 attack, config):
  """MAML-AD, MAML on mixed clean + adversarial sets (Yin et al., eqs. 2–3).

  D_i = S_clean ∪ A_θ(S') and D'_i = Q_clean ∪ A_θ'(Q'), where S', Q' are
  random `adv_fraction` subsets (both full copies by default); the support
  attack targets θ, the query attack the adapted θ'.
  θ' = adapt(θ, D_i) (eq. 2); the outer loss is L(θ', D'_i) (eq. 3).

  Returns:
    `(mixed query cross-entropy, {"query_accuracy", "adv_query_accuracy",
    "support_loss"})`.
  """
  require_attack(attack, "objective 'maml_ad'")
  sel_s, att_s, sel_q, att_q = jax.random.split(key, 4)
  xs, ys = _subset(task.support_images, task.support_labels,
                   config.adv_fraction, sel_s)
  initial = lambda p, x: adaptation.initial_logits(p, xs, ys, x)
  xs_adv = attack_images(attack, initial, params, xs, ys, att_s)
  adapted, inner = adaptation.adapt(
      params, jnp.concatenate([task.support_images, xs_adv]),
      jnp.concatenate([task.support_labels, ys]),
      num_steps=config.inner_steps)
  xq, yq = _subset(task.query_images, task.query_labels, config.adv_fraction,
                   sel_q)
  xq_adv = attack_images(attack, adaptation.logits, adapted, xq, yq, att_q)
  logits = adaptation.logits(adapted,
                             jnp.concatenate([task.query_images, xq_adv]))
  loss = losses.cross_entropy(logits, jnp.concatenate([task.query_labels, yq]))
  n = task.query_images.shape[0]
  return loss, {
      "query_accuracy": losses.accuracy(logits[:n], task.query_labels),
      "adv_query_accuracy": losses.accuracy(logits[n:], yq),
      "support_loss": inner["support_loss"][0]}


def adml_phases(config):
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


def adml_loss(adaptation: Adaptation, params, task: Task, key: Array, *,
              attack, config):
  """ADML (Yin et al., Algorithm 1), one-update form.

  θ'_adv = adapt(θ, S_adv; α1) with S_adv = A_θ(S) (the support attack targets
  the meta-initialization); θ'_c = adapt(θ, S_clean; α2) (line 7). The outer
  loss is β1·L(θ'_adv, Q_clean) + β2·L(θ'_c, Q_adv), with Q_adv = A_θ'_c(Q)
  (line 9; the query attack targets θ'_c). By default one Adam step on this
  sum replaces the two sequential updates of line 11; `adml_sequential` takes
  them in turn (`adml_phases`), each an Adam step of the shared meta-optimizer
  on its β-weighted term, the second recomputed at the updated θ (same tasks
  and key).

  Returns:
    `(weighted loss, {"query_accuracy" (θ'_c on Q_clean),
    "adv_query_accuracy" (θ'_c on Q_adv), "adv_support_query_accuracy"
    (θ'_adv on Q_clean), "query_loss_clean", "query_loss_adv",
    "support_loss"})`.
  """
  require_attack(attack, "objective 'adml'")
  support_key, query_key = jax.random.split(key)
  xs, ys = task.support_images, task.support_labels
  xs_adv = attack_images(
      attack, lambda p, x: adaptation.initial_logits(p, xs, ys, x), params,
      xs, ys, support_key)
  adapted_adv, _ = adaptation.adapt(params, xs_adv, ys,
                                    num_steps=config.inner_steps,
                                    inner_lr=config.adml_inner_lr_adv)
  adapted_clean, inner = adaptation.adapt(params, xs, ys,
                                          num_steps=config.inner_steps)
  xq_adv = attack_images(attack, adaptation.logits, adapted_clean,
                         task.query_images, task.query_labels, query_key)
  logits_adv_clean = adaptation.logits(adapted_adv, task.query_images)
  logits_clean_adv = adaptation.logits(adapted_clean, xq_adv)
  loss_clean = losses.cross_entropy(logits_adv_clean, task.query_labels)
  loss_adv = losses.cross_entropy(logits_clean_adv, task.query_labels)
  loss = config.adml_beta_clean * loss_clean + config.adml_beta_adv * loss_adv
  clean_logits = adaptation.logits(jax.lax.stop_gradient(adapted_clean),
                                   task.query_images)
  return loss, {
      "query_accuracy": losses.accuracy(clean_logits, task.query_labels),
      "adv_query_accuracy": losses.accuracy(logits_clean_adv, task.query_labels),
      "adv_support_query_accuracy": losses.accuracy(logits_adv_clean,
                                                  task.query_labels),
      "query_loss_clean": loss_clean, "query_loss_adv": loss_adv,
      "support_loss": inner["support_loss"][0]}


# --- AQ and TAFL ------------------------------------------------------------

def adversarial_query_loss(adaptation: Adaptation, params, task: Task,
                           key: Array, *, attack, config,
                           reduction: str = "mean",
                           code_weight_gamma: Optional[float] = None):
  """Adversarial querying over any adaptation (AQ's and TAFL's per-task loss).

  The classifier is adapted to the clean support (θ' for MAML; prototypes or
  attention for a metric learner); the query is attacked by `attack` against
  that adapted classifier, and the perturbation, with the state the attacker
  saw, is `stop_gradient`ed. The loss is the cross-entropy of the adapted
  classifier on A(Q), whose meta-gradient flows through the adaptation (the
  inner loop, or the prototype / support-embedding computation).

  Args:
    adaptation: the learner's `Adaptation`.
    params: the meta-parameters θ.
    task: one task.
    key: the attack's randomness.
    attack: the training attack.
    config: holds `inner_steps`.
    reduction: the per-task cross-entropy over the queries, "mean" or "sum"
      (TAFL's `tafl_reduction`).
    code_weight_gamma: also return the TAFL code's task weight
      (`code_tafl_weight`) with this exponent, as "tafl_code_weight".

  Returns:
    `(adversarial query cross-entropy, {"query_accuracy",
    "adv_query_accuracy", "adv_query_loss", "clean_query_loss"
    (stop_gradient'ed)[, "support_loss"][, "tafl_code_weight"]})`.
  """
  require_attack(attack, "adversarial querying")
  state, curve = adaptation.adapt(params, task.support_images,
                                  task.support_labels,
                                  num_steps=config.inner_steps)
  xq_adv = attack_images(attack, adaptation.logits, state, task.query_images,
                         task.query_labels, key)
  adv_logits = adaptation.logits(state, xq_adv)
  clean_logits = adaptation.logits(state, task.query_images)
  ce = optax.softmax_cross_entropy_with_integer_labels
  adv_loss = _query_losses(ce(adv_logits, task.query_labels), reduction)
  clean_loss = _query_losses(ce(clean_logits, task.query_labels), reduction)
  aux = {
      "query_accuracy": losses.accuracy(clean_logits, task.query_labels),
      "adv_query_accuracy": losses.accuracy(adv_logits, task.query_labels),
      "adv_query_loss": adv_loss,
      "clean_query_loss": jax.lax.stop_gradient(clean_loss),
      **support_metrics(curve)}
  if code_weight_gamma is not None:
    aux["tafl_code_weight"] = code_tafl_weight(adv_logits, task.query_labels,
                                               gamma=code_weight_gamma)
  return adv_loss, aux


def aq_loss(adaptation: Adaptation, params, task: Task, key: Array, *,
            attack, config):
  """Adversarial Querying (Goldblum et al. 2020, "Adversarially Robust
  Few-Shot Learning: A Meta-Learning Approach"): L(θ', A_θ'(Q)), θ' adapted
  on the clean support, the query attacked (PGD by default) against θ'."""
  return adversarial_query_loss(adaptation, params, task, key, attack=attack,
                                config=config)


def adversarial_robustness_loss(adv_losses: Array, clean_losses: Array, *,
                                delta: float) -> Array:
  """L_AR(τ) = max(L_CE(θ_τ, A(x_q)) − L_CE(θ_τ, x_q), δ) (TAFL, eq. 5)."""
  return jnp.maximum(adv_losses - clean_losses, delta)


def _check_tafl(gamma, k, delta) -> None:
  """Refuses γ < 0, k ≤ 0, δ ≤ 0 given as concrete numbers (traced values
  cannot be checked under jit)."""
  for name, value, ok, allowed in (("gamma", gamma, lambda v: v >= 0, ">= 0"),
                                   ("k", k, lambda v: v > 0, "> 0"),
                                   ("delta", delta, lambda v: v > 0, "> 0")):
    if isinstance(value, (int, float)) and not (
        math.isfinite(value) and ok(value)):
      raise ConfigError(f"TAFL's {name} must be a finite number {allowed}, "
                        f"got {value}.")


def tafl_weights(adv_losses: Array, clean_losses: Array, *, gamma: float,
                 k: float, delta: float) -> Array:
  """TAFL's normalized modulating factors M̃(τ) (TAFL, eqs. 5–6).

  M(τ) = (1 − exp(−k·L_AR(τ)))^γ, linearly normalized within the task batch:
  M̃(τ) = B·M(τ)/Σ_τ' M(τ') (mean 1). γ = 0 gives uniform weights. The result
  is `stop_gradient`ed: the factors are not a function of θ to be minimized.

  Computed in log space, log M = γ·log(−expm1(−k·L_AR)), and normalized as
  B·softmax(log M): the same numbers as the formula where it is finite, and
  finite for every valid (γ, k, δ), where M itself underflows to 0/0 (e.g.
  γ = 30, k = 0.01, every L_AR at δ). Equal L_AR give exactly equal weights.

  Args:
    adv_losses: `[B]` per-task cross-entropy on the attacked queries.
    clean_losses: `[B]` per-task cross-entropy on the clean queries.
    gamma: γ >= 0, the focusing exponent.
    k: k > 0, the scale of L_AR.
    delta: δ > 0, the floor of L_AR.

  Returns:
    `[B]` weights with mean 1.

  Raises:
    ConfigError: γ < 0, k <= 0 or δ <= 0 (as Python numbers).
  """
  _check_tafl(gamma, k, delta)
  l_ar = adversarial_robustness_loss(jax.lax.stop_gradient(adv_losses),
                                     jax.lax.stop_gradient(clean_losses),
                                     delta=delta)
  # 1 − exp(−k·L_AR), accurate near δ; > 0 since L_AR >= δ > 0 and k > 0
  # (floored at the smallest normal number where k·δ underflows).
  base = jnp.maximum(-jnp.expm1(-k * l_ar), jnp.finfo(l_ar.dtype).tiny)
  log_m = gamma * jnp.log(base)
  return jax.lax.stop_gradient(log_m.shape[0] * jax.nn.softmax(log_m))


def code_tafl_weight(adv_logits: Array, labels: Array, *,
                     gamma: float = 2.0) -> Array:
  """The task weight of the TAFL authors' code (evan69/MAML-Def-Repo,
  `maml/metalearner.py`, `--adv-train AdvQ-rew`): with p the softmax of the
  adversarial query logits, the mean over queries × classes of
  (1 − p_y)^γ at the true class and p_j^γ at the others, `stop_gradient`ed
  (γ = 2 in that code). Not normalized over the batch.

  Args:
    adv_logits: `[Q, N]` logits of the attacked queries.
    labels: `[Q]` integer labels.
    gamma: the exponent.

  Returns:
    A scalar in [0, 1].
  """
  p = jax.nn.softmax(jax.lax.stop_gradient(adv_logits), axis=-1)
  one_hot = jax.nn.one_hot(labels, p.shape[-1], dtype=p.dtype)
  w = one_hot * (1 - p) + (1 - one_hot) * p
  return jnp.mean(w ** gamma)


def tafl_batch_combine(losses: Array, aux: Dict[str, Array], config):
  """TAFL's batch loss: mean over tasks of M̃(τ)·L_CE(θ_τ, A(x_q)), or with
  `tafl_weighting="code"` of the code's weight (`code_tafl_weight`).

  Returns:
    `(loss, metrics)`: the batch mean and max of L_AR and of the weights.
  """
  if config.tafl_weighting == "code":
    weights = jax.lax.stop_gradient(aux["tafl_code_weight"])
  else:
    weights = tafl_weights(aux["adv_query_loss"], aux["clean_query_loss"],
                           gamma=config.tafl_gamma, k=config.tafl_k,
                           delta=config.tafl_delta)
  l_ar = jax.lax.stop_gradient(adversarial_robustness_loss(
      aux["adv_query_loss"], aux["clean_query_loss"],
      delta=config.tafl_delta))
  return jnp.mean(weights * losses), {
      "tafl_l_ar_mean": l_ar.mean(), "tafl_l_ar_max": l_ar.max(),
      "tafl_weight_min": weights.min(), "tafl_weight_max": weights.max()}


def tafl_loss(adaptation: Adaptation, params, task: Task, key: Array, *,
              attack, config):
  """TAFL (Hou et al., eqs. 5–6): AQ's loss, weighted per task in the batch.

  Per task this is the adversarial query cross-entropy L_CE(θ_τ, A(x_q)) (mean
  over the queries, or their sum with `tafl_reduction="sum"` as the paper
  writes it) plus the clean one for L_AR; `tafl_batch_combine` weights the
  tasks by M̃(τ).
  """
  return adversarial_query_loss(
      adaptation, params, task, key, attack=attack, config=config,
      reduction=config.tafl_reduction,
      code_weight_gamma=(config.tafl_gamma if config.tafl_weighting == "code"
                         else None))


# --- registry ---------------------------------------------------------------

OBJECTIVES: Dict[str, Objective] = {o.name: o for o in (
    Objective("clean", clean_query_loss),
    Objective("maml_ad", maml_ad_loss, default_attack=("fgsm", "2/255"),
              kinds=("gradient",)),
    Objective("adml", adml_loss, update_phases=adml_phases,
              default_attack=("fgsm", "2/255"), kinds=("gradient",)),
    Objective("aq", aq_loss, default_attack=("pgd", "8/255"), robust=True),
    Objective("tafl", tafl_loss, batch_combine=tafl_batch_combine,
              default_attack=("pgd", "8/255"), robust=True),
)}


def get(name: str) -> Objective:
  """The objective `name`; a clear error for unknown names."""
  if name not in OBJECTIVES:
    raise ConfigError(f"unknown objective {name!r}; choose one of: "
                      f"{', '.join(OBJECTIVES)}.")
  return OBJECTIVES[name]


def register(objective: Objective) -> Objective:
  """Adds an objective; returns it."""
  OBJECTIVES[objective.name] = objective
  return objective
