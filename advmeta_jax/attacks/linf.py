"""Adversarial attacks as pure, jit-able, batched JAX functions.

Every attack has the same shape

    attack(logits_fn, x, y, *, <keyword-only hyperparameters>) -> x_adv

  logits_fn: maps a batch `[N, H, W, C]` of images in [0, 1] to logits
      `[N, classes]`. It may close over parameters (e.g. `lambda z:
      apply_fn(params, z)`); the attacks differentiate w.r.t. the images only.
  x: float images `[N, H, W, C]` in [0, 1].
  y: integer labels `[N]`.
  x_adv: the shape and dtype of `x`, in [0, 1]; for the L∞ attacks also inside
      the ε-ball around `x`. ε = 0 returns `x` exactly.

Attacks implemented (all untargeted):
  fgsm               Goodfellow et al. 2015 (ADML's training attack).
  pgd                Madry et al. 2018, L∞ with random start (AQ/TAFL).
  mi_fgsm            Dong et al. 2018, momentum iterative FGSM (TAFL Table 1).
  carlini_wagner_l2  Carlini & Wagner 2017, L2, tanh space, Adam, binary search.
  apgd               Croce & Hein 2020, APGD-CE / APGD-DLR, the step-size-free
                     evaluation attack of AutoAttack.

Conventions that hold for all of them:
  * The loss whose gradient drives an attack is the SUM over the batch of the
    per-example losses, so each example's gradient is not scaled by 1/N.
  * conv4's BatchNorm is transductive (models.py): the logits of one image
    depend on the whole batch. The attacks therefore attack the batch jointly,
    as the reference MAML/AQ code does. Per-example bookkeeping (APGD's best
    point, C&W's smallest successful perturbation) assembles the returned
    batch from different iterations: for APGD re-evaluating it changes the
    accuracy by about a point (measured); C&W's minimal perturbations sit on
    the boundary and need a check in the returned batch (see
    `carlini_wagner_l2`, `batch_consistent`). Without batch coupling these
    coincide with the reference algorithms.
  * Loops over steps are `lax.fori_loop`/`lax.scan`; `num_steps` (and C&W's
    `binary_search_steps`) must be Python ints. ε, step sizes and `c` may be
    traced values (e.g. an ε sweep under one `jax.jit`).
  * The functions are not jitted: compose them under your own `jit`/`vmap`.
    Batch over tasks with `jax.vmap` (each task its own `logits_fn`
    parameters, images, labels and key).
  * The result is meant to be `jax.lax.stop_gradient`ed by the caller before it
    enters a loss of the model parameters (SPEC, "Attacks").
  * Hyperparameters that are concrete Python/NumPy numbers are validated and a
    `ConfigError` names the value and what is allowed; traced values are not
    checked (they cannot be without breaking `jit`).

Flags map to attacks through a small registry: `names()`, `get(name)`,
`make_attack(name, hparams)` (a uniform `(logits_fn, x, y, *, key=None)`
callable), and `parse_eps("8/255")`.

`check_attack_strength` runs the sanity checks of Carlini et al. 2019 ("On
Evaluating Adversarial Robustness", §5) that reveal gradient masking: PGD at
least as strong as FGSM, more steps never weaker, APGD at least as strong as
PGD, accuracy non-increasing in ε and ~0 at a large ε.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advmeta_jax.errors import ConfigError

Array = jax.Array
LogitsFn = Callable[[Array], Array]

APGD_LOSSES = ("ce", "dlr")
_TANH_SCALE = 1.0 - 1e-6   # C&W: arctanh stays finite at pixels of 0 or 1
_CW_VERIFY_ROUNDS = 16     # C&W: rounds of the final batch verification
_CW_VERIFY_GROWTH = 1.25   # C&W: growth of a perturbation per such round


# --- validation -------------------------------------------------------------

def _is_traced(value) -> bool:
  return isinstance(value, jax.core.Tracer)


def _concrete_scalar(value, name: str) -> Optional[float]:
  """`float(value)` for a concrete scalar; None for a traced one."""
  if _is_traced(value):
    return None
  if isinstance(value, bool):
    raise ConfigError(f"{name} must be a number, got the bool {value!r}.")
  try:
    array = np.asarray(value)
  except Exception:  # pylint: disable=broad-except
    array = None
  if array is None or array.ndim != 0 or not np.issubdtype(array.dtype,
                                                            np.number):
    raise ConfigError(f"{name} must be a scalar number, got {value!r}.")
  result = float(array)
  if math.isnan(result):
    raise ConfigError(f"{name} must be a number, got nan.")
  return result


def _check_eps(eps, name: str = "eps") -> None:
  value = _concrete_scalar(eps, name)
  if value is not None and not 0.0 <= value <= 1.0:
    raise ConfigError(
        f"{name} must lie in [0, 1] (images are in [0, 1]; write 8/255 for 8 "
        f"grey levels), got {eps!r}.")


def _check_positive(value, name: str) -> None:
  concrete = _concrete_scalar(value, name)
  if concrete is not None and not concrete > 0:
    raise ConfigError(f"{name} must be > 0, got {value!r}.")


def _check_non_negative(value, name: str) -> None:
  concrete = _concrete_scalar(value, name)
  if concrete is not None and not concrete >= 0:
    raise ConfigError(f"{name} must be >= 0, got {value!r}.")


def _check_steps(value, name: str = "num_steps", minimum: int = 0) -> int:
  """A loop length: a Python (or NumPy) integer >= `minimum`."""
  if (isinstance(value, bool) or _is_traced(value) or
      not isinstance(value, (int, np.integer))):
    raise ConfigError(
        f"{name} must be a Python integer >= {minimum} (it fixes the length of "
        f"the attack's loop), got {value!r}.")
  if value < minimum:
    raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def _check_inputs(x, y) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ConfigError(
        f"attack inputs must be float images in [0, 1], got dtype "
        f"{jnp.result_type(x)} (convert uint8 images with x / 255).")
  if jnp.ndim(y) != 1 or jnp.shape(y)[0] != jnp.shape(x)[0]:
    raise ConfigError(
        f"labels must have shape [N] matching images [N, ...]; got labels "
        f"{jnp.shape(y)} for images {jnp.shape(x)}.")


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


_LOSSES = {"ce": cross_entropy_per_example, "dlr": dlr_loss}


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


def _project_linf(x_adv: Array, x: Array, eps: Array) -> Array:
  """Projection onto {‖x' − x‖∞ ≤ ε} ∩ [0, 1]^d (exactly `x` when ε = 0)."""
  return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def _per_example(values: Array, like: Array) -> Array:
  """Reshapes `[N]` to `[N, 1, 1, …]` to broadcast against `like`."""
  return values.reshape(values.shape + (1,) * (like.ndim - 1))


def _random_start(key: Array, x: Array, eps: Array) -> Array:
  noise = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  return _project_linf(x + eps * noise, x, eps)


# --- attacks ----------------------------------------------------------------

def fgsm(logits_fn: LogitsFn, x: Array, y: Array, *, eps) -> Array:
  """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy 2015, eq. 3).

  x_adv = clip_[0,1](x + ε · sign(∇x L_CE(f(x), y))). ADML (Yin et al. 2018)
  trains and tests with it.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1] (8/255 is 8 grey levels).

  Returns:
    `x_adv`, shape and dtype of `x`.

  Raises:
    ConfigError: ε outside [0, 1], or non-float images.
  """
  _check_eps(eps)
  _check_inputs(x, y)
  eps = jnp.asarray(eps, x.dtype)
  _, grad, _ = _loss_and_input_gradient(logits_fn, cross_entropy_per_example,
                                        x, y)
  return _project_linf(x + eps * jnp.sign(grad).astype(x.dtype), x, eps)


def pgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps, step_size,
        num_steps: int, key: Optional[Array] = None,
        random_start: bool = True) -> Array:
  """L∞ projected gradient descent (Madry et al. 2018, eq. 2.1).

  x⁰ = x + U(−ε, ε) (random start, projected to [0, 1]) or x;
  x^{t+1} = Π_{B∞(x, ε) ∩ [0,1]}(x^t + a · sign(∇x L_CE(f(x^t), y))).
  Returns the last iterate. AQ and TAFL use ε = 8/255, a = 2/255, 7 steps in
  training and 20 at test.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1].
    step_size: a > 0, the size of each signed-gradient step.
    num_steps: T >= 0 (a Python int); 0 returns the (random) start.
    key: PRNG key of the random start; required when `random_start`.
    random_start: start from a uniform point of the ε-ball (Madry et al.).

  Returns:
    `x_adv`, shape and dtype of `x`.

  Raises:
    ConfigError: a hyperparameter out of range, or `random_start` without key.
  """
  _check_eps(eps)
  _check_positive(step_size, "step_size")
  num_steps = _check_steps(num_steps)
  _check_inputs(x, y)
  if not isinstance(random_start, bool):
    raise ConfigError(f"random_start must be True or False, got "
                      f"{random_start!r}.")
  if random_start and key is None:
    raise ConfigError("pgd with random_start=True needs a PRNG key: pass "
                      "key=jax.random.key(...), or random_start=False.")
  eps = jnp.asarray(eps, x.dtype)
  x_start = _random_start(key, x, eps) if random_start else x
  return _pgd_iterations(logits_fn, x, y, x_start, eps=eps,
                         step_size=step_size, num_steps=num_steps)


