"""The two threat models of the attacks: L∞ and L2 balls around `x`.

What differs between an L∞ and an L2 attack of the same algorithm is small
and lives here: the steepest-ascent direction of a gradient (its sign, or
the gradient over its L2 norm), the projection onto the ball ∩ [0, 1]^d,
the random starts and the per-example norm. The loops (PGD, APGD, FAB,
Square) take `norm` and call these.

The L2 projection is AutoAttack's and torchattacks' (`PGDL2`, APGD's L2
branch): rescale δ = x' − x to the ball, x + δ·min(1, ε/‖δ‖₂), then clip to
[0, 1]. Clipping moves every coordinate towards `x` (which is in [0, 1]), so
the result stays in the ball; it is not the exact Euclidean projection onto
the intersection, which no reference uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from advmeta_jax.errors import ConfigError

Array = jax.Array

NORMS = ("Linf", "L2")
_TINY = 1e-12   # AutoAttack's guard in its L2 normalizations


def canonical_norm(norm) -> str:
  """"Linf" or "L2" for a norm written in any case ("linf", "l2", "L2").

  Raises:
    ConfigError: another value.
  """
  if isinstance(norm, str):
    for name in NORMS:
      if norm.strip().lower() == name.lower():
        return name
  raise ConfigError(f"unknown norm {norm!r}; choose one of: "
                    f"{', '.join(NORMS)} (any case).")


def per_example(values: Array, like: Array) -> Array:
  """Reshapes `[N]` to `[N, 1, 1, …]` to broadcast against `like`."""
  return values.reshape(values.shape + (1,) * (like.ndim - 1))


def lp_norm(norm: str, v: Array) -> Array:
  """‖v_n‖∞ or ‖v_n‖₂ of each example, `[N]` (float32)."""
  flat = v.reshape(v.shape[0], -1).astype(jnp.float32)
  if norm == "L2":
    return jnp.sqrt(jnp.sum(flat * flat, axis=1))
  return jnp.max(jnp.abs(flat), axis=1)


def l2_normalize(v: Array) -> Array:
  """v_n / (‖v_n‖₂ + 1e-12) per example (0 stays 0)."""
  return v / per_example(lp_norm("L2", v) + _TINY, v).astype(v.dtype)


def steepest_ascent(norm: str, grad: Array, dtype) -> Array:
  """The unit-norm direction of steepest ascent of a linear function with
  gradient `grad`: sign(g) for L∞, g/‖g‖₂ for L2."""
  if norm == "L2":
    return l2_normalize(grad.astype(jnp.float32)).astype(dtype)
  return jnp.sign(grad).astype(dtype)


def project_linf(x_adv: Array, x: Array, eps: Array) -> Array:
  """Projection onto {‖x' − x‖∞ ≤ ε} ∩ [0, 1]^d (exactly `x` when ε = 0)."""
  return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def project_l2(x_adv: Array, x: Array, eps: Array) -> Array:
  """x + δ·min(1, ε/‖δ‖₂), δ = x_adv − x, clipped to [0, 1] (see the module
  docstring); exactly `x` when ε = 0."""
  delta = x_adv - x
  size = lp_norm("L2", delta)
  scale = jnp.minimum(1.0, eps.astype(jnp.float32) / jnp.maximum(size, 1e-30))
  return jnp.clip(x + delta * per_example(scale, x).astype(x.dtype), 0.0, 1.0)


def project(norm: str, x_adv: Array, x: Array, eps: Array) -> Array:
  """The projection of `norm` onto its ε-ball around `x`, within [0, 1]."""
  return (project_l2 if norm == "L2" else project_linf)(x_adv, x, eps)


def linf_random_start(key: Array, x: Array, eps: Array) -> Array:
  """x + U(−ε, ε)^d, clipped to [0, 1] (Madry et al.; AQ, TAFL)."""
  noise = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
  return project_linf(x + eps * noise, x, eps)


def l2_random_start(key: Array, x: Array, eps: Array) -> Array:
  """x + r·ε·u, u uniform on the unit sphere (a normalized Gaussian), r ~
  U(0, 1) per example, clipped to [0, 1]: torchattacks' `PGDL2` start (its
  radius is uniform, not its volume: in high dimension a volume-uniform
  point lies on the sphere)."""
  k_dir, k_radius = jax.random.split(key)
  direction = l2_normalize(jax.random.normal(k_dir, x.shape, jnp.float32))
  radius = jax.random.uniform(k_radius, (x.shape[0],), jnp.float32)
  delta = direction * per_example(radius, x) * eps.astype(jnp.float32)
  return jnp.clip(x + delta.astype(x.dtype), 0.0, 1.0)


def l2_sphere_start(key: Array, x: Array, eps: Array) -> Array:
  """x + ε·u, u uniform on the unit sphere, clipped to [0, 1]: the start of
  AutoAttack's APGD with norm L2 (`autopgd_base.py`)."""
  direction = l2_normalize(jax.random.normal(key, x.shape, jnp.float32))
  return jnp.clip(x + (direction * eps.astype(jnp.float32)).astype(x.dtype),
                  0.0, 1.0)


def random_start(norm: str, key: Array, x: Array, eps: Array) -> Array:
  """PGD's random start: uniform in the L∞ box, or `l2_random_start`."""
  return (l2_random_start if norm == "L2" else linf_random_start)(key, x, eps)


def apgd_start(norm: str, key: Array, x: Array, eps: Array) -> Array:
  """APGD's random start: uniform in the L∞ box, or on the L2 sphere."""
  return (l2_sphere_start if norm == "L2" else linf_random_start)(key, x, eps)


__all__ = ["NORMS", "apgd_start", "canonical_norm", "l2_normalize",
           "l2_random_start", "l2_sphere_start", "linf_random_start",
           "lp_norm", "per_example", "project", "project_l2", "project_linf",
           "random_start", "steepest_ascent"]
