"""FAB, the Fast Adaptive Boundary attack, L∞ and L2 (Croce & Hein 2020,
"Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML, arXiv:1907.02044).

`fab(..., targeted=True)` is FAB-T, the third attack of AutoAttack's standard
run; `targeted=False` is the untargeted FAB of AutoAttack's "plus" run. The
package docstring (`advmeta_jax.attacks`) states the conventions.
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.attacks.checks import check_positive
from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.checks import concrete_scalar
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.linf import accept_run
from advmeta_jax.attacks.linf import check_norm_and_eps
from advmeta_jax.attacks.linf import check_target_classes
from advmeta_jax.attacks.linf import hold_inactive
from advmeta_jax.attacks.linf import num_classes_of
from advmeta_jax.attacks.norms import per_example
from advmeta_jax.attacks.linf import ranked_classes
from advmeta_jax.attacks.norms import l2_normalize
from advmeta_jax.attacks.norms import lp_norm
from advmeta_jax.errors import ConfigError

_FAR = 1e10   # "no adversarial example found yet" (the reference's 1e10)


def project_linf_hyperplane(t: Array, w: Array, b: Array) -> Array:
  """Minimal L∞ step onto a hyperplane inside the box (FAB's projection).

  For each row: d = argmin ‖d‖∞ subject to ⟨w, t + d⟩ = b and
  0 <= t + d <= 1; where the box makes the hyperplane unreachable, the box
  corner that moves ⟨w, t + d⟩ furthest towards b. Coordinates with w_i = 0
  do not move.

  With the sign of w chosen so that ⟨w, t⟩ >= b, the optimum is
  d_i(λ) = −sign(w_i) · min(λ, p_i), p_i = t_i (w_i > 0) or 1 − t_i
  (w_i < 0), and G(λ) = Σ|w_i| min(λ, p_i) is piecewise linear and
  non-decreasing; λ solves G(λ) = ⟨w, t⟩ − b (`_solve_breakpoints`). This
  matches the reference's `projection_linf`.

  Args:
    t: points `[M, D]`.
    w: hyperplane normals `[M, D]`.
    b: offsets `[M]`.

  Returns:
    d `[M, D]`.
  """
  t, w, gap, negative, p = _oriented(t, w, b)
  abs_w = jnp.abs(w)
  # G(λ) = Σ|w_i| min(λ, p_i): breakpoints p_i, slopes |w_i|.
  lam = _solve_breakpoints(p, abs_w, abs_w * p, gap)[:, None]
  d = jnp.where(negative, jnp.minimum(lam, 1.0 - t), jnp.maximum(-lam, -t))
  return jnp.where(w != 0, d, 0.0)


def _oriented(t: Array, w: Array, b: Array):
  """(t, w, gap, negative, p) in float32 with the sign of each row of w
  chosen so that c = ⟨w, t⟩ − b >= 0: gap = |c|, negative = w < 0 and p the
  room each coordinate has to move against w (t_i, or 1 − t_i where
  w_i < 0)."""
  t, w, b = (v.astype(jnp.float32) for v in (t, w, b))
  c = jnp.sum(w * t, axis=1) - b
  w = w * jnp.where(c >= 0, 1.0, -1.0)[:, None]
  negative = w < 0
  return t, w, jnp.abs(c), negative, jnp.where(negative, 1.0 - t, t)


def _solve_breakpoints(r: Array, slope: Array, value: Array,
                       gap: Array) -> Array:
  """λ >= 0 per row with G(λ) = gap, G(λ) = Σ_{r_i <= λ} value_i +
  λ Σ_{r_i > λ} slope_i (piecewise linear, non-decreasing; value_i =
  slope_i r_i), or inf where G never reaches gap (r_i = inf: never bends).

  The segment comes from the sorted breakpoints and cumulative sums: no
  binary search, static shapes."""
  order = jnp.argsort(r, axis=1)
  r_sorted = jnp.take_along_axis(r, order, axis=1)
  below = jnp.cumsum(jnp.take_along_axis(value, order, axis=1), axis=1)
  used = jnp.cumsum(jnp.take_along_axis(slope, order, axis=1), axis=1)
  total = jnp.sum(slope, axis=1, keepdims=True)
  finite = jnp.isfinite(r_sorted)
  g_at_breaks = jnp.where(   # G(r_(k)), non-decreasing
      finite, below + jnp.where(finite, r_sorted, 0.0) * (total - used),
      jnp.inf)
  k = jnp.sum(g_at_breaks < gap[:, None], axis=1)  # λ* in [r_(k-1), r_(k)]
  prev = jnp.clip(k - 1, 0, r.shape[1] - 1)[:, None]
  c_prev = jnp.where(k > 0, jnp.take_along_axis(below, prev, 1)[:, 0], 0.0)
  rest = jnp.where(k > 0, (total - jnp.take_along_axis(used, prev, 1))[:, 0],
                   total[:, 0])
  lam = jnp.maximum((gap - c_prev) / jnp.maximum(rest, 1e-30), 0.0)
  reachable = (k < jnp.sum(finite, axis=1)) & (rest > 0)
  return jnp.where(reachable, lam, jnp.inf)


def project_l2_hyperplane(t: Array, w: Array, b: Array) -> Array:
  """Minimal L2 step onto a hyperplane inside the box (FAB's L2 projection).

  For each row: d = argmin ‖d‖₂ subject to ⟨w, t + d⟩ = b and
  0 <= t + d <= 1; where the box makes the hyperplane unreachable, the box
  corner that moves ⟨w, t + d⟩ furthest towards b. Coordinates with
  |w_i| < 1e-8 do not move (as in the reference).

  With the sign of w chosen so that c = ⟨w, t⟩ − b >= 0, the optimum is
  d_i(λ) = −sign(w_i) · min(λ|w_i|, p_i), p_i = t_i (w_i > 0) or 1 − t_i
  (w_i < 0), and H(λ) = Σ|w_i| min(λ|w_i|, p_i) is piecewise linear and
  non-decreasing with breakpoints r_i = p_i/|w_i|; λ solves H(λ) = c
  (`_solve_breakpoints`, as for L∞; the reference's `projection_l2` in
  fab_pt.py finds the segment by a binary search over the same sums).
  Arguments and result as `project_linf_hyperplane`'s.
  """
  t, w, gap, negative, p = _oriented(t, w, b)
  active = jnp.abs(w) >= 1e-8
  abs_w = jnp.where(active, jnp.abs(w), 0.0)
  # H(λ) = Σ|w_i| min(λ|w_i|, p_i): breakpoints p_i/|w_i|, slopes w_i².
  r = jnp.where(active, p / jnp.where(active, abs_w, 1.0), jnp.inf)
  lam = _solve_breakpoints(r, abs_w * abs_w, abs_w * p, gap)[:, None]
  d = jnp.where(negative, jnp.minimum(lam * abs_w, 1.0 - t),
                jnp.maximum(-lam * abs_w, -t))
  return jnp.where(active, d, 0.0)


def _linf_norm(v: Array) -> Array:
  return lp_norm("Linf", v)


def _hyperplane(logits_fn: LogitsFn, x1: Array, y: Array,
                target: Optional[Array], norm: str = "Linf"
                ) -> Tuple[Array, Array]:
  """FAB's linearized decision boundary at `x1`: (w `[N, D]`, f `[N]`),
  the boundary being {z: f + ⟨w, z − x1⟩ = 0}.

  Targeted: f = z_t − z_y and its gradient. Untargeted: for every class
  c ≠ y, f_c = z_c − z_y and g_c = ∇(z_c − z_y); the class whose boundary is
  closest in `norm` (|f_c| / ‖g_c‖₁ for L∞, / ‖g_c‖₂ for L2) is taken.
  Gradients are of the sum over the batch (as in the reference:
  `y.backward(grad_mask)`).
  """
  n = x1.shape[0]
  if target is not None:
    def diff(z):
      logits = logits_fn(z).astype(jnp.float32)
      f = (jnp.take_along_axis(logits, target[:, None], 1) -
           jnp.take_along_axis(logits, y[:, None], 1))[:, 0]
      return jnp.sum(f), f
    grad, f = jax.grad(diff, has_aux=True)(x1)
    return grad.reshape(n, -1).astype(jnp.float32), f
  logits, vjp = jax.vjp(lambda z: logits_fn(z).astype(jnp.float32), x1)
  num_classes = logits.shape[-1]
  cotangents = jnp.broadcast_to(jnp.eye(num_classes)[:, None, :],
                                (num_classes,) + logits.shape)
  grads = jax.vmap(lambda ct: vjp(ct)[0])(cotangents)   # [C, N, ...]
  grads = jnp.swapaxes(grads.reshape(num_classes, n, -1), 0, 1)  # [N, C, D]
  is_label = jax.nn.one_hot(y, num_classes, dtype=bool)
  f = logits - jnp.take_along_axis(logits, y[:, None], 1)
  g = grads - jnp.take_along_axis(grads, y[:, None, None], 1)
  f = jnp.where(is_label, _FAR, f)
  dual = (jnp.sqrt(jnp.sum(g * g, axis=-1)) if norm == "L2" else
          jnp.sum(jnp.abs(g), axis=-1))
  dist = jnp.abs(f) / (1e-12 + dual)
  closest = jnp.argmin(dist, axis=-1)
  w = jnp.take_along_axis(g, closest[:, None, None], 1)[:, 0]
  return w, jnp.take_along_axis(f, closest[:, None], 1)[:, 0]


def _fab_run(logits_fn: LogitsFn, x: Array, y: Array, x_start: Array,
             target: Optional[Array], *, num_steps: int, alpha_max, eta,
             beta, norm: str = "Linf") -> Tuple[Array, Array]:
  """One FAB run of `norm` from `x_start` (reference: `attack_single_run`).

  Returns:
    (adv, size): per example the adversarial iterate of smallest ‖δ‖ (in
    `norm`) and that size, or (x, 1e10) where no iterate was adversarial.
  """
  n = x.shape[0]
  x0 = x.reshape(n, -1).astype(jnp.float32)
  projection = (project_l2_hyperplane if norm == "L2" else
                project_linf_hyperplane)

  def step(_, carry):
    x1, adv, best = carry
    w, f = _hyperplane(logits_fn, x1, y, target, norm)
    flat = x1.reshape(n, -1).astype(jnp.float32)
    b = jnp.sum(w * flat, axis=1) - f
    d = projection(jnp.concatenate([flat, x0]), jnp.concatenate([w, w]),
                   jnp.concatenate([b, b]))
    d1, d2 = d[:n], d[n:]
    a1 = jnp.maximum(lp_norm(norm, d1), 1e-8)
    a2 = jnp.maximum(lp_norm(norm, d2), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    moved = jnp.clip((flat + eta * d1) * (1 - alpha) +
                     (x0 + eta * d2) * alpha, 0.0, 1.0)
    x1 = moved.reshape(x.shape).astype(x.dtype)
    is_adv = jnp.argmax(logits_fn(x1), axis=-1) != y
    size = lp_norm(norm, x1 - x)
    better = is_adv & (size < best)
    adv = jnp.where(per_example(better, x), x1, adv)
    best = jnp.where(better, size, best)
    # Backward step towards x from an adversarial iterate.
    x1 = jnp.where(per_example(is_adv, x), x + (x1 - x) * beta, x1)
    return x1, adv, best

  _, adv, best = jax.lax.fori_loop(
      0, num_steps, step,
      (x_start, x, jnp.full((n,), _FAR, jnp.float32)))
  return adv, best


def fab(logits_fn: LogitsFn, x: Array, y: Array, *, eps,
        key: Optional[Array] = None, num_steps: int = 100,
        targeted: bool = True, num_target_classes: int = 9,
        num_restarts: int = 1, alpha_max=0.1, eta=1.05, beta=0.9,
        norm: str = "Linf") -> Array:
  """FAB-T / FAB, L∞ or L2 (Croce & Hein 2020, ICML, Algorithm 1;
  AutoAttack's `FABAttack_PT`).

  A minimum-norm attack used at a fixed budget: each step linearizes the
  decision boundary at x¹ (targeted: z_t − z_y; untargeted: the class whose
  linearized boundary is closest), projects both x¹ and the clean x onto that
  hyperplane within [0, 1] (`project_linf_hyperplane`; L2:
  `project_l2_hyperplane`), and moves to the
  biased combination x¹ ← clip((x¹ + η d₁)(1 − α) + (x + η d₂) α) with
  α = min(‖d₁‖/(‖d₁‖ + ‖d₂‖), α_max); an adversarial x¹ is recorded if it
  is the smallest so far and pulled back, x¹ ← x + β(x¹ − x). A run succeeds
  for an example when its smallest adversarial perturbation has ‖δ‖ <= ε,
  all norms being those of `norm` (the untargeted choice of class too).

  Targeted (FAB-T, AutoAttack's standard run): for each target rank
  r = 2, …, T + 1, T = min(`num_target_classes`, classes − 1), the target is
  each example's r-th most likely clean class. Untargeted: one pass. Each
  pass runs `num_restarts` times, the first from x, the others from a random
  point at distance ε/2 (L∞: a uniform box point rescaled; L2: a normalized
  Gaussian, as the reference; drawn from `key`). Passes and restarts attack
  only the examples not fooled yet (the others held in the batch at their
  adversarial example; an example counts as fooled when misclassified in the
  batch assembled after a run, see `apgd_t`), in one `lax.scan`.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1] or the L2 radius (success threshold,
      restart radius).
    key: PRNG key of the random restarts; needed when `num_restarts > 1`
      (FAB-T in AutoAttack's standard run uses one restart: deterministic).
    num_steps: FAB iterations per run (a Python int; 100 in AutoAttack).
    targeted: FAB-T (True) or untargeted FAB.
    num_target_classes: T before capping at classes − 1 (9 in AutoAttack).
    num_restarts: runs per target (>= 1).
    alpha_max: α_max in [0, 1] (0.1).
    eta: overshoot η > 0 (1.05).
    beta: backward step β in (0, 1] (0.9).
    norm: "Linf" or "L2" (any case).

  Returns:
    `x_adv`: per example the first successful adversarial example, or `x`
    where every run failed (and where `x` is misclassified already).

  Raises:
    ConfigError: a hyperparameter out of range, or a missing key.
  """
  norm = check_norm_and_eps(norm, eps, x, y)
  num_steps = check_steps(num_steps)
  num_target_classes = check_target_classes(num_target_classes)
  num_restarts = check_steps(num_restarts, "num_restarts", minimum=1)
  if not isinstance(targeted, bool):
    raise ConfigError(f"targeted must be True or False, got {targeted!r}.")
  _check_unit_interval(alpha_max, "alpha_max", closed_low=True)
  check_positive(eta, "eta")
  _check_unit_interval(beta, "beta", closed_low=False)
  if num_restarts > 1 and key is None:
    raise ConfigError("fab with num_restarts > 1 needs a PRNG key for the "
                      "random restarts: pass key=jax.random.key(...).")
  num_classes = num_classes_of(logits_fn, x)
  if num_classes < 2:
    raise ConfigError(f"fab needs at least 2 classes, the model has "
                      f"{num_classes}.")
  eps = jnp.asarray(eps, x.dtype)
  alpha_max = jnp.asarray(alpha_max, jnp.float32)
  eta = jnp.asarray(eta, jnp.float32)
  beta = jnp.asarray(beta, x.dtype)
  clean_logits = logits_fn(x)
  robust = jnp.argmax(clean_logits, axis=-1) == y

  num_passes = min(num_target_classes, num_classes - 1) if targeted else 1
  targets = (ranked_classes(clean_logits, num_passes) if targeted else
             jnp.zeros((num_passes, x.shape[0]), jnp.int32))
  runs_targets = jnp.repeat(targets, num_restarts, axis=0)
  runs_restart = np.tile(np.arange(num_restarts), num_passes)
  keys = jax.random.split(key if key is not None else jax.random.key(0),
                          num_passes * num_restarts)

  def one_run(carry, inputs):
    x_adv, robust = carry
    target, restart, k = inputs

    def run(_):
      if norm == "L2":
        noise = l2_normalize(jax.random.normal(k, x.shape, x.dtype))
      else:
        noise = jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0)
        noise = noise / per_example(jnp.maximum(_linf_norm(noise), 1e-12), x)
      x_start = jnp.where(restart > 0,
                          jnp.clip(x + 0.5 * eps * noise, 0.0, 1.0), x)
      held = hold_inactive(logits_fn, robust, x_adv)
      adv, size = _fab_run(held, x, y, x_start, target if targeted else None,
                           num_steps=num_steps, alpha_max=alpha_max, eta=eta,
                           beta=beta, norm=norm)
      return accept_run(logits_fn, y, robust, x_adv, adv,
                        success=(size < _FAR) & (lp_norm(norm, adv - x) <= eps))

    return jax.lax.cond(jnp.any(robust), run, lambda _: (x_adv, robust),
                        None), None

  (x_adv, _), _ = jax.lax.scan(
      one_run, (x, robust), (runs_targets, jnp.asarray(runs_restart), keys))
  return x_adv


def _check_unit_interval(value, name: str, *, closed_low: bool) -> None:
  concrete = concrete_scalar(value, name)
  if concrete is None:
    return
  low_ok = concrete >= 0 if closed_low else concrete > 0
  if not (low_ok and concrete <= 1):
    interval = "[0, 1]" if closed_low else "(0, 1]"
    raise ConfigError(f"{name} must lie in {interval}, got {value!r}.")


__all__ = ["fab", "project_l2_hyperplane", "project_linf_hyperplane"]