def _pgd_iterations(logits_fn: LogitsFn, x: Array, y: Array, x_start: Array,
                    *, eps, step_size, num_steps) -> Array:
  """`num_steps` L∞ PGD steps from `x_start` (`num_steps` may be traced)."""
  eps = jnp.asarray(eps, x.dtype)
  step_size = jnp.asarray(step_size, x.dtype)

  def step(_, x_adv):
    _, grad, _ = _loss_and_input_gradient(
        logits_fn, cross_entropy_per_example, x_adv, y)
    return _project_linf(x_adv + step_size * jnp.sign(grad).astype(x.dtype),
                         x, eps)

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
  _check_eps(eps)
  num_steps = _check_steps(num_steps)
  _check_non_negative(decay, "decay")
  if step_size is not None:
    _check_positive(step_size, "step_size")
  _check_inputs(x, y)
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
    x_adv = _project_linf(
        x_adv + step_size * jnp.sign(momentum).astype(x.dtype), x, eps)
    return x_adv, momentum

  x_adv, _ = jax.lax.fori_loop(
      0, num_steps, step, (x, jnp.zeros(x.shape, jnp.float32)))
  return x_adv


def carlini_wagner_l2(logits_fn: LogitsFn, x: Array, y: Array, *, c,
                      num_steps: int, learning_rate=0.01, confidence=0.0,
                      binary_search_steps: int = 1,
                      batch_consistent: bool = True) -> Array:
  """Carlini & Wagner 2017 L2 attack ("Towards Evaluating the Robustness of
  Neural Networks", §V-A, objective f₆, untargeted).

  With x' = ½(tanh(w) + 1) (always in [0, 1]), minimize over w with Adam

      ‖x' − x‖²₂ + c · max(Z(x')_y − max_{i≠y} Z(x')_i, −κ),

  w starting at arctanh((2x − 1)(1 − 10⁻⁶)) so that pixels at exactly 0 or 1
  have a finite start. With `binary_search_steps` > 1 the constant c is searched
  per example as in the reference code: after a round, success ⇒ upper bound
  c and c ← (lower + upper)/2; failure ⇒ lower bound c and c ← (lower +
  upper)/2 if an upper bound exists, else c ← 10c. Adam and w restart every
  round. Over all rounds and steps the smallest successful perturbation of
  each example is kept (success: Z_y + κ < max_{i≠y} Z_i); examples never
  fooled are returned unchanged.

  Transductive BatchNorm (`batch_consistent`, on by default): a minimal
  perturbation sits on the decision boundary, and the logits of one example
  depend on the rest of the batch, so a point that was misclassified in the
  batch of its own iteration falls back across the boundary in the returned
  batch (best points of different iterations) about half of the time: with the
  reference per-example bookkeeping alone only ~50% of the points of a small
  trained conv4 stay fooled (measured; see tests/test_attacks.py). Therefore:
    1. a second record keeps per example the smallest success that is also
       misclassified in the batch of such records with this step's
       candidates swapped in (one extra forward pass per step);
    2. the returned batch takes that record, else the reference one, and is
       evaluated again: the perturbation of each example that is not
       misclassified in it grows by 1.25× per round (16 rounds at most);
       examples still not misclassified are returned as `x`.
  For a model without batch coupling the records agree and no perturbation
  grows; `batch_consistent=False` skips the extra forward passes there.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    c: the initial trade-off constant, >= 0 (c = 0 never attacks).
    num_steps: Adam steps per round (a Python int >= 0).
    learning_rate: Adam's learning rate (> 0) in tanh space.
    confidence: κ >= 0, the margin by which the example must be misclassified.
    binary_search_steps: rounds of the search over c (>= 1).
    batch_consistent: check successes in the batch that is returned (see
      above); needed for models with transductive BatchNorm.

  Returns:
    `x_adv`, shape and dtype of `x`: per example the smallest successful
    perturbation found, or `x` if none.

  Raises:
    ConfigError: a hyperparameter out of range.
  """
  _check_non_negative(c, "c")
  num_steps = _check_steps(num_steps)
  _check_positive(learning_rate, "learning_rate")
  _check_non_negative(confidence, "confidence")
  binary_search_steps = _check_steps(binary_search_steps,
                                     "binary_search_steps", minimum=1)
  if not isinstance(batch_consistent, bool):
    raise ConfigError(f"batch_consistent must be True or False, got "
                      f"{batch_consistent!r}.")
  _check_inputs(x, y)
  n = x.shape[0]
  axes = tuple(range(1, x.ndim))
  x32 = x.astype(jnp.float32)
  w_start = jnp.arctanh((2.0 * x32 - 1.0) * _TANH_SCALE)
  kappa = jnp.asarray(confidence, jnp.float32)
  optimizer = optax.adam(learning_rate)

  def image(w):
    return (jnp.tanh(w) + 1.0) * 0.5

  def objective(w, const):
    x_adv = image(w)
    logits = logits_fn(x_adv.astype(x.dtype))
    l2 = jnp.sum(jnp.square(x_adv - x32), axis=axes)
    m = margin(logits, y)
    total = jnp.sum(l2 + const * jnp.maximum(m, -kappa))
    return total, (x_adv, l2, m)

  def adam_step(carry, _):
    w, opt_state, const, succeeded, best = carry
    (_, (x_adv, l2, m)), grad = jax.value_and_grad(
        objective, has_aux=True)(w, const)
    success = m + kappa < 0
    # best["l2"], best["x"]: the smallest success judged in the batch of its
    # own iteration (the reference bookkeeping).
    better = success & (l2 < best["l2"])
    best = dict(best, l2=jnp.where(better, l2, best["l2"]),
                x=jnp.where(_per_example(better, x), x_adv, best["x"]))
    if batch_consistent:
      # best["l2_in_batch"], best["x_in_batch"]: the smallest success that is
      # also misclassified in the batch of the current such points with this
      # step's candidates swapped in.
      better = success & (l2 < best["l2_in_batch"])
      candidate = jnp.where(_per_example(better, x), x_adv,
                            best["x_in_batch"])
      m_in_batch = margin(logits_fn(candidate.astype(x.dtype)), y)
      better = better & (m_in_batch + kappa < 0)
      best = dict(
          best, l2_in_batch=jnp.where(better, l2, best["l2_in_batch"]),
          x_in_batch=jnp.where(_per_example(better, x), x_adv,
                               best["x_in_batch"]))
    succeeded = succeeded | success
    updates, opt_state = optimizer.update(grad, opt_state, w)
    w = optax.apply_updates(w, updates)
    return (w, opt_state, const, succeeded, best), None

  def search_round(carry, _):
    const, lower, upper, best = carry
    start = (w_start, optimizer.init(w_start), const, jnp.zeros(n, bool),
             best)
    (_, _, _, succeeded, best), _ = jax.lax.scan(
        adam_step, start, None, length=num_steps)
    upper = jnp.where(succeeded, jnp.minimum(upper, const), upper)
    lower = jnp.where(succeeded, lower, jnp.maximum(lower, const))
    const = jnp.where(upper < 1e9, 0.5 * (lower + upper), 10.0 * const)
    return (const, lower, upper, best), None

  no_success = jnp.full(n, jnp.inf, jnp.float32)
  best = dict(l2=no_success, x=x32)
  if batch_consistent:
    best.update(l2_in_batch=no_success, x_in_batch=x32)
  start = (jnp.full(n, c, jnp.float32), jnp.zeros(n, jnp.float32),
           jnp.full(n, 1e10, jnp.float32), best)
  (_, _, _, best), _ = jax.lax.scan(
      search_round, start, None, length=binary_search_steps)
  found = jnp.isfinite(best["l2"])
  if not batch_consistent:
    return jnp.where(_per_example(found, x), best["x"].astype(x.dtype), x)

  # The returned batch: per example the best point verified in the batch,
  # else the reference best point, else x. Then grow the perturbation of the
  # points that are not misclassified in this batch by 1.25× per round, and
  # return x for those that still are not.
  in_batch = jnp.isfinite(best["l2_in_batch"])
  delta = jnp.where(_per_example(in_batch, x), best["x_in_batch"],
                    best["x"]) - x32

  def perturbed(scale):
    return jnp.clip(x32 + _per_example(scale, x) * delta, 0.0, 1.0)

  def still_correct(scale):
    m = margin(logits_fn(perturbed(scale).astype(x.dtype)), y)
    return found & (m + kappa >= 0)

  def verify(_, scale):
    return jnp.where(still_correct(scale), _CW_VERIFY_GROWTH * scale, scale)

  scale = jax.lax.fori_loop(0, _CW_VERIFY_ROUNDS, verify,
                            jnp.ones((n,), jnp.float32))
  keep = _per_example(found & ~still_correct(scale), x)
  unscaled = _per_example(scale == 1.0, x)
  x_adv = jnp.where(unscaled, x32 + delta, perturbed(scale))
  return jnp.where(keep, x_adv.astype(x.dtype), x)


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
         key: Array, loss: str = "ce") -> Array:
  """Auto-PGD, L∞ (Croce & Hein 2020, "Reliable evaluation of adversarial
  robustness with an ensemble of diverse parameter-free attacks", Alg. 1).

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
  Starts at a uniform random point of the ε-ball (from `key`). Returns per
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
    eps: ε, the L∞ budget in [0, 1].
    num_steps: N_iter >= 0 (a Python int; 100 in AutoAttack).
    key: PRNG key of the random start.
    loss: "ce" (APGD-CE) or "dlr" (APGD-DLR, needs >= 3 classes).

  Returns:
    `x_adv`, shape and dtype of `x`.

  Raises:
    ConfigError: a hyperparameter out of range or an unknown loss.
  """
  _check_eps(eps)
  num_steps = _check_steps(num_steps)
  if loss not in _LOSSES:
    raise ConfigError(f"unknown APGD loss {loss!r}; choose one of: "
                      f"{', '.join(APGD_LOSSES)}.")
  if key is None:
    raise ConfigError("apgd needs a PRNG key for its random start: pass "
                      "key=jax.random.key(...).")
  _check_inputs(x, y)
  loss_fn = _LOSSES[loss]
  rho, alpha = 0.75, 0.75
  eps = jnp.asarray(eps, x.dtype)
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

  x0 = _random_start(key, x, eps)
  loss0, grad0, logits0 = _loss_and_input_gradient(logits_fn, loss_fn, x0, y)
  fooled0 = jnp.argmax(logits0, axis=-1) != y

  state = dict(
      x=x0, x_prev=x0, grad=grad0, loss=loss0,
      step=jnp.full((n,), 2.0, jnp.float32) * eps.astype(jnp.float32),
      x_best=x0, grad_best=grad0, loss_best=loss0,
      x_adv=x0, fooled=fooled0,
      increases=jnp.zeros((n,), jnp.float32),
      loss_best_last_check=loss0, reduced_last_check=jnp.ones((n,), bool))

  def iteration(i, s):
    step = _per_example(s["step"], x).astype(x.dtype)
    a = jnp.where(i == 0, 1.0, alpha).astype(x.dtype)
    z = _project_linf(s["x"] + step * jnp.sign(s["grad"]).astype(x.dtype),
                      x, eps)
    x_new = _project_linf(
        s["x"] + a * (z - s["x"]) + (1 - a) * (s["x"] - s["x_prev"]), x, eps)
    loss_new, grad_new, logits = _loss_and_input_gradient(
        logits_fn, loss_fn, x_new, y)

    fooled_now = jnp.argmax(logits, axis=-1) != y
    x_adv = jnp.where(_per_example(fooled_now, x), x_new, s["x_adv"])
    fooled = s["fooled"] | fooled_now
    increases = s["increases"] + (loss_new > s["loss"]).astype(jnp.float32)
    improved = loss_new > s["loss_best"]
    x_best = jnp.where(_per_example(improved, x), x_new, s["x_best"])
    grad_best = jnp.where(_per_example(improved, x), grad_new, s["grad_best"])
    loss_best = jnp.where(improved, loss_new, s["loss_best"])

    # Checkpoint: halve the step and restart from x_best where it stalled.
    check = is_checkpoint[i]
    oscillating = increases < rho * window[i]
    stalled = (~s["reduced_last_check"]) & (
        s["loss_best_last_check"] >= loss_best)
    reduce = check & (oscillating | stalled)
    reduce_x = _per_example(reduce, x)
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
  return jnp.where(_per_example(state["fooled"], x), state["x_adv"],
                   state["x_best"])


