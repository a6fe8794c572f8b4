"""The gradient attacks (FGSM/FGM, PGD, MI-FGSM, APGD, APGD-T), losses and
helpers. L∞ by default; FGSM, PGD, APGD and APGD-T take `norm="L2"` for
their L2 versions (the norm-specific steps, projections and starts are in
norms.py).

Every attack is `attack(logits_fn, x, y, *, <hyperparameters>) -> x_adv` with
`x_adv` in [0, 1] and inside the ε-ball of its norm around `x`; the package
docstring (`advmeta_jax.attacks`) states the conventions. The losses (`margin`,
`cross_entropy_per_example`, `dlr_loss`) and `Array`/`LogitsFn` are shared
with the C&W attack (`cw.py`) and the gradient-masking checks (`masking.py`).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advmeta_jax.attacks.checks import check_eps
from advmeta_jax.attacks.checks import check_inputs
from advmeta_jax.attacks.checks import check_non_negative
from advmeta_jax.attacks.checks import check_positive
from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.norms import apgd_start
from advmeta_jax.attacks.norms import canonical_norm
from advmeta_jax.attacks.norms import per_example
from advmeta_jax.attacks.norms import project
from advmeta_jax.attacks.norms import project_linf
from advmeta_jax.attacks.norms import random_start as norm_random_start
from advmeta_jax.attacks.norms import steepest_ascent
from advmeta_jax.errors import ConfigError

Array = jax.Array
LogitsFn = Callable[[Array], Array]

APGD_LOSSES = ("ce", "dlr")


# --- losses -----------------------------------------------------------------

def cross_entropy_per_example(logits: Array, labels: Array) -> Array:
  """Softmax cross-entropy of each example, `[N]`."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def margin(logits: Array, labels: Array) -> Array:
  """Z_y − max_{i≠y} Z_i per example, `[N]` (< 0 ⇔ misclassified)."""
  logits = logits.astype(jnp.float32)
  is_label = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  z_y = jnp.sum(jnp.where(is_label, logits, 0.0), axis=-1)
  z_other = jnp.max(jnp.where(is_label, -jnp.inf, logits), axis=-1)
  return z_y - z_other


def dlr_loss(logits: Array, labels: Array) -> Array:
  """Difference of Logits Ratio (Croce & Hein 2020, eq. 6), per example.

  DLR(x, y) = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), with z_π the logits
  sorted in decreasing order. Invariant to shifting and rescaling the logits.

  Raises:
    ConfigError: fewer than 3 classes (z_π3 does not exist).
  """
  num_classes = logits.shape[-1]
  if num_classes < 3:
    raise ConfigError(
        f"the DLR loss needs at least 3 classes, the model has {num_classes}; "
        "use loss='ce'.")
  ordered = jnp.sort(logits.astype(jnp.float32), axis=-1)
  return -margin(logits, labels) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


LOSSES = {"ce": cross_entropy_per_example, "dlr": dlr_loss}


def _loss_and_input_gradient(logits_fn: LogitsFn, loss_fn, x: Array,
                             y: Array) -> Tuple[Array, Array, Array]:
  """(per-example loss `[N]`, ∇x Σ_n loss_n, logits) at `x`."""
  def total(z):
    logits = logits_fn(z)
    per_example = loss_fn(logits, y)
    return jnp.sum(per_example), (per_example, logits)
  (_, (per_example, logits)), grad = jax.value_and_grad(
      total, has_aux=True)(x)
  return per_example, grad, logits


def check_norm_and_eps(norm, eps, x, y) -> str:
  """The canonical norm, after checking ε under it and the inputs."""
  norm = canonical_norm(norm)
  check_inputs(x, y)
  check_eps(eps, norm=norm, x=x)
  return norm


# --- attacks ----------------------------------------------------------------

