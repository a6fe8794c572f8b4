"""Attacks by name, for flags: `names()`, `get()`, `hyperparameters()`,
`make_attack()` and `parse_eps()`.

`make_attack(name, hparams)` turns flag values (numbers or strings such as
"8/255", "20", "true") into a uniform `(logits_fn, x, y, *, key=None)`
callable, validating every value before anything is traced.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from advmeta_jax.attacks.checks import check_eps
from advmeta_jax.attacks.checks import check_non_negative
from advmeta_jax.attacks.checks import check_positive
from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.autoattack import VERSIONS
from advmeta_jax.attacks.autoattack import autoattack
from advmeta_jax.attacks.autoattack import autoattack_with_report
from advmeta_jax.attacks.cw import carlini_wagner_l2
from advmeta_jax.attacks.fab import fab
from advmeta_jax.attacks.linf import APGD_LOSSES
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.linf import apgd
from advmeta_jax.attacks.linf import apgd_t
from advmeta_jax.attacks.linf import fgsm
from advmeta_jax.attacks.linf import mi_fgsm
from advmeta_jax.attacks.linf import pgd
from advmeta_jax.attacks.square import square
from advmeta_jax.errors import ConfigError

ATTACKS: Dict[str, Callable[..., Array]] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "mi_fgsm": mi_fgsm,
    "cw_l2": carlini_wagner_l2,
    "apgd": apgd,
    "apgd_t": apgd_t,
    "fab": fab,
    "square": square,
    "autoattack": autoattack,
}
_ALIASES = {"carlini_wagner_l2": "cw_l2", "cw": "cw_l2", "apgd_ce": "apgd",
            "apgd-ce": "apgd", "apgd-t": "apgd_t", "fab-t": "fab",
            "fab_t": "fab"}

# Hyperparameters whose string form is an integer, a bool or a name.
_INT_HPARAMS = ("num_steps", "binary_search_steps", "num_queries",
                "num_target_classes", "num_restarts", "eot_iter")
_BOOL_HPARAMS = ("random_start", "batch_consistent", "abort_early",
                 "targeted", "rescale_schedule", "shared_squares")
_STR_HPARAMS = ("loss", "version")
# Hyperparameters in [0, 1] (`p_init` excludes 0, `beta` too).
_UNIT_HPARAMS = ("alpha_max", "beta", "p_init")


def names() -> Tuple[str, ...]:
  """Registered attack names (the values of an `--attack` flag)."""
  return tuple(sorted(ATTACKS))


def canonical_name(name: str) -> str:
  """The registered name of `name` or of the attack it is an alias of
  ("apgd_ce" -> "apgd", "fab_t" -> "fab", "cw" -> "cw_l2").

  Raises:
    ConfigError: an unknown name, with the registered ones.
  """
  get(name)
  return _ALIASES.get(name, name)


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
  if _ALIASES.get(name, name) == "autoattack":
    def with_report(logits_fn: LogitsFn, x: Array, y: Array, *,
                    key: Optional[Array] = None):
      return autoattack_with_report(logits_fn, x, y, key=key, **values)
    # `(x_adv, report)`: the meta-test protocol records the per-stage
    # robust accuracy of the report beside the attacked accuracy.
    attack.with_report = with_report  # type: ignore[attr-defined]
  return attack


def _validate_early(name: str, values: Mapping[str, Any]) -> None:
  for k, v in values.items():
    if k == "eps":
      check_eps(v)
    elif k in ("step_size", "learning_rate", "eta") and v is not None:
      check_positive(v, k)
    elif k in ("c", "confidence", "decay"):
      check_non_negative(v, k)
    elif k in _INT_HPARAMS:
      # 0 steps or queries: the identity, except inside AutoAttack.
      check_steps(v, k, minimum=0 if k in ("num_steps", "num_queries")
                   and _ALIASES.get(name, name) != "autoattack" else 1)
    elif k in _UNIT_HPARAMS:
      check_non_negative(v, k)
      if (k != "alpha_max" and float(v) <= 0) or float(v) > 1:
        raise ConfigError(f"{name}: {k} must lie in "
                          f"{'[0, 1]' if k == 'alpha_max' else '(0, 1]'}, "
                          f"got {v!r}.")
    elif k == "version" and v not in VERSIONS:
      raise ConfigError(f"unknown AutoAttack version {v!r}; choose one of: "
                        f"{', '.join(VERSIONS)}.")
    elif k == "loss" and v not in APGD_LOSSES:
      raise ConfigError(f"unknown APGD loss {v!r}; choose one of: "
                        f"{', '.join(APGD_LOSSES)}.")
    elif k in _BOOL_HPARAMS and not isinstance(v, bool):
      raise ConfigError(f"{name}: {k} must be True or False, got {v!r}.")


__all__ = [
    "ATTACKS", "canonical_name", "get", "hyperparameters", "make_attack",
    "names", "parse_eps",
]


# The training attacks: the L-inf attacks cheap enough to run in every
# meta-training step (not the evaluation ensembles APGD-T, FAB, Square and
# AutoAttack).
TRAIN_ATTACKS = ("apgd", "fgsm", "mi_fgsm", "pgd")


def train_attacks() -> Tuple[str, ...]:
  """The attacks that may train (`--train_attack`)."""
  return TRAIN_ATTACKS