# --- registry and flags -------------------------------------------------------

ATTACKS: Dict[str, Callable[..., Array]] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "mi_fgsm": mi_fgsm,
    "cw_l2": carlini_wagner_l2,
    "apgd": apgd,
}
_ALIASES = {"carlini_wagner_l2": "cw_l2", "cw": "cw_l2", "apgd_ce": "apgd"}

# Hyperparameters whose string form is an integer, a bool or a name.
_INT_HPARAMS = ("num_steps", "binary_search_steps")
_BOOL_HPARAMS = ("random_start", "batch_consistent")
_STR_HPARAMS = ("loss",)


def names() -> Tuple[str, ...]:
  """Registered attack names (the values of an `--attack` flag)."""
  return tuple(sorted(ATTACKS))


def get(name: str) -> Callable[..., Array]:
  """The attack function registered as `name` (or one of its aliases).

  Raises:
    ConfigError: an unknown name, with the registered ones.
  """
  canonical = _ALIASES.get(name, name)
  if canonical not in ATTACKS:
    raise ConfigError(f"unknown attack {name!r}; choose one of: "
                      f"{', '.join(names())}.")
  return ATTACKS[canonical]


def hyperparameters(name: str) -> Dict[str, Any]:
  """Keyword-only hyperparameters of attack `name` and their defaults.

  Required ones map to `inspect.Parameter.empty`.
  """
  signature = inspect.signature(get(name))
  return {p.name: p.default for p in signature.parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def parse_eps(value, name: str = "eps") -> float:
  """Parses an L∞ budget: `"8/255"`, `"0.2/255"`, `"0.03"`, or a number.

  Returns:
    ε as a float in [0, 1].

  Raises:
    ConfigError: not a number or fraction, negative, above 1 (images are in
      [0, 1]: ADML's "eps = 2" is 2/255), or not finite.
  """
  text = value
  if isinstance(value, str):
    parts = value.strip().split("/")
    try:
      numbers = [float(part) for part in parts]
    except ValueError:
      numbers = []
    if len(numbers) not in (1, 2):
      raise ConfigError(
          f"{name} must be a number or a fraction such as 8/255, got "
          f"{value!r}.")
    if len(numbers) == 2 and numbers[1] == 0:
      raise ConfigError(f"{name} {value!r} divides by zero.")
    result = numbers[0] if len(numbers) == 1 else numbers[0] / numbers[1]
  elif isinstance(value, (int, float, np.integer, np.floating)) and not (
      isinstance(value, bool)):
    result = float(value)
  else:
    raise ConfigError(f"{name} must be a number or a fraction such as 8/255, "
                      f"got {value!r}.")
  if not math.isfinite(result) or result < 0:
    raise ConfigError(f"{name} must be a finite number >= 0, got {text!r}.")
  if result > 1:
    raise ConfigError(
        f"{name} must be at most 1 (images are in [0, 1]), got {text!r}; for "
        f"{result:g} grey levels write {result:g}/255.")
  return result


def _coerce(attack: str, key: str, value):
  """A flag value (possibly a string) as the type the attack expects."""
  if not isinstance(value, str):
    return value
  text = value.strip()
  if key in _STR_HPARAMS:
    return text
  if key in _BOOL_HPARAMS:
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"{attack}: {key} must be true or false, got {value!r}.")
  if key in _INT_HPARAMS:
    try:
      return int(text)
    except ValueError:
      raise ConfigError(f"{attack}: {key} must be an integer, got "
                        f"{value!r}.") from None
  if key == "eps":
    return parse_eps(text)
  # Other numbers (step sizes, c, ...) accept fractions such as 2/255 too.
  parts = text.split("/")
  try:
    if len(parts) == 2:
      return float(parts[0]) / float(parts[1])
    if len(parts) == 1:
      return float(text)
  except (ValueError, ZeroDivisionError):
    pass
  raise ConfigError(f"{attack}: {key} must be a number or a fraction such as "
                    f"2/255, got {value!r}.")


