"""Attack budgets written as flag text: an L∞ ε ("8/255") or an L2 radius
("l2:0.5").

A budget without a prefix is L∞, in [0, 1] (images are in [0, 1]); one
written `l2:<radius>` is an L2 radius in the same [0, 1]-pixel units, >= 0
(the attack also refuses one above √d, d the values per image, where it
sees the images). `linf:8/255` is the L∞ ε spelled out. The meta-test's
`--eps` and the attacks' `eps` flag values take these.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Tuple

import numpy as np

from advmeta_jax.attacks.norms import canonical_norm
from advmeta_jax.errors import ConfigError

_PREFIX = re.compile(r"^\s*(linf|l2)\s*:(.*)$", re.IGNORECASE)


def _number(value, name: str) -> Tuple[float, str]:
  """(value, its text) of a number or a fraction such as 8/255."""
  if isinstance(value, str):
    parts = value.strip().split("/")
    try:
      numbers = [float(part) for part in parts]
    except ValueError:
      numbers = []
    if len(numbers) not in (1, 2):
      hint = (" (an L2 radius such as l2:0.5 is a budget of --eps, or "
              "eps=0.5 with norm='L2')" if _PREFIX.match(value) else "")
      raise ConfigError(
          f"{name} must be a number or a fraction such as 8/255, got "
          f"{value!r}{hint}.")
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
    raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}.")
  return result, value


def parse_eps(value, name: str = "eps", *, norm: str = "Linf") -> float:
  """Parses an ε of `norm`: `"8/255"`, `"0.2/255"`, `"0.03"`, or a number.

  Returns:
    ε as a float: in [0, 1] for L∞, >= 0 for L2.

  Raises:
    ConfigError: not a number or fraction, negative, not finite, or (L∞)
      above 1 (images are in [0, 1]: ADML's "eps = 2" is 2/255).
  """
  result, text = _number(value, name)
  if canonical_norm(norm) == "Linf" and result > 1:
    hint = (f"{text} is more than the whole range (255/255)"
            if isinstance(text, str) and "/" in text
            else f"for {text} grey levels write {text}/255")
    raise ConfigError(f"{name} must be at most 1 (images are in [0, 1]), got "
                      f"{text!r}; {hint}.")
  return result


def split_budget(text) -> Tuple[str, str]:
  """(norm, ε text) of a budget: `"l2:0.5"` -> ("L2", "0.5"), `"8/255"` ->
  ("Linf", "8/255"); a number is an L∞ ε."""
  match = _PREFIX.match(text) if isinstance(text, str) else None
  if match is None:
    return "Linf", text
  return canonical_norm(match.group(1)), match.group(2).strip()


def parse_budget(value, name: str = "eps") -> Tuple[str, float]:
  """(norm, ε) of a budget such as `"8/255"`, `"linf:0.03"` or `"l2:0.5"`.

  Raises:
    ConfigError: a bad number, or one out of range for its norm.
  """
  norm, text = split_budget(value)
  if text is not value:   # name the budget as written in the error
    name = f"{name} ({value!r})"
  return norm, parse_eps(text, name, norm=norm)


def budget_text(eps, norm: Optional[str] = None) -> str:
  """The budget text of ε under `norm`: `l2:<ε>` for L2, ε itself for L∞."""
  if norm is not None and canonical_norm(norm) == "L2":
    return f"l2:{eps}"
  return str(eps)


__all__ = ["budget_text", "parse_budget", "parse_eps", "split_budget"]