def fgsm(logits_fn: LogitsFn, x: Array, y: Array, *, eps,
         norm: str = "Linf") -> Array:
  """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy 2015, eq. 3).

  x_adv = clip_[0,1](x + ε · sign(∇x L_CE(f(x), y))). ADML (Yin et al. 2018)
  trains and tests with it. `norm="L2"` is the fast gradient method FGM,
  x + ε · ∇/‖∇‖₂ per example (advertorch's `GradientAttack`).

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1] (8/255 is 8 grey levels), or the L2
      radius (>= 0, at most √d).
    norm: "Linf" or "L2" (any case).

  Returns:
    `x_adv`, shape and dtype of `x`.

  Raises:
    ConfigError: ε out of range for its norm, or non-float images.
  """
  norm = check_norm_and_eps(norm, eps, x, y)
  eps = jnp.asarray(eps, x.dtype)
  _, grad, _ = _loss_and_input_gradient(logits_fn, cross_entropy_per_example,
                                        x, y)
  return project(norm, x + eps * steepest_ascent(norm, grad, x.dtype), x, eps)


def pgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps, step_size,
        num_steps: int, key: Optional[Array] = None,
        random_start: bool = True, norm: str = "Linf") -> Array:
  """Projected gradient descent (Madry et al. 2018, eq. 2.1), L∞ or L2.

  L∞: x⁰ = x + U(−ε, ε) (random start, projected to [0, 1]) or x;
  x^{t+1} = Π_{B∞(x, ε) ∩ [0,1]}(x^t + a · sign(∇x L_CE(f(x^t), y))).
  L2 (torchattacks' `PGDL2`): x⁰ = `norms.l2_random_start` (a uniform
  direction at a radius U(0, ε)) or x; x^{t+1} = Π₂(x^t + a · ∇/‖∇‖₂),
  Π₂ = `norms.project_l2`. Returns the last iterate. AQ and TAFL use
  ε = 8/255, a = 2/255, 7 steps in training and 20 at test.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1] or the L2 radius.
    step_size: a > 0, the size of each signed (L2: normalized) step.
    num_steps: T >= 0 (a Python int); 0 returns the (random) start.
    key: PRNG key of the random start; required when `random_start`.
    random_start: start from a random point of the ε-ball (Madry et al.).
    norm: "Linf" or "L2" (any case).

  Returns:
    `x_adv`, shape and dtype of `x`.

  Raises:
    ConfigError: a hyperparameter out of range, or `random_start` without key.
  """
  norm = check_norm_and_eps(norm, eps, x, y)
  check_positive(step_size, "step_size")
  num_steps = check_steps(num_steps)
  if not isinstance(random_start, bool):
    raise ConfigError(f"random_start must be True or False, got "
                      f"{random_start!r}.")
  if random_start and key is None:
    raise ConfigError("pgd with random_start=True needs a PRNG key: pass "
                      "key=jax.random.key(...), or random_start=False.")
  eps = jnp.asarray(eps, x.dtype)
  x_start = norm_random_start(norm, key, x, eps) if random_start else x
  return pgd_iterations(logits_fn, x, y, x_start, eps=eps,
                         step_size=step_size, num_steps=num_steps, norm=norm)


def pgd_iterations(logits_fn: LogitsFn, x: Array, y: Array, x_start: Array,
                    *, eps, step_size, num_steps, norm: str = "Linf"
                    ) -> Array:
  """`num_steps` PGD steps of `norm` from `x_start` (`num_steps` may be
  traced)."""
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(step_size, x.dtype)

  def step(_, x_adv):
    _, grad, _ = _loss_and_input_gradient(
        logits_fn, cross_entropy_per_example, x_adv, y)
    return project(norm, x_adv + step_size * steepest_ascent(
        norm, grad, x.dtype), x, eps)

  return jax.lax.fori_loop(0, num_steps, step, x_start)