def make_attack(name: str, hparams: Optional[Mapping[str, Any]] = None,
                **kwargs) -> Callable[..., Array]:
  """Builds `(logits_fn, x, y, *, key=None) -> x_adv` from a name and flags.

  Values may be numbers or flag strings ("8/255", "20", "true"). Every
  hyperparameter except `key` must be given unless it has a default; `key` is
  passed at each call and dropped for deterministic attacks, so every attack
  can be called the same way.

  Example:
    attack = make_attack("pgd", {"eps": "8/255", "step_size": "2/255",
                                 "num_steps": 20})
    x_adv = attack(logits_fn, x, y, key=key)

  Raises:
    ConfigError: unknown attack, unknown or missing hyperparameters (with the
      allowed ones), or values out of range.
  """
  attack_fn = get(name)
  allowed = hyperparameters(name)
  given = dict(hparams or {}, **kwargs)
  unknown = sorted((set(given) - set(allowed)) | (set(given) & {"key"}))
  if unknown:
    raise ConfigError(
        f"attack {name!r} has no hyperparameter(s) {', '.join(unknown)}; "
        f"allowed: {', '.join(k for k in allowed if k != 'key')} (the PRNG key "
        "is passed at each call).")
  missing = sorted(k for k, default in allowed.items()
                   if default is inspect.Parameter.empty and k != "key" and
                   k not in given)
  if missing:
    raise ConfigError(f"attack {name!r} needs hyperparameter(s) "
                      f"{', '.join(missing)}.")
  values = {k: _coerce(name, k, v) for k, v in given.items()}
  takes_key = "key" in allowed
  # Validate now: a bad flag should fail before anything is traced.
  _validate_early(name, values)

  def attack(logits_fn: LogitsFn, x: Array, y: Array, *,
             key: Optional[Array] = None) -> Array:
    if takes_key:
      return attack_fn(logits_fn, x, y, key=key, **values)
    return attack_fn(logits_fn, x, y, **values)

  attack.__name__ = f"{name}_attack"
  attack.__doc__ = f"{name} with {values}."
  attack.hparams = values  # type: ignore[attr-defined]
  return attack


