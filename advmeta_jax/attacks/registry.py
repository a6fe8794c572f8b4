"""Attacks by name: one `AttackEntry` per attack holds what the library knows
about it, and every reader (flags, the meta-test protocol, the training
attack, the benchmark, the launchers' help, docs/attacks.md) asks the entry.

An entry holds:
  name, aliases   the `--attacks`/`--train_attack` values that select it.
  fn              the attack `(logits_fn, x, y, *, hyperparameters)`.
  description     one line, for `--help` and docs/attacks.md.
  kinds           how each keyword-only hyperparameter (but `key`) is read
                  from a flag string and checked before anything is traced;
                  the defaults come from `fn`'s signature (`hparams`).
  trains          whether it may be the training attack (`--train_attack`).
  test            its meta-test settings from a `Budget` (ε and the step
                  budgets `--attack_steps`, `--apgd_steps`,
                  `--square_queries`), described in words by `test_help`;
                  None: not a test attack.
  presets         named settings that are test attacks of their own
                  (`cw_l2_strong`).
  benchmark       what `launch.benchmark --section=attacks` times it with,
                  from a `BenchmarkBudget`; None: not benchmarked.
  toy_caps        caps on loop lengths at toy scale (`--shrink`).
  report          `(logits_fn, x, y, *, key, **hparams) -> (x_adv, report)`
                  when the attack reports per-stage accuracies (AutoAttack).

`register(entry)` adds one (the library's own are in builtin.py), `get(name)`
returns it. `make_attack(name,
hparams)` turns flag values (numbers or strings such as "8/255", "20",
"true") into a uniform `(logits_fn, x, y, *, key=None)` callable.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
from typing import (Any, Callable, Dict, Iterator, Mapping, NamedTuple,
                    Optional, Tuple)

from advmeta_jax.attacks.budgets import parse_budget
from advmeta_jax.attacks.budgets import parse_eps
from advmeta_jax.attacks.budgets import split_budget
from advmeta_jax.attacks.checks import check_eps
from advmeta_jax.attacks.checks import check_non_negative
from advmeta_jax.attacks.checks import check_positive
from advmeta_jax.attacks.checks import check_steps
from advmeta_jax.attacks.linf import Array
from advmeta_jax.attacks.linf import LogitsFn
from advmeta_jax.attacks.norms import canonical_norm
from advmeta_jax.errors import ConfigError

REQUIRED = inspect.Parameter.empty


# --- kinds of hyperparameters -------------------------------------------------

def _read_number(attack: str, key: str, value: str):
  text = value.strip()
  parts = text.split("/")   # step sizes, c, ... accept fractions (2/255) too
  try:
    if len(parts) == 2:
      return float(parts[0]) / float(parts[1])
    if len(parts) == 1:
      return float(text)
  except (ValueError, ZeroDivisionError):
    pass
  raise ConfigError(f"{attack}: {key} must be a number or a fraction such as "
                    f"2/255, got {value!r}.")


def _read_int(attack: str, key: str, value: str):
  try:
    return int(value.strip())
  except ValueError:
    raise ConfigError(f"{attack}: {key} must be an integer, got "
                      f"{value!r}.") from None


def _read_bool(attack: str, key: str, value: str):
  text = value.strip().lower()
  if text in ("true", "1", "yes"):
    return True
  if text in ("false", "0", "no"):
    return False
  raise ConfigError(f"{attack}: {key} must be true or false, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Kind:
  """How a hyperparameter is read from a flag string and checked.

  Attributes:
    read: `(attack, name, flag string) -> value`.
    check: `(attack, name, value) -> None`, raising `ConfigError`; run on
      every value given to `make_attack` (read or not).
    text: what is allowed, in words (docs/attacks.md).
  """
  read: Callable[[str, str, str], Any]
  check: Callable[[str, str, Any], None]
  text: str


def _check_bool(attack: str, key: str, value) -> None:
  if not isinstance(value, bool):
    raise ConfigError(f"{attack}: {key} must be True or False, got {value!r}.")


def steps(minimum: int = 0) -> Kind:
  """A loop length (steps, queries, restarts): a Python int >= `minimum`."""
  return Kind(_read_int, lambda a, k, v: check_steps(v, k, minimum=minimum),
              f"integer >= {minimum}")


def choice(values: Tuple[str, ...], what: str) -> Kind:
  """A name among `values`; an error says "unknown {what}"."""
  def check(attack, key, value):
    del attack, key
    if value not in values:
      raise ConfigError(f"unknown {what} {value!r}; choose one of: "
                        f"{', '.join(values)}.")
  return Kind(lambda a, k, text: text.strip(), check,
              " or ".join(map(repr, values)))


def unit(*, closed_low: bool) -> Kind:
  """A number in [0, 1] (`closed_low`) or (0, 1]."""
  interval = "[0, 1]" if closed_low else "(0, 1]"
  def check(attack, key, value):
    check_non_negative(value, key)
    if (not closed_low and float(value) <= 0) or float(value) > 1:
      raise ConfigError(f"{attack}: {key} must lie in {interval}, got "
                        f"{value!r}.")
  return Kind(_read_number, check, f"number in {interval}")


# ε is read and checked under the attack's norm (`_checked_values` passes it).
EPS = Kind(lambda a, k, text, norm="Linf": parse_eps(text.strip(), norm=norm),
           lambda a, k, v, norm="Linf": check_eps(v, norm=norm),
           "L∞ budget in [0, 1], e.g. 8/255; with norm='L2' an L2 radius "
           ">= 0")
NORM = Kind(lambda a, k, text: canonical_norm(text),
            lambda a, k, v: canonical_norm(v), "'Linf' or 'L2' (any case)")
POSITIVE = Kind(_read_number,
                lambda a, k, v: None if v is None else check_positive(v, k),
                "number > 0")
NON_NEGATIVE = Kind(_read_number, lambda a, k, v: check_non_negative(v, k),
                    "number >= 0")
BOOL = Kind(_read_bool, _check_bool, "true or false")


# --- entries ------------------------------------------------------------------

class Budget(NamedTuple):
  """What the meta-test protocol gives a test attack: ε (a budget string,
  "8/255" or "l2:0.5" (budgets.py), or None) and the step budgets of
  `launch.evaluate`'s flags."""
  eps: Optional[str]
  num_steps: int = 20          # --attack_steps: PGD, MI-FGSM
  apgd_steps: int = 100        # --apgd_steps: APGD, APGD-T, FAB-T, AutoAttack
  square_queries: int = 5000   # --square_queries: Square, AutoAttack

  @property
  def norm(self) -> str:
    return split_budget(self.eps)[0]

  @property
  def radius(self) -> float:
    """ε as a number (the L∞ ε or the L2 radius)."""
    return parse_budget(self.eps)[1]

  def eps_hparams(self) -> Dict[str, Any]:
    """The attack's `eps` (and `norm="L2"` for an L2 budget) as flag
    values; an L∞ budget sets `eps` only."""
    norm, text = split_budget(self.eps)
    return {"eps": text} if norm == "Linf" else {"eps": text, "norm": norm}


