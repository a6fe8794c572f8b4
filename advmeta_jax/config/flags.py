"""absl flags generated from the settings: every field of `Config` is a flag
of its (flat) name, with its default and help (`define_flags`, `from_flags`).

The settings that take `auto` or a value (settings.py's
`AutoBool` and `AutoInt` kinds): `--remat`, `--noremat`, `--remat=auto`;
`--parallel_tasks=2`, `--parallel_tasks=auto`. A bad value is one line
(absl's "flag --remat=maybe: should be auto, true or false")."""

from typing import Optional, Sequence

from absl import flags

from advmeta_jax.config.settings import is_int
from advmeta_jax.config.settings import AUTO
from advmeta_jax.config.settings import AutoBool
from advmeta_jax.config.settings import AutoInt
from advmeta_jax.config.settings import Config
from advmeta_jax.config.settings import fields


def _parse_auto_bool(text):
  if isinstance(text, bool):
    return text
  lower = str(text).strip().lower()
  if lower in ("true", "t", "1", "yes"):
    return True
  if lower in ("false", "f", "0", "no"):
    return False
  raise ValueError("should be auto, true or false")


def _parse_auto_int(text):
  if is_int(text):
    return int(text)
  try:
    return int(str(text).strip())
  except ValueError:
    raise ValueError("should be auto or an integer >= 0") from None


def auto_flag(boolean: bool, name, default, help_):
  """An absl flag whose value is `AUTO` or a bool (`boolean`: a boolean
  flag, so `--name` and `--noname` work) or an int."""
  parse_value = _parse_auto_bool if boolean else _parse_auto_int

  class Parser(flags.ArgumentParser):

    def parse(self, argument):
      if isinstance(argument, str) and argument.strip().lower() == AUTO:
        return AUTO
      return parse_value(argument)

    def flag_type(self):
      return "auto|bool" if boolean else "auto|int"

  class Serializer(flags.ArgumentSerializer):

    def serialize(self, value):
      return str(value).lower()

  class AutoFlag(flags.Flag):

    def _serialize(self, value):
      if value is None:
        return ""
      return f"--{self.name}={self.serializer.serialize(value)}"

  return AutoFlag(Parser(), Serializer(), name, default, help_,
                  boolean=boolean)


def define_flags(flag_values=None, *, only: Optional[Sequence[str]] = None
                 ) -> None:
  """Defines one absl flag per field (or per field in `only`), named by its
  flat name, with the field's default and help; choices become enum flags
  (absl then refuses an unknown value, listing the allowed ones)."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  for _, f in fields():
    if only is not None and f.name not in only:
      continue
    meta = f.metadata
    kw = dict(flag_values=flag_values)
    kind = meta.get("kind") or type(f.default)
    help_ = meta["help"]() if callable(meta["help"]) else meta["help"]
    if kind in (AutoBool, AutoInt):
      flags.DEFINE_flag(auto_flag(kind is AutoBool, f.name,
                                             f.default, help_), flag_values)
    elif meta.get("choices") is not None:
      flags.DEFINE_enum(f.name, f.default, list(meta["choices"]()),
                        help_, **kw)
    elif kind is bool:
      flags.DEFINE_bool(f.name, f.default, help_, **kw)
    elif kind is int:
      flags.DEFINE_integer(f.name, f.default, help_, **kw)
    elif kind is float:
      flags.DEFINE_float(f.name, f.default, help_, **kw)
    else:
      flags.DEFINE_string(f.name, f.default, help_, **kw)


def from_flags(flag_values=None) -> Config:
  """The validated `Config` of the flags `define_flags` defined."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  return Config.make(**{f.name: flag_values[f.name].value
                        for _, f in fields()}).validate()