def mi_fgsm(logits_fn: LogitsFn, x: Array, y: Array, *, eps, num_steps: int,
            decay=1.0, step_size=None) -> Array:
  """Momentum iterative FGSM (Dong et al. 2018, "Boosting Adversarial Attacks
  with Momentum", Algorithm 1, eqs. 6–7).

  g_{t+1} = μ · g_t + ∇x L(x^t) / ‖∇x L(x^t)‖₁   (per example),
  x^{t+1} = Π_{B∞(x, ε) ∩ [0,1]}(x^t + a · sign(g_{t+1})),  x⁰ = x, g₀ = 0.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1].
    num_steps: T >= 0 (a Python int).
    decay: μ >= 0, the momentum decay (1.0 in the paper).
    step_size: a > 0; default ε / T, so that T steps can just reach the
      boundary of the ball, as in the paper.

  Returns:
    `x_adv`, shape and dtype of `x`.

  Raises:
    ConfigError: a hyperparameter out of range.
  """
  check_eps(eps)
  num_steps = check_steps(num_steps)
  check_non_negative(decay, "decay")
  if step_size is not None:
    check_positive(step_size, "step_size")
  check_inputs(x, y)
  if num_steps == 0:
    return x
  eps = jnp.asarray(eps, x.dtype)
  step_size = eps / num_steps if step_size is None else jnp.asarray(
      step_size, x.dtype)
  decay = jnp.asarray(decay, jnp.float32)
  axes = tuple(range(1, x.ndim))

  def step(_, carry):
    x_adv, momentum = carry
    _, grad, _ = _loss_and_input_gradient(
        logits_fn, cross_entropy_per_example, x_adv, y)
    grad = grad.astype(jnp.float32)
    l1 = jnp.sum(jnp.abs(grad), axis=axes, keepdims=True)
    momentum = decay * momentum + grad / (l1 + 1e-12)
    x_adv = project_linf(
        x_adv + step_size * jnp.sign(momentum).astype(x.dtype), x, eps)
    return x_adv, momentum

  x_adv, _ = jax.lax.fori_loop(
      0, num_steps, step, (x, jnp.zeros(x.shape, jnp.float32)))
  return x_adv


def apgd_checkpoints(num_steps: int) -> Tuple[int, ...]:
  """APGD's checkpoints w_j = ⌈p_j · N_iter⌉ (Croce & Hein 2020, §3.2).

  p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06); the
  checkpoints are the distinct w_j in 1..N_iter.
  """
  points, previous, current = [], 0.0, 0.22
  while current <= 1.0:
    w = math.ceil(current * num_steps - 1e-9)
    if 1 <= w <= num_steps and (not points or w > points[-1]):
      points.append(w)
    previous, current = current, current + max(current - previous - 0.03,
                                               0.06)
  return tuple(points)


def apgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps, num_steps: int,
         key: Array, loss: str = "ce", norm: str = "Linf") -> Array:
  """Auto-PGD, L∞ or L2 (Croce & Hein 2020, "Reliable evaluation of
  adversarial robustness with an ensemble of diverse parameter-free
  attacks", Alg. 1; arXiv:2003.01690).

  Per example: step size η⁽⁰⁾ = 2ε; momentum α = 0.75:
      z^{k+1} = Π(x^k + η sign(∇f(x^k))),
      x^{k+1} = Π(x^k + α(z^{k+1} − x^k) + (1 − α)(x^k − x^{k−1}))
  (α = 1 at the first step), Π the projection onto B∞(x, ε) ∩ [0, 1]. At the
  checkpoints w_j (`apgd_checkpoints`) the step size is halved and the iterate
  restarts from the best point x_max (with no momentum) if
    1. fewer than ρ·(w_j − w_{j−1}) of the steps since w_{j−1} raised the
       loss (ρ = 0.75), or
    2. the step size was not halved at w_{j−1} and the best loss has not
       improved since.
  Starts at a uniform random point of the ε-ball (from `key`). With
  `norm="L2"` (AutoAttack's `autopgd_base.py`, L2 branch) the step is
  η ∇/‖∇‖₂ instead of η sign(∇), Π is `norms.project_l2` and the start is
  x + ε u, u uniform on the unit sphere; η⁽⁰⁾ = 2ε and the checkpoints are
  the same. Returns per
  example the last iterate at which it was misclassified, if any, else the
  point of highest loss (AutoAttack's `x_best_adv` / `x_best`). This follows
  the paper where AutoAttack's code differs slightly: checkpoints ⌈p_j·N⌉
  (the code rounds interval lengths down, and checks every step for short
  runs), "fewer than" in condition 1 (the code: "at most"), and no momentum
  across a restart. The checkpoint schedule is static, so the loop is one
  `lax.fori_loop`. Under transductive BatchNorm the per-example choice is made
  in each iteration's batch; measured on a trained conv4, re-evaluating the
  returned batch gives the same accuracy within 1 point.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1] or the L2 radius.
    num_steps: N_iter >= 0 (a Python int; 100 in AutoAttack).
    key: PRNG key of the random start.
    loss: "ce" (APGD-CE) or "dlr" (APGD-DLR, needs >= 3 classes).
    norm: "Linf" or "L2" (any case).

  Returns:
    `x_adv`, shape and dtype of `x`.

  Raises:
    ConfigError: a hyperparameter out of range or an unknown loss.
  """
  norm = check_norm_and_eps(norm, eps, x, y)
  num_steps = check_steps(num_steps)
  if loss not in LOSSES:
    raise ConfigError(f"unknown APGD loss {loss!r}; choose one of: "
                      f"{', '.join(APGD_LOSSES)}.")
  if key is None:
    raise ConfigError("apgd needs a PRNG key for its random start: pass "
                      "key=jax.random.key(...).")
  eps = jnp.asarray(eps, x.dtype)
  x_out, _ = apgd_run(logits_fn, LOSSES[loss], x, y,
                       apgd_start(norm, key, x, eps), eps=eps,
                       num_steps=num_steps, norm=norm)
  return x_out


