"""Validation of attack hyperparameters and inputs, shared by every attack.

Concrete Python/NumPy values are checked and a `ConfigError` names the value
and what is allowed; traced values pass unchecked (checking them would break
`jit`). Loop lengths must be concrete Python integers.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.errors import ConfigError


def _is_traced(value) -> bool:
  return isinstance(value, jax.core.Tracer)


def concrete_scalar(value, name: str) -> Optional[float]:
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


def check_eps(eps, name: str = "eps", *, norm: str = "Linf",
              x=None) -> None:
  """An L∞ ε in [0, 1]; an L2 radius >= 0 and, when the images `x`
  `[N, ...]` give d, at most √d (the diameter of [0, 1]^d: beyond it the
  ball holds every image)."""
  value = concrete_scalar(eps, name)
  if value is None:
    return
  if norm != "L2":
    if not 0.0 <= value <= 1.0:
      raise ConfigError(
          f"{name} must lie in [0, 1] (images are in [0, 1]; write 8/255 for "
          f"8 grey levels), got {eps!r}.")
    return
  if not value >= 0:
    raise ConfigError(f"{name} (an L2 radius) must be >= 0, got {eps!r}.")
  if x is not None:
    dim = math.prod(jnp.shape(x)[1:])
    if value > math.sqrt(dim):
      raise ConfigError(
          f"{name} (an L2 radius) must be at most √d = {math.sqrt(dim):.4g} "
          f"for images of {dim} values in [0, 1] (no two images are "
          f"further apart), got {eps!r}.")


def check_positive(value, name: str) -> None:
  concrete = concrete_scalar(value, name)
  if concrete is not None and not concrete > 0:
    raise ConfigError(f"{name} must be > 0, got {value!r}.")


def check_non_negative(value, name: str) -> None:
  concrete = concrete_scalar(value, name)
  if concrete is not None and not concrete >= 0:
    raise ConfigError(f"{name} must be >= 0, got {value!r}.")


def check_steps(value, name: str = "num_steps", minimum: int = 0) -> int:
  """A loop length: a Python (or NumPy) integer >= `minimum`."""
  if (isinstance(value, bool) or _is_traced(value) or
      not isinstance(value, (int, np.integer))):
    raise ConfigError(
        f"{name} must be a Python integer >= {minimum} (it fixes the length of "
        f"the attack's loop), got {value!r}.")
  if value < minimum:
    raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def check_inputs(x, y) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ConfigError(
        f"attack inputs must be float images in [0, 1], got dtype "
        f"{jnp.result_type(x)} (convert uint8 images with x / 255).")
  if jnp.ndim(y) != 1 or jnp.shape(y)[0] != jnp.shape(x)[0]:
    raise ConfigError(
        f"labels must have shape [N] matching images [N, ...]; got labels "
        f"{jnp.shape(y)} for images {jnp.shape(x)}.")
