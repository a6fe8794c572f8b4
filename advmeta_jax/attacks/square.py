"""Square Attack, L∞ and L2 (Andriushchenko, Croce, Flammarion & Hein 2020,
"Square Attack: a query-efficient black-box adversarial attack via random
search", ECCV, arXiv:1912.00049): score-based, no gradients. The last attack
of AutoAttack's standard run. The package docstring (`advmeta_jax.attacks`)
states the conventions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.checks import concrete_scalar
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.linf import check_norm_and_eps
from advmeta_jax.attacks.linf import hold_inactive
from advmeta_jax.attacks.norms import per_example
from advmeta_jax.attacks.linf import margin
from advmeta_jax.attacks.norms import l2_normalize
from advmeta_jax.attacks.norms import lp_norm
from advmeta_jax.errors import ConfigError

# p_selection: iteration thresholds (in units of 10,000 queries when
# rescaled) after which the fraction p of pixels in a square halves.
_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(iteration: int, *, num_queries: int, p_init: float,
                    rescale_schedule: bool) -> float:
  """p at a (0-based) iteration: the schedule of square sizes (the reference
  code's `p_selection`).

  p = p_init for iterations <= 10, then halves after 10, 50, 200, 500, 1000,
  2000, 4000, 6000 and 8000 iterations (p_init/512 beyond). With
  `rescale_schedule` the iteration is first mapped to ⌊i/num_queries·10⁴⌋,
  so that the whole schedule fits any budget (the Square Attack paper's
  code); AutoAttack runs it unscaled with 5000 queries.
  """
  if rescale_schedule:
    iteration = int(iteration / num_queries * 10000)
  halvings = sum(iteration > t for t in _THRESHOLDS)
  return p_init / 2 ** halvings


def square_sizes(height: int, width: int, *, num_queries: int, p_init: float,
                 rescale_schedule: bool) -> np.ndarray:
  """Side s of the square at every iteration, `[num_queries]` int32:
  s = max(round(√(p · H · W)), 1), capped at min(H, W)."""
  sizes = [max(int(round(math.sqrt(square_fraction(
      i, num_queries=num_queries, p_init=p_init,
      rescale_schedule=rescale_schedule) * height * width))), 1)
           for i in range(num_queries)]
  return np.minimum(np.asarray(sizes, np.int32), min(height, width))


def square_sizes_l2(height: int, width: int, *, num_queries: int,
                    p_init: float, rescale_schedule: bool) -> np.ndarray:
  """Side of the L2 windows at every iteration, `[num_queries]` int32: the
  reference's s = max(round(√(p · H · W)), 3), made odd, capped here at the
  largest odd side that fits the image (the reference has no cap: at
  p = 1 its window would not fit)."""
  cap = min(height, width) - (1 - min(height, width) % 2)
  sizes = []
  for i in range(num_queries):
    side = max(int(round(math.sqrt(square_fraction(
        i, num_queries=num_queries, p_init=p_init,
        rescale_schedule=rescale_schedule) * height * width))), 3)
    sizes.append(min(side + 1 - side % 2, cap))
  return np.asarray(sizes, np.int32)


def _eta_rectangle(rows: int, cols: int) -> np.ndarray:
  """Nested rectangles of weight 1/(k+1)² around the centre, unit L2 norm
  (the reference's `eta_rectangles`)."""
  delta = np.zeros((rows, cols), np.float32)
  top, left = rows // 2, cols // 2
  for k in range(max(rows // 2 + 1, cols // 2 + 1)):
    delta[max(top, 0):min(top + 2 * k + 1, rows),
          max(left, 0):min(left + 2 * k + 1, cols)] += 1.0 / (k + 1) ** 2
    top, left = top - 1, left - 1
  return delta / np.sqrt(np.sum(delta ** 2))


def eta_window(side: int) -> np.ndarray:
  """The L2 Square Attack's window update of side s (§3.2 of the paper, the
  reference's `eta`): two halves of nested rectangles of opposite signs
  (a "meta-pseudo-Gaussian"), unit L2 norm, `[s, s]`; the caller transposes
  it at random."""
  delta = np.zeros((side, side), np.float32)
  delta[:side // 2] = _eta_rectangle(side // 2, side)
  delta[side // 2:] = -_eta_rectangle(side - side // 2, side)
  return delta / np.sqrt(np.sum(delta ** 2))


def square(logits_fn: LogitsFn, x: Array, y: Array, *, eps, key: Array,
           num_queries: int = 5000, p_init: float = 0.8,
           rescale_schedule: bool = False,
           shared_squares: bool = False, norm: str = "Linf") -> Array:
  """Square Attack, untargeted, margin loss (Andriushchenko et al. 2020,
  Algorithm 1 with the L∞ sampling of §3.1 or the L2 sampling of §3.2).

  L∞: starts from vertical stripes x + ε·s, s ∈ {−1, +1} per column and
  channel. Each iteration proposes, per example, one square of side s_i at
  a uniform position whose pixels are set to x ± ε (one random sign per
  channel). The side follows `square_sizes` (p halves on a fixed schedule
  of iterations, from `p_init`).

  L2 (AutoAttack's `square.py`, L2 branch): starts from a grid of
  `eta_window`s of side ⌊H/5⌋ with a random sign per example and channel,
  scaled so that ‖δ‖₂ = ε. Each iteration draws two windows of side s_i
  (`square_sizes_l2`): the mass of δ in both moves into the first, which
  gets ±`eta_window` (random sign per channel, random transposition) plus
  its old content normalized, rescaled per channel to
  √(max(ε² − ‖δ‖², 0)/C + ‖δ_windows‖²); the second is zeroed, and δ is
  rescaled to ‖δ‖₂ = ε before clipping x + δ to [0, 1].

  Both keep a proposal if the margin loss z_y − max_{j≠y} z_j decreases or
  the example becomes misclassified; done examples stop changing. Only
  forward passes: the attack uses no gradients, so masked gradients do not
  stop it.

  One initial query plus up to `num_queries` iterations, in a
  `lax.while_loop` that stops once every example is fooled. Only examples
  correctly classified at `x` are attacked; the others, and those done, are
  held in the batch (see `apgd_t`). As in the reference, an example counts
  as fooled when misclassified in the batch of the final iterates.

  Differs from AutoAttack's `square.py` in two details, both the paper's
  Algorithm: each example draws its own windows, signs (and L2
  transpositions) (the reference draws one position for the whole batch per
  iteration), and positions range over all H − s + 1 rows and columns (the
  reference's `random_int(0, h − s)` never touches the last one).
  `shared_squares=True` samples as the reference does (one position per
  iteration for the batch, positions 0 … max(H − s, 1) − 1), for
  comparisons with it; it is weaker.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1], or the L2 radius.
    key: PRNG key (starts, positions, signs).
    num_queries: iterations, one query each (a Python int; 5000 in
      AutoAttack).
    p_init: initial fraction of pixels in a square, in (0, 1] (0.8).
    rescale_schedule: fit the schedule to `num_queries` (see
      `square_fraction`); False in AutoAttack, whose budget is 5000.
    shared_squares: the reference's sampling (see above).
    norm: "Linf" or "L2" (any case).

  Returns:
    `x_adv`: per example the adversarial example found, or `x` where the
    attack failed (and where `x` is misclassified already).

  Raises:
    ConfigError: a hyperparameter out of range, or a missing key.
  """
  norm = check_norm_and_eps(norm, eps, x, y)
  num_queries = check_steps(num_queries, "num_queries")
  p = concrete_scalar(p_init, "p_init")
  if p is None or not 0 < p <= 1:
    raise ConfigError(f"p_init must be a number in (0, 1] (a Python number: "
                      f"it fixes the square sizes), got {p_init!r}.")
  for name, flag in (("rescale_schedule", rescale_schedule),
                     ("shared_squares", shared_squares)):
    if not isinstance(flag, bool):
      raise ConfigError(f"{name} must be True or False, got {flag!r}.")
  if key is None:
    raise ConfigError("square needs a PRNG key: pass key=jax.random.key(...).")
  if x.ndim != 4:
    raise ConfigError(f"square attacks images [N, H, W, C], got shape "
                      f"{x.shape}.")
  if norm == "L2" and min(x.shape[1:3]) < 10:
    raise ConfigError(f"square with norm L2 needs images of at least 10×10 "
                      f"pixels (its first windows are a fifth of the side, "
                      f"at least 2), got {x.shape[1]}×{x.shape[2]}.")
  sampler = _L2Windows if norm == "L2" else _LinfSquares
  windows = sampler(x, jnp.asarray(eps, x.dtype), num_queries=num_queries,
                    p_init=p, rescale_schedule=rescale_schedule,
                    shared=shared_squares)

  k_init, k_loop = jax.random.split(key)
  active = jnp.argmax(logits_fn(x), axis=-1) == y
  held = hold_inactive(logits_fn, active, x)
  x_best = jnp.where(per_example(active, x), windows.start(k_init), x)
  loss_best = jnp.where(active, margin(held(x_best), y), -jnp.inf)

  def keep_going(state):
    i, _, loss = state
    return (i < num_queries) & jnp.any(loss > 0)

  def iteration(state):
    i, x_best, loss_best = state
    todo = loss_best > 0
    x_new = jnp.where(per_example(todo, x), windows.propose(
        jax.random.fold_in(k_loop, i), i, x_best), x_best)
    loss = margin(held(x_new), y)
    # The margin loss is both the objective and the success test (<= 0).
    accept = todo & ((loss < loss_best) | (loss <= 0))
    return (i + 1, jnp.where(per_example(accept, x), x_new, x_best),
            jnp.where(accept, loss, loss_best))

  _, x_best, _ = jax.lax.while_loop(keep_going, iteration,
                                    (jnp.int32(0), x_best, loss_best))
  fooled = active & (jnp.argmax(logits_fn(x_best), axis=-1) != y)
  return jnp.where(per_example(fooled, x), x_best, x)


def _signs(key: Array, shape, dtype) -> Array:
  return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0
                   ).astype(dtype)


class _LinfSquares:
  """The L∞ start (stripes) and proposals (a square of x ± ε)."""

  def __init__(self, x, eps, *, num_queries, p_init, rescale_schedule,
               shared):
    self.x, self.eps, self.shared = x, eps, shared
    _, self.height, self.width, _ = x.shape
    self.sizes = jnp.asarray(square_sizes(
        self.height, self.width, num_queries=num_queries, p_init=p_init,
        rescale_schedule=rescale_schedule))

  def start(self, key):
    n, _, width, channels = self.x.shape
    stripes = _signs(key, (n, 1, width, channels), self.x.dtype)
    return jnp.clip(self.x + self.eps * stripes, 0.0, 1.0)

  def propose(self, key, i, x_best):
    x, height, width = self.x, self.height, self.width
    k_h, k_w, k_s = jax.random.split(key, 3)
    s = self.sizes[i]
    inside, _, _, draws = _window(k_h, k_w, x.shape[0], height, width, s,
                                  self.shared)
    corner = jnp.clip(x + self.eps * _signs(k_s, (draws, 1, 1, x.shape[-1]),
                                            x.dtype), 0.0, 1.0)
    return jnp.where(inside, corner, x_best)


def _window(k_h, k_w, n, height, width, s, shared):
  """(mask `[draws, H, W, 1]`, top `[draws]`, left `[draws]`, draws) of
  one s × s window per example (one for the batch when `shared`, at the
  reference's positions)."""
  if shared:   # one window for the batch, as the reference
    draws, span_h, span_w = 1, jnp.maximum(height - s, 1), jnp.maximum(
        width - s, 1)
  else:
    draws, span_h, span_w = n, height - s + 1, width - s + 1
  top = jax.random.randint(k_h, (draws, 1, 1, 1), 0, span_h)
  left = jax.random.randint(k_w, (draws, 1, 1, 1), 0, span_w)
  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]
  inside = ((rows >= top) & (rows < top + s) &
            (cols >= left) & (cols < left + s))
  return inside, top[:, 0, 0, 0], left[:, 0, 0, 0], draws


class _L2Windows:
  """The L2 start (a grid of `eta_window`s) and window updates."""

  def __init__(self, x, eps, *, num_queries, p_init, rescale_schedule,
               shared):
    self.x, self.eps, self.shared = x, eps, shared
    _, self.height, self.width, _ = x.shape
    sizes = square_sizes_l2(self.height, self.width, num_queries=num_queries,
                            p_init=p_init, rescale_schedule=rescale_schedule)
    distinct = sorted(set(sizes.tolist()))
    # eta of every side in the schedule, at the origin of an H × W canvas,
    # as is and transposed: [sides, 2, H, W].
    canvas = np.zeros((len(distinct), 2, self.height, self.width), np.float32)
    for j, side in enumerate(distinct):
      canvas[j, 0, :side, :side] = eta_window(side)
      canvas[j, 1, :side, :side] = eta_window(side).T
    self.canvas = jnp.asarray(canvas)
    self.sizes = jnp.asarray(sizes)
    self.side_index = jnp.asarray(np.searchsorted(distinct, sizes))

  def start(self, key):
    x, height, width = self.x, self.height, self.width
    n, channels = x.shape[0], x.shape[-1]
    side = height // 5
    offset = (height - 5 * side) // 2
    cells = [(top, left) for top in range(offset, height - side + 1, side)
             for left in range(offset, width - side + 1, side)]
    k_flip, k_sign = jax.random.split(key)
    flips = jax.random.bernoulli(k_flip, 0.5, (len(cells),))
    signs = _signs(k_sign, (len(cells), n, 1, 1, channels), x.dtype)
    eta = jnp.asarray(eta_window(side))
    delta = jnp.zeros(x.shape, x.dtype)
    for c, (top, left) in enumerate(cells):
      pattern = jnp.where(flips[c], eta.T, eta)[None, :, :, None]
      delta = delta.at[:, top:top + side, left:left + side, :].add(
          pattern * signs[c])
    return jnp.clip(x + self.eps * l2_normalize(delta), 0.0, 1.0)

  def propose(self, key, i, x_best):
    x, eps = self.x, self.eps.astype(jnp.float32)
    n, height, width, channels = x.shape
    k = jax.random.split(key, 6)
    s = self.sizes[i]
    first, top, left, draws = _window(k[0], k[1], n, height, width, s,
                                      self.shared)
    second, _, _, _ = _window(k[2], k[3], n, height, width, s, self.shared)
    # The eta window, transposed at random, moved to the first window.
    flips = jax.random.bernoulli(k[4], 0.5, (draws,)).astype(jnp.int32)
    eta = self.canvas[self.side_index[i]][flips]            # [draws, H, W]
    eta = jax.vmap(lambda e, t, l: jnp.roll(e, (t, l), axis=(0, 1)))(
        eta, top, left)[..., None]
    delta = (x_best - x).astype(jnp.float32)

    def window_norm(mask):   # per example and channel, [N, 1, 1, C]
      return jnp.sqrt(jnp.sum(jnp.where(mask, delta, 0.0) ** 2, axis=(1, 2),
                              keepdims=True))

    image_norm = per_example(lp_norm("L2", delta), x)
    windows_norm = per_example(lp_norm("L2", jnp.where(
        first | second, delta, 0.0)), x)
    update = (eta * _signs(k[5], (n, 1, 1, channels), jnp.float32) +
              jnp.where(first, delta, 0.0) / (1e-12 + window_norm(first)))
    update = update / (1e-12 + jnp.sqrt(jnp.sum(
        update ** 2, axis=(1, 2), keepdims=True))) * jnp.sqrt(
            jnp.maximum(eps ** 2 - image_norm ** 2, 0.0) / channels +
            windows_norm ** 2)
    delta = jnp.where(first, update, jnp.where(second, 0.0, delta))
    return jnp.clip(x + (eps * l2_normalize(delta)).astype(x.dtype), 0.0,
                    1.0)


__all__ = ["eta_window", "square", "square_fraction", "square_sizes",
           "square_sizes_l2"]
