"""Square Attack, L∞ (Andriushchenko, Croce, Flammarion & Hein 2020, "Square
Attack: a query-efficient black-box adversarial attack via random search",
ECCV): score-based, no gradients. The last attack of AutoAttack's standard
run. The package docstring (`advmeta_jax.attacks`) states the conventions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.attacks.checks import check_eps
from advmeta_jax.attacks.checks import check_inputs
from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.checks import concrete_scalar
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.linf import hold_inactive
from advmeta_jax.attacks.linf import per_example
from advmeta_jax.attacks.linf import margin
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


def square(logits_fn: LogitsFn, x: Array, y: Array, *, eps, key: Array,
           num_queries: int = 5000, p_init: float = 0.8,
           rescale_schedule: bool = False,
           shared_squares: bool = False) -> Array:
  """Square Attack, L∞, untargeted, margin loss (Andriushchenko et al. 2020,
  Algorithm 1 with the L∞ sampling of §3.1).

  Starts from vertical stripes x + ε·s, s ∈ {−1, +1} per column and channel.
  Each iteration proposes, per example, one square of side s_i at a uniform
  position whose pixels are set to x ± ε (one random sign per channel),
  queries the model and keeps the proposal if the margin loss
  z_y − max_{j≠y} z_j decreases or the example becomes misclassified; done
  examples stop changing. The side follows `square_sizes` (p halves on a
  fixed schedule of iterations, from `p_init`). Only forward passes: the
  attack uses no gradients, so masked gradients do not stop it.

  One initial query plus up to `num_queries` iterations, in a
  `lax.while_loop` that stops once every example is fooled. Only examples
  correctly classified at `x` are attacked; the others, and those done, are
  held in the batch (see `apgd_t`). As in the reference, an example counts
  as fooled when misclassified in the batch of the final iterates.

  Differs from AutoAttack's `square.py` in two details, both the paper's
  Algorithm: each example draws its own square position and signs (the
  reference draws one square for the whole batch per iteration), and the
  position ranges over all H − s + 1 rows and columns (the reference's
  `random_int(0, h − s)` never touches the last one). `shared_squares=True`
  samples as the reference does (one square per iteration for the batch,
  positions 0 … max(H − s, 1) − 1), for comparisons with it; it is weaker.

  Args:
    logits_fn: `[N, H, W, C]` images in [0, 1] -> `[N, classes]` logits.
    x: clean images `[N, H, W, C]` in [0, 1].
    y: integer labels `[N]`.
    eps: ε, the L∞ budget in [0, 1].
    key: PRNG key (stripes, positions, signs).
    num_queries: iterations, one query each (a Python int; 5000 in
      AutoAttack).
    p_init: initial fraction of pixels in a square, in (0, 1] (0.8).
    rescale_schedule: fit the schedule to `num_queries` (see
      `square_fraction`); False in AutoAttack, whose budget is 5000.
    shared_squares: the reference's sampling (see above).

  Returns:
    `x_adv`: per example the adversarial example found, or `x` where the
    attack failed (and where `x` is misclassified already).

  Raises:
    ConfigError: a hyperparameter out of range, or a missing key.
  """
  check_eps(eps)
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
  check_inputs(x, y)
  if x.ndim != 4:
    raise ConfigError(f"square attacks images [N, H, W, C], got shape "
                      f"{x.shape}.")
  n, height, width, channels = x.shape
  eps = jnp.asarray(eps, x.dtype)
  sizes = jnp.asarray(square_sizes(height, width, num_queries=num_queries,
                                   p_init=p, rescale_schedule=rescale_schedule))
  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]

  def signs(k, shape):
    return jnp.where(jax.random.bernoulli(k, 0.5, shape), 1.0, -1.0
                     ).astype(x.dtype)

  k_init, k_loop = jax.random.split(key)
  active = jnp.argmax(logits_fn(x), axis=-1) == y
  held = hold_inactive(logits_fn, active, x)
  stripes = signs(k_init, (n, 1, width, channels))
  x_best = jnp.where(per_example(active, x),
                     jnp.clip(x + eps * stripes, 0.0, 1.0), x)
  loss_best = jnp.where(active, margin(held(x_best), y), -jnp.inf)

  def keep_going(state):
    i, _, loss = state
    return (i < num_queries) & jnp.any(loss > 0)

  def iteration(state):
    i, x_best, loss_best = state
    k_h, k_w, k_s = jax.random.split(jax.random.fold_in(k_loop, i), 3)
    s = sizes[i]
    if shared_squares:   # one square for the batch, as the reference
      draws, span_h, span_w = 1, jnp.maximum(height - s, 1), jnp.maximum(
          width - s, 1)
    else:
      draws, span_h, span_w = n, height - s + 1, width - s + 1
    top = jax.random.randint(k_h, (draws, 1, 1, 1), 0, span_h)
    left = jax.random.randint(k_w, (draws, 1, 1, 1), 0, span_w)
    inside = ((rows >= top) & (rows < top + s) &
              (cols >= left) & (cols < left + s))
    corner = jnp.clip(x + eps * signs(k_s, (draws, 1, 1, channels)), 0.0,
                      1.0)
    todo = loss_best > 0
    x_new = jnp.where(inside & per_example(todo, x), corner, x_best)
    loss = margin(held(x_new), y)
    # The margin loss is both the objective and the success test (<= 0).
    accept = todo & ((loss < loss_best) | (loss <= 0))
    return (i + 1, jnp.where(per_example(accept, x), x_new, x_best),
            jnp.where(accept, loss, loss_best))

  _, x_best, _ = jax.lax.while_loop(keep_going, iteration,
                                    (jnp.int32(0), x_best, loss_best))
  fooled = active & (jnp.argmax(logits_fn(x_best), axis=-1) != y)
  return jnp.where(per_example(fooled, x), x_best, x)


__all__ = ["square", "square_fraction", "square_sizes"]