def eot_loss_and_input_gradient(keyed_logits_fn, loss_fn, x: Array,
                                 y: Array, key: Array, eot_iter: int
                                 ) -> Tuple[Array, Array, Array]:
  """Expectation over transformation (Athalye et al. 2018) for a randomized
  model `keyed_logits_fn(x, key)`: the input gradient averaged over
  `eot_iter` draws of the model's randomness (run one after another), the
  loss and logits of the last draw (AutoAttack's `eot_iter`)."""
  def one(k):
    return _loss_and_input_gradient(lambda z: keyed_logits_fn(z, k), loss_fn,
                                    x, y)
  losses, grads, logits = jax.lax.map(one, jax.random.split(key, eot_iter))
  return losses[-1], jnp.mean(grads, axis=0), logits[-1]


def apgd_run(logits_fn: LogitsFn, loss_fn, x: Array, y: Array, x0: Array, *,
              eps: Array, num_steps: int, loss_and_gradient=None,
              norm: str = "Linf") -> Tuple[Array, Array]:
  """One APGD run of `norm` from `x0` (see `apgd`); `loss_fn(logits, y)`
  per example.

  `loss_and_gradient(x, i) -> (loss [N], ∇x, logits)` at iterate i replaces
  the plain gradient of `logits_fn` (EOT for randomized models).

  Returns:
    (x_out, fooled): per example the last misclassified iterate if any
    (`fooled`), else the point of highest loss.
  """
  rho, alpha = 0.75, 0.75
  n = x.shape[0]

  checkpoints = apgd_checkpoints(num_steps)
  is_checkpoint = np.zeros(max(num_steps, 1), bool)
  window = np.ones(max(num_steps, 1), np.float32)
  previous = 0
  for w in checkpoints:   # loop index i produces x^{(i+1)}
    is_checkpoint[w - 1] = True
    window[w - 1] = w - previous
    previous = w
  is_checkpoint, window = jnp.asarray(is_checkpoint), jnp.asarray(window)

  if loss_and_gradient is None:
    loss_and_gradient = lambda z, i: _loss_and_input_gradient(
        logits_fn, loss_fn, z, y)
  loss0, grad0, logits0 = loss_and_gradient(x0, 0)
  fooled0 = jnp.argmax(logits0, axis=-1) != y

  state = dict(
      x=x0, x_prev=x0, grad=grad0, loss=loss0,
      step=jnp.full((n,), 2.0, jnp.float32) * eps.astype(jnp.float32),
      x_best=x0, grad_best=grad0, loss_best=loss0,
      x_adv=x0, fooled=fooled0,
      increases=jnp.zeros((n,), jnp.float32),
      loss_best_last_check=loss0, reduced_last_check=jnp.ones((n,), bool))

  def iteration(i, s):
    step = per_example(s["step"], x).astype(x.dtype)
    a = jnp.where(i == 0, 1.0, alpha).astype(x.dtype)
    z = project(norm, s["x"] + step * steepest_ascent(norm, s["grad"],
                                                       x.dtype), x, eps)
    x_new = project(
        norm, s["x"] + a * (z - s["x"]) + (1 - a) * (s["x"] - s["x_prev"]),
        x, eps)
    loss_new, grad_new, logits = loss_and_gradient(x_new, i + 1)

    fooled_now = jnp.argmax(logits, axis=-1) != y
    x_adv = jnp.where(per_example(fooled_now, x), x_new, s["x_adv"])
    fooled = s["fooled"] | fooled_now
    increases = s["increases"] + (loss_new > s["loss"]).astype(jnp.float32)
    improved = loss_new > s["loss_best"]
    x_best = jnp.where(per_example(improved, x), x_new, s["x_best"])
    grad_best = jnp.where(per_example(improved, x), grad_new, s["grad_best"])
    loss_best = jnp.where(improved, loss_new, s["loss_best"])

    # Checkpoint: halve the step and restart from x_best where it stalled.
    check = is_checkpoint[i]
    oscillating = increases < rho * window[i]
    stalled = (~s["reduced_last_check"]) & (
        s["loss_best_last_check"] >= loss_best)
    reduce = check & (oscillating | stalled)
    reduce_x = per_example(reduce, x)
    return dict(
        x=jnp.where(reduce_x, x_best, x_new),
        x_prev=jnp.where(reduce_x, x_best, s["x"]),
        grad=jnp.where(reduce_x, grad_best, grad_new),
        loss=jnp.where(reduce, loss_best, loss_new),
        step=jnp.where(reduce, 0.5 * s["step"], s["step"]),
        x_best=x_best, grad_best=grad_best, loss_best=loss_best,
        x_adv=x_adv, fooled=fooled,
        increases=jnp.where(check, 0.0, increases),
        loss_best_last_check=jnp.where(check, loss_best,
                                       s["loss_best_last_check"]),
        reduced_last_check=jnp.where(check, reduce, s["reduced_last_check"]))

  state = jax.lax.fori_loop(0, num_steps, iteration, state)
  x_out = jnp.where(per_example(state["fooled"], x), state["x_adv"],
                    state["x_best"])
  return x_out, state["fooled"]