class BenchmarkBudget(NamedTuple):
  """What `launch.benchmark --section=attacks` gives an attack (its flags)."""
  pgd_steps: int = 20
  cw_steps: int = 100
  autoattack_steps: int = 100
  autoattack_queries: int = 5000
  autoattack_targets: int = 9
  eps: str = "8/255"


@dataclasses.dataclass(frozen=True)
class Hparam:
  """A hyperparameter of an attack: its name, kind and default (`REQUIRED`
  when it has none)."""
  name: str
  kind: Kind
  default: Any = REQUIRED


@dataclasses.dataclass(frozen=True, eq=False)
class Preset:
  """Settings of an attack that are a test attack of their own name."""
  name: str
  hparams: Mapping[str, Any]
  description: str


@dataclasses.dataclass(frozen=True, eq=False)
class AttackEntry:
  """An attack and what the library knows about it (see the module
  docstring). Calling the entry calls `fn`."""
  name: str
  fn: Callable[..., Array]
  description: str
  kinds: Mapping[str, Kind]
  aliases: Tuple[str, ...] = ()
  trains: bool = False
  test: Optional[Callable[[Budget], Dict[str, Any]]] = None
  test_help: str = ""
  presets: Tuple[Preset, ...] = ()
  benchmark: Optional[Callable[[BenchmarkBudget], Dict[str, Any]]] = None
  toy_caps: Mapping[str, int] = dataclasses.field(default_factory=dict)
  report: Optional[Callable[..., Tuple[Array, Any]]] = None

  def __post_init__(self):
    declared = [k for k in self.signature() if k != "key"]
    if set(declared) != set(self.kinds):
      raise ConfigError(
          f"attack entry {self.name!r}: kinds must name each keyword-only "
          f"hyperparameter of {self.fn.__name__} but key: "
          f"{', '.join(declared)}; got {', '.join(self.kinds)}.")

  def __call__(self, logits_fn: LogitsFn, x: Array, y: Array, **hparams):
    return self.fn(logits_fn, x, y, **hparams)

  def signature(self) -> Dict[str, Any]:
    """Keyword-only parameters of `fn` (`key` too) and their defaults."""
    return {p.name: p.default
            for p in inspect.signature(self.fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}

  @property
  def hparams(self) -> Tuple[Hparam, ...]:
    """The hyperparameters (all but `key`), their kinds and defaults."""
    return tuple(Hparam(k, self.kinds[k], d)
                 for k, d in self.signature().items() if k != "key")

  @property
  def takes_key(self) -> bool:
    return "key" in self.signature()

  @property
  def uses_eps(self) -> bool:
    return "eps" in self.kinds

  def test_hparams(self, budget: Budget) -> Dict[str, Any]:
    """Its meta-test hyperparameters under `budget`."""
    if self.test is None:
      raise ConfigError(f"no protocol defaults for attack {self.name!r}; "
                        f"choose one of: {', '.join(meta_test_attacks())}.")
    return self.test(budget)

  def shrink(self, hparams: Mapping[str, Any]) -> Dict[str, Any]:
    """`hparams` with loop lengths capped at `toy_caps` (toy scale)."""
    return {k: min(v, self.toy_caps[k]) if k in self.toy_caps else v
            for k, v in hparams.items()}


_ENTRIES: Dict[str, AttackEntry] = {}


def entries() -> Tuple[AttackEntry, ...]:
  """The registered entries, in the order they were registered."""
  return tuple(_ENTRIES.values())


def _taken() -> Iterator[str]:
  for e in _ENTRIES.values():
    yield e.name
    yield from e.aliases
    yield from (p.name for p in e.presets)


def register(entry: AttackEntry) -> AttackEntry:
  """Adds `entry`; its name, aliases and presets must be new.

  Raises:
    ConfigError: a name already taken.
  """
  names_ = (entry.name,) + entry.aliases + tuple(p.name for p in entry.presets)
  clash = sorted(set(names_) & set(_taken()))
  if clash or len(set(names_)) != len(names_):
    raise ConfigError(f"attack entry {entry.name!r}: name(s) "
                      f"{', '.join(clash or names_)} already taken.")
  _ENTRIES[entry.name] = entry
  return entry


def unregister(name: str) -> None:
  """Removes the entry registered as `name` (e.g. a test's toy attack)."""
  _ENTRIES.pop(name, None)


def names() -> Tuple[str, ...]:
  """Registered attack names (the values of an `--attack` flag)."""
  return tuple(sorted(_ENTRIES))


def get(name: str) -> AttackEntry:
  """The entry registered as `name` or with `name` among its aliases.

  Raises:
    ConfigError: an unknown name, with the registered ones.
  """
  for entry in _ENTRIES.values():
    if name == entry.name or name in entry.aliases:
      return entry
  raise ConfigError(f"unknown attack {name!r}; choose one of: "
                    f"{', '.join(names())}.")


def canonical_name(name: str) -> str:
  """The registered name of `name` or of the attack it is an alias of
  ("apgd_ce" -> "apgd", "fab_t" -> "fab", "cw" -> "cw_l2").

  Raises:
    ConfigError: an unknown name, with the registered ones.
  """
  return get(name).name


def hyperparameters(name: str) -> Dict[str, Any]:
  """Keyword-only hyperparameters of attack `name` and their defaults.

  Required ones map to `inspect.Parameter.empty` (`REQUIRED`).
  """
  return get(name).signature()


class _Functions(collections.abc.Mapping):
  """`{name: attack function}` of the registered entries (a live view)."""

  def __getitem__(self, name: str):
    if name not in _ENTRIES:
      raise KeyError(name)
    return _ENTRIES[name].fn

  def __iter__(self):
    return iter(_ENTRIES)

  def __len__(self):
    return len(_ENTRIES)

  def __repr__(self):
    return repr(dict(self))


ATTACKS: Mapping[str, Callable[..., Array]] = _Functions()


def train_attacks() -> Tuple[str, ...]:
  """The attacks that may train (`--train_attack`): entries with `trains`."""
  return tuple(sorted(e.name for e in _ENTRIES.values() if e.trains))


def meta_test_attacks() -> Tuple[str, ...]:
  """The meta-test's attacks (`--attacks`): every entry with test settings,
  then its presets, in the order they were registered."""
  out = []
  for e in _ENTRIES.values():
    out += [e.name] if e.test is not None else []
    out += [p.name for p in e.presets]
  return tuple(out)


def _preset(name: str) -> Optional[Tuple[AttackEntry, Preset]]:
  for e in _ENTRIES.values():
    for p in e.presets:
      if p.name == name:
        return e, p
  return None


def presets() -> Tuple[str, ...]:
  """The presets' names."""
  return tuple(p.name for e in _ENTRIES.values() for p in e.presets)


def meta_test_setting(name: str, budget: Budget
                 ) -> Tuple[str, Dict[str, Any], str]:
  """`(attack, hyperparameters, tag)` of test attack `name` under `budget`:
  a preset's settings under its name as the tag, else the entry's test
  settings and no tag.

  Raises:
    ConfigError: an unknown name, or an attack with no test settings.
  """
  found = _preset(name)
  if found is not None:
    entry, preset = found
    return entry.name, dict(preset.hparams), preset.name
  entry = get(name)
  if budget.eps is not None and budget.norm != "Linf" and (
      "norm" not in entry.kinds):
    l2 = [e.name for e in _ENTRIES.values()
          if "norm" in e.kinds and e.test is not None]
    raise ConfigError(f"attack {name!r} is L∞ only; the budget "
                      f"{budget.eps!r} is {budget.norm}. Attacks with an L2 "
                      f"version: {', '.join(l2)}.")
  return entry.name, entry.test_hparams(budget), ""


def describe(name: str) -> str:
  """The one-line description of attack or preset `name` (for `--help`)."""
  found = _preset(name)
  return found[1].description if found else get(name).description


def runs_at_each_eps(name: str) -> bool:
  """Whether test attack `name` runs at each ε of `--eps` (False: presets
  and ε-free attacks run once)."""
  return _preset(name) is None and get(name).uses_eps


def benchmark_attacks() -> Tuple[str, ...]:
  """The attacks with a benchmark budget (`launch.benchmark --attacks`)."""
  return tuple(sorted(e.name for e in _ENTRIES.values()
                      if e.benchmark is not None))


# --- from flags ---------------------------------------------------------------

def make_attack(name: str, hparams: Optional[Mapping[str, Any]] = None,
                **kwargs) -> Callable[..., Array]:
  """Builds `(logits_fn, x, y, *, key=None) -> x_adv` from a name and flags.

  Values may be numbers or flag strings ("8/255", "20", "true"). Every
  hyperparameter except `key` must be given unless it has a default; `key` is
  passed at each call and dropped for deterministic attacks, so every attack
  can be called the same way. An attack whose entry has a `report` carries
  `with_report(logits_fn, x, y, *, key=None) -> (x_adv, report)`.

  Example:
    attack = make_attack("pgd", {"eps": "8/255", "step_size": "2/255",
                                 "num_steps": 20})
    x_adv = attack(logits_fn, x, y, key=key)

  Raises:
    ConfigError: unknown attack, unknown or missing hyperparameters (with the
      allowed ones), or values out of range.
  """
  entry = get(name)
  values = _checked_values(name, entry, dict(hparams or {}, **kwargs))

  def attack(logits_fn: LogitsFn, x: Array, y: Array, *,
             key: Optional[Array] = None) -> Array:
    if entry.takes_key:
      return entry.fn(logits_fn, x, y, key=key, **values)
    return entry.fn(logits_fn, x, y, **values)

  attack.__name__ = f"{name}_attack"
  attack.__doc__ = f"{name} with {values}."
  attack.hparams = values  # type: ignore[attr-defined]
  if entry.report is not None:
    def with_report(logits_fn: LogitsFn, x: Array, y: Array, *,
                    key: Optional[Array] = None):
      return entry.report(logits_fn, x, y, key=key, **values)
    # `(x_adv, report)`: the meta-test protocol records the per-stage
    # robust accuracy of the report beside the attacked accuracy.
    attack.with_report = with_report  # type: ignore[attr-defined]
  return attack


def _checked_values(name: str, entry: AttackEntry,
                    given: Mapping[str, Any]) -> Dict[str, Any]:
  """`given` read by their kinds and checked (a bad flag fails before
  anything is traced)."""
  allowed = {h.name: h for h in entry.hparams}
  unknown = sorted(set(given) - set(allowed))
  if unknown:
    raise ConfigError(
        f"attack {name!r} has no hyperparameter(s) {', '.join(unknown)}; "
        f"allowed: {', '.join(allowed)} (the PRNG key is passed at each "
        "call).")
  missing = sorted(k for k, h in allowed.items()
                   if h.default is REQUIRED and k not in given)
  if missing:
    raise ConfigError(f"attack {name!r} needs hyperparameter(s) "
                      f"{', '.join(missing)}.")
  # ε's range depends on the norm: read and check it under the norm given
  # (or the attack's default).
  norm = canonical_norm(given.get("norm", allowed["norm"].default)) if (
      "norm" in allowed) else "Linf"
  by_norm = lambda k: {"norm": norm} if allowed[k].kind is EPS else {}
  values = {k: (allowed[k].kind.read(name, k, v, **by_norm(k))
                if isinstance(v, str) else v) for k, v in given.items()}
  for k, v in values.items():
    allowed[k].kind.check(name, k, v, **by_norm(k))
  return values


# --- docs/attacks.md ------------------------------------------------------------

def _value(v) -> str:
  """A hyperparameter as docs show it: whole grey levels as k/255."""
  if isinstance(v, float) and not v.is_integer():
    levels = v * 255
    if abs(levels - round(levels)) < 1e-9:
      return f"{round(levels)}/255"
  return str(v)


def _row(cells) -> str:
  return "| " + " | ".join(cells) + " |"


def markdown_table() -> str:
  """The table of attacks of docs/attacks.md: one row per entry."""
  lines = [_row(("name", "function", "what", "hyperparameters", "trains")),
           _row(("---",) * 5)]
  for e in entries():
    names_ = ", ".join(f"`{n}`" for n in (e.name,) + e.aliases)
    hparams = ", ".join(
        k if d is REQUIRED else f"{k}={d!r}" for k, d in e.signature().items())
    lines.append(_row((names_, f"`{e.fn.__name__}`", e.description,
                       f"`{hparams}`", "yes" if e.trains else "")))
  return "\n".join(lines)


def settings_table() -> str:
  """The table of test-time and benchmark settings of docs/attacks.md: one
  row per test attack (entries and presets)."""
  lines = [_row(("--attacks", "at test time", "at ε = 8/255 and the "
                 "default budgets", "benchmark")), _row(("---",) * 4)]
  for name in meta_test_attacks():
    attack, hparams, _ = meta_test_setting(name, Budget("8/255"))
    entry, found = get(attack), _preset(name)
    bench = (entry.benchmark(BenchmarkBudget())
             if entry.benchmark is not None and found is None else None)
    show = lambda d: ", ".join(f"{k}={_value(v)}" for k, v in d.items())
    lines.append(_row((f"`{name}`", describe(name) if found
                       else entry.test_help, show(hparams),
                       "" if bench is None else show(bench))))
  return "\n".join(lines)


__all__ = [
    "ATTACKS", "AttackEntry", "BenchmarkBudget", "Budget", "Hparam", "Kind", "Preset", "benchmark_attacks",
    "canonical_name", "describe", "entries", "get", "hyperparameters", "make_attack",
    "names", "parse_eps", "presets", "register", "runs_at_each_eps",
    "meta_test_attacks", "meta_test_setting", "settings_table", "train_attacks",
    "unregister",
]