def _validate_early(name: str, values: Mapping[str, Any]) -> None:
  for k, v in values.items():
    if k == "eps":
      _check_eps(v)
    elif k in ("step_size", "learning_rate") and v is not None:
      _check_positive(v, k)
    elif k in ("c", "confidence", "decay"):
      _check_non_negative(v, k)
    elif k in _INT_HPARAMS:
      _check_steps(v, k, minimum=1 if k == "binary_search_steps" else 0)
    elif k == "loss" and v not in APGD_LOSSES:
      raise ConfigError(f"unknown APGD loss {v!r}; choose one of: "
                        f"{', '.join(APGD_LOSSES)}.")
    elif k in _BOOL_HPARAMS and not isinstance(v, bool):
      raise ConfigError(f"{name}: {k} must be True or False, got {v!r}.")


# --- gradient-masking checks --------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StrengthReport:
  """What `check_attack_strength` measured and which expectations failed.

  Attributes:
    accuracies: accuracy (in [0, 1]) per setting, e.g. "clean", "fgsm",
      "pgd5", "pgd20", "apgd20", "noise".
    eps_sweep: `(ε, PGD accuracy)` pairs, ε increasing.
    findings: one sentence per failed expectation, with the numbers; empty when
      everything holds.
    tolerance: the slack used for every comparison.
  """
  accuracies: Dict[str, float]
  eps_sweep: Tuple[Tuple[float, float], ...]
  findings: Tuple[str, ...]
  tolerance: float

  @property
  def ok(self) -> bool:
    return not self.findings

  def __str__(self) -> str:
    lines = ["accuracies: " + ", ".join(
        f"{k} {v:.3f}" for k, v in self.accuracies.items())]
    lines.append("eps sweep: " + ", ".join(
        f"{e:.4f}: {a:.3f}" for e, a in self.eps_sweep))
    lines += [f"FAILED: {f}" for f in self.findings] or [
        "all orderings hold"]
    return "\n".join(lines)