# --- helpers of the targeted attacks and of AutoAttack ------------------------

def num_classes_of(logits_fn: LogitsFn, x: Array) -> int:
  """The number of classes of `logits_fn` (from its output shape, no FLOPs)."""
  return int(jax.eval_shape(logits_fn, x).shape[-1])


def hold_inactive(logits_fn: LogitsFn, active: Array, x_held: Array) -> LogitsFn:
  """`logits_fn` with the inactive examples held at `x_held`.

  The attacked batch keeps its static shape: the examples that are done
  (fooled already, or misclassified from the start) stay in the batch at
  `x_held` (their adversarial example, or `x`) and get no gradient, while
  the active ones are attacked. Without batch coupling this is the
  reference's "attack only the remaining points"; with transductive
  BatchNorm it keeps the batch the model sees close to the returned one.
  """
  def held(z, *args):   # args: a randomized model's key (EOT)
    return logits_fn(jnp.where(per_example(active, z), z, x_held), *args)
  return held


def accept_run(logits_fn: LogitsFn, y: Array, robust: Array, x_adv: Array,
            x_run: Array, success: Optional[Array] = None
            ) -> Tuple[Array, Array]:
  """Merges one run into the ensemble's bookkeeping.

  The run's points `x_run` of the still-robust examples are evaluated in one
  batch with the others held at `x_adv`; an example counts as fooled when it
  is misclassified there (and `success`, e.g. FAB's ‖δ‖∞ <= ε, holds).

  Returns:
    (x_adv, robust) updated: fooled examples take their `x_run`.
  """
  candidate = jnp.where(per_example(robust, x_adv), x_run, x_adv)
  fooled = robust & (jnp.argmax(logits_fn(candidate), axis=-1) != y)
  if success is not None:
    fooled = fooled & success
  return (jnp.where(per_example(fooled, x_adv), x_run, x_adv),
          robust & ~fooled)


def ranked_classes(logits: Array, num_targets: int) -> Array:
  """`[num_targets, N]`: the classes ranked 2nd, 3rd, ... by `logits`."""
  order = jnp.argsort(logits, axis=-1)                    # ascending
  columns = logits.shape[-1] - 2 - np.arange(num_targets)
  return jnp.transpose(order[:, columns])


