"""The checks of the settings' values: each `(value, name) -> None` raises
`ConfigError` naming the setting, the value and what is allowed."""

from __future__ import annotations

import math
from typing import Any, Callable

from advmeta_jax.errors import ConfigError

Check = Callable[[Any, str], None]


def is_int(value) -> bool:
  return (not isinstance(value, bool) and isinstance(value, (int, float))
          and float(value).is_integer())


def positive_int(value, name: str) -> None:
  if not is_int(value) or value < 1:
    raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


def non_negative_int(value, name: str) -> None:
  if not is_int(value) or value < 0:
    raise ConfigError(f"{name} must be >= 0 (an integer), got {value!r}.")


def integer(value, name: str) -> None:
  if not is_int(value):
    raise ConfigError(f"{name} must be an integer, got {value!r}.")


def positive_float(value, name: str) -> None:
  if isinstance(value, bool) or not (
      isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
    raise ConfigError(f"{name} must be a finite number > 0, got {value}.")


def non_negative_float(value, name: str) -> None:
  if isinstance(value, bool) or not (
      isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
    raise ConfigError(f"{name} must be a finite number >= 0, got {value}.")


def fraction(value, name: str) -> None:
  if isinstance(value, bool) or not (isinstance(value, (int, float))
                                     and 0 < value <= 1):
    raise ConfigError(f"{name} must be in (0, 1], got {value}.")


def n_way_check(value, name: str) -> None:
  positive_int(value, name)
  if value < 2:
    raise ConfigError(f"{name} must be at least 2, got {value}.")


# The value of a speed/memory setting resolved per backend from the table of
# autotune.py (`autotune.resolve`).
AUTO = "auto"


def auto_or_bool(value, name: str) -> None:
  if value != AUTO and not isinstance(value, bool):
    raise ConfigError(f"{name} must be auto, true or false, got {value!r}.")


def auto_or_non_negative_int(value, name: str) -> None:
  if value != AUTO and (not is_int(value) or value < 0):
    raise ConfigError(f"{name} must be auto or an integer >= 0, got "
                      f"{value!r}.")


class AutoBool:
  """Flag kind: true, false or auto (`--remat`, `--noremat`, `--remat=auto`)."""


class AutoInt:
  """Flag kind: an integer or auto (`--parallel_tasks=2`, `=auto`)."""


def optional(check: Check) -> Check:
  """`check`, letting None (the learner's default) through."""
  def check_or_none(value, name: str) -> None:
    if value is not None:
      check(value, name)
  return check_or_none