def attack_accuracy(logits_fn: LogitsFn, x_adv: Array, y: Array) -> float:
  """Top-1 accuracy of `logits_fn` on the (adversarial) batch `x_adv`."""
  logits = logits_fn(x_adv)
  return float(jnp.mean(jnp.argmax(logits, axis=-1) == y))


def check_attack_strength(logits_fn: LogitsFn, x: Array, y: Array, *, eps,
                          key: Array, step_size=None,
                          pgd_steps: Tuple[int, int] = (5, 20),
                          eps_multipliers: Sequence[float] = (0.25, 0.5, 1.0,
                                                              2.0, 4.0),
                          large_eps: float = 0.5,
                          max_accuracy_at_large_eps: float = 0.05,
                          tolerance: float = 0.02) -> StrengthReport:
  """Sanity checks that reveal gradient masking (Carlini et al. 2019, "On
  Evaluating Adversarial Robustness", §5 and the checklist of its appendix).

  Runs FGSM, PGD with `pgd_steps[0]` and `pgd_steps[1]` steps (same step size
  and random start), APGD-CE with `pgd_steps[1]` steps, uniform noise in the
  ε-ball, and PGD with the longer step count over ε × `eps_multipliers` and
  `large_eps` (step size scaled with ε). Expected, each up to `tolerance`:
    * every attack's accuracy ≤ clean accuracy, and PGD ≤ random noise;
    * PGD ≤ FGSM (an iterative attack beats a single step);
    * PGD with more steps ≤ PGD with fewer;
    * APGD ≤ PGD;
    * accuracy non-increasing as ε grows;
    * accuracy ≤ `max_accuracy_at_large_eps` at `large_eps` (an attack with
      a huge budget must win; if not, the gradients do not lead anywhere).
  The slack `tolerance` (default 2 percentage points) absorbs the noise of
  random starts and of transductive BatchNorm, which makes one example's
  logits depend on the perturbations of the others; on 100 examples 0.02 is
  two examples. A failed expectation is a finding, not an exception: report
  it next to the robust accuracy.

  This function runs the attacks itself and returns Python numbers; it is an
  evaluation driver, not meant to be traced. It compiles twice: once for APGD
  and once for a PGD loop with traced ε, step size and step count, which
  serves the clean and noise accuracies (0 steps), FGSM (one step of size ε
  from x, identical to `fgsm`), both PGD runs (the same random start as
  `pgd(..., key=k)` for the first half of `jax.random.split(key)`) and the
  sweep.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: the ε under evaluation (a number or a string such as "8/255").
    key: PRNG key (random starts).
    step_size: PGD step size at ε; default ε/4 (2/255 at ε = 8/255).
    pgd_steps: the (fewer, more) PGD step counts.
    eps_multipliers: the ε sweep, as multiples of ε (capped at 1).
    large_eps: the "unbounded" budget of the last sweep point.
    max_accuracy_at_large_eps: what accuracy counts as ~0 there.
    tolerance: slack of every comparison, in accuracy units.

  Returns:
    A `StrengthReport`; `report.ok` when every expectation holds.

  Raises:
    ConfigError: ε = 0, bad step counts, or a longer PGD run that cannot cross
      the ball (`pgd_steps[1] * step_size < 2ε`), which would flag a weak
      attack rather than masking.
  """
  eps = parse_eps(eps)
  large_eps = parse_eps(large_eps, "large_eps")
  few, many = (_check_steps(s, "pgd_steps", minimum=1) for s in pgd_steps)
  if few >= many:
    raise ConfigError(f"pgd_steps must be (fewer, more) steps, got "
                      f"{tuple(pgd_steps)}.")
  if eps == 0:
    raise ConfigError("check_attack_strength needs eps > 0.")
  step_size = eps / 4 if step_size is None else step_size
  _check_positive(step_size, "step_size")
  if many * float(step_size) < 2 * eps:
    raise ConfigError(
        f"PGD with {many} steps of {float(step_size):g} cannot cross the "
        f"ε-ball (eps {eps:g}): the orderings would flag a weak attack, not "
        "masking. Use pgd_steps[1] * step_size >= 2 * eps.")
  ratio = float(step_size) / eps
  k_start, k_apgd = jax.random.split(key)

  x = jnp.asarray(x)
  y = jnp.asarray(y)
  noise = jax.random.uniform(k_start, x.shape, x.dtype, -1.0, 1.0)
  no_noise = jnp.zeros_like(x)

  # One compiled function serves all but APGD (see the docstring).
  @jax.jit
  def pgd_accuracy(xs, ys, start_noise, e, a, steps):
    e = e.astype(xs.dtype)
    x_start = _project_linf(xs + e * start_noise, xs, e)
    x_adv = _pgd_iterations(logits_fn, xs, ys, x_start, eps=e, step_size=a,
                            num_steps=steps)
    return jnp.mean(jnp.argmax(logits_fn(x_adv), axis=-1) == ys)

  @jax.jit
  def apgd_accuracy(xs, ys, e):
    x_adv = apgd(logits_fn, xs, ys, eps=e, num_steps=many, key=k_apgd)
    return jnp.mean(jnp.argmax(logits_fn(x_adv), axis=-1) == ys)

  def run(start_noise, e, a, steps) -> float:
    return float(pgd_accuracy(x, y, start_noise, jnp.float32(e),
                              jnp.float32(a), jnp.int32(steps)))

  accuracies = {
      "clean": run(no_noise, 0.0, 0.0, 0),
      "noise": run(noise, eps, 0.0, 0),
      "fgsm": run(no_noise, eps, eps, 1),
      f"pgd{few}": run(noise, eps, step_size, few),
      f"pgd{many}": run(noise, eps, step_size, many),
      f"apgd{many}": float(apgd_accuracy(x, y, jnp.float32(eps))),
  }
  sweep_eps = sorted({min(1.0, eps * float(m)) for m in eps_multipliers} |
                     {large_eps})
  sweep = [(e, accuracies[f"pgd{many}"] if e == eps else
            run(noise, e, ratio * e, many)) for e in sweep_eps]

  findings: List[str] = []

  def expect_at_most(name_a, a, name_b, b, why):
    if a > b + tolerance:
      findings.append(f"{name_a} accuracy {a:.3f} > {name_b} accuracy "
                      f"{b:.3f} + tolerance {tolerance:.3f}: {why}.")

  clean = accuracies["clean"]
  for name, value in accuracies.items():
    if name not in ("clean", "noise"):
      expect_at_most(name, value, "clean", clean,
                     "an attack should never help the model")
  pgd_many = accuracies[f"pgd{many}"]
  expect_at_most(f"pgd{many}", pgd_many, "noise", accuracies["noise"],
                 "gradient steps should beat random noise in the ball")
  expect_at_most(f"pgd{many}", pgd_many, "fgsm", accuracies["fgsm"],
                 "an iterative attack should beat a single step")
  expect_at_most(f"pgd{many}", pgd_many, f"pgd{few}", accuracies[f"pgd{few}"],
                 "more steps should never weaken the attack")
  expect_at_most(f"apgd{many}", accuracies[f"apgd{many}"], f"pgd{many}",
                 pgd_many, "APGD should be at least as strong as PGD")
  for (e0, a0), (e1, a1) in zip(sweep[:-1], sweep[1:]):
    expect_at_most(f"PGD at eps {e1:.4f}", a1, f"PGD at eps {e0:.4f}", a0,
                   "a larger budget should never weaken the attack")
  e_large, a_large = sweep[-1]
  if a_large > max_accuracy_at_large_eps:
    findings.append(
        f"PGD accuracy at eps {e_large:.4f} is {a_large:.3f} > "
        f"{max_accuracy_at_large_eps:.3f}: an attack with a huge budget should "
        "win; the gradients may be masked.")
  return StrengthReport(accuracies=accuracies, eps_sweep=tuple(sweep),
                        findings=tuple(findings), tolerance=tolerance)


__all__ = [
    "APGD_LOSSES", "ATTACKS", "StrengthReport", "apgd", "apgd_checkpoints",
    "attack_accuracy", "carlini_wagner_l2", "check_attack_strength",
    "cross_entropy_per_example", "dlr_loss", "fgsm", "get", "hyperparameters",
    "make_attack", "margin", "mi_fgsm", "names", "parse_eps", "pgd",
]