def dlr_targeted_loss(logits: Array, labels: Array, targets: Array) -> Array:
  """Targeted DLR loss (Croce & Hein 2020, eq. 7), per example.

  −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), z_π the logits sorted in
  decreasing order. With 3 classes (no z_π4) the denominator is z_π1 − z_π3.

  Raises:
    ConfigError: fewer than 3 classes.
  """
  num_classes = logits.shape[-1]
  if num_classes < 3:
    raise ConfigError(
        f"the targeted DLR loss needs at least 3 classes, the model has "
        f"{num_classes}.")
  logits = logits.astype(jnp.float32)
  ordered = jnp.sort(logits, axis=-1)
  low = (ordered[:, -3] if num_classes == 3 else
         0.5 * (ordered[:, -3] + ordered[:, -4]))
  z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
  return -(z_y - z_t) / (ordered[:, -1] - low + 1e-12)


def check_target_classes(num_target_classes) -> int:
  return check_steps(num_target_classes, "num_target_classes", minimum=1)


def apgd_t(logits_fn: LogitsFn, x: Array, y: Array, *, eps, key: Array,
           num_steps: int = 100, num_target_classes: int = 9,
           norm: str = "Linf") -> Array:
  """APGD-T: APGD on the targeted DLR loss (Croce & Hein 2020, §4; AutoAttack's
  `APGDAttack_targeted`).

  For each target rank r = 2, …, T + 1 with T = min(`num_target_classes`,
  classes − 1) (AutoAttack's standard run: 9; for an N-way task all N − 1
  other classes), the target of each example is its r-th most likely class on
  the clean batch, and one APGD run (`num_steps` steps, own random start)
  maximizes `dlr_targeted_loss` on the examples not fooled yet. The others
  are held at their adversarial example in the attacked batch (`hold_inactive`), and
  an example counts as fooled when it is misclassified in the batch assembled
  after a run (without batch coupling: when that run fooled it, as in the
  reference code). The target loop is a `lax.scan`. `norm="L2"` runs the
  L2 APGD (see `apgd`).

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits
      (at least 3 classes).
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1] or the L2 radius.
    key: PRNG key of the random starts (one per target).
    num_steps: APGD iterations per target (a Python int; 100 in AutoAttack).
    num_target_classes: T before capping at classes − 1 (9 in AutoAttack).
    norm: "Linf" or "L2" (any case).

  Returns:
    `x_adv`: per example the first successful adversarial example, or `x`
    where every target failed (and where `x` is misclassified already).

  Raises:
    ConfigError: a hyperparameter out of range, or fewer than 3 classes.
  """
  norm = check_norm_and_eps(norm, eps, x, y)
  num_steps = check_steps(num_steps)
  num_target_classes = check_target_classes(num_target_classes)
  if key is None:
    raise ConfigError("apgd_t needs a PRNG key for its random starts: pass "
                      "key=jax.random.key(...).")
  num_classes = num_classes_of(logits_fn, x)
  if num_classes < 3:
    raise ConfigError(f"apgd_t needs at least 3 classes (targeted DLR loss), "
                      f"the model has {num_classes}.")
  num_targets = min(num_target_classes, num_classes - 1)
  eps = jnp.asarray(eps, x.dtype)
  clean_logits = logits_fn(x)
  targets = ranked_classes(clean_logits, num_targets)
  robust = jnp.argmax(clean_logits, axis=-1) == y

  def one_target(carry, inputs):
    x_adv, robust = carry
    target, k = inputs

    def run(_):
      held = hold_inactive(logits_fn, robust, x_adv)
      loss_fn = lambda logits, labels: dlr_targeted_loss(logits, labels,
                                                         target)
      x_run, fooled = apgd_run(held, loss_fn, x, y,
                                apgd_start(norm, k, x, eps), eps=eps,
                                num_steps=num_steps, norm=norm)
      # Where the run failed the reference returns x, not the best point.
      x_run = jnp.where(per_example(fooled, x), x_run, x)
      return accept_run(logits_fn, y, robust, x_adv, x_run)

    return jax.lax.cond(jnp.any(robust), run, lambda _: (x_adv, robust),
                        None), None

  (x_adv, _), _ = jax.lax.scan(one_target, (x, robust),
                               (targets, jax.random.split(key, num_targets)))
  return x_adv

__all__ = [
    "APGD_LOSSES", "Array", "LogitsFn", "apgd", "apgd_checkpoints", "apgd_t",
    "cross_entropy_per_example", "dlr_loss", "dlr_targeted_loss", "fgsm",
    "margin", "mi_fgsm", "pgd",
]
