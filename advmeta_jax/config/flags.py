"""absl flags generated from the settings: every field of `Config` is a flag
of its (flat) name, with its default and help (`define_flags`, `from_flags`).

The settings that take `auto` or a value (settings.py's
`AutoBool` and `AutoInt` kinds): `--remat`, `--noremat`, `--remat=auto`;
`--parallel_tasks=2`, `--parallel_tasks=auto`. A bad value is one line
(absl's "flag --remat=maybe: should be auto, true or false")."""

import dataclasses
from typing import Optional, Sequence

from absl import flags

from advmeta_jax.config.settings import is_int
from advmeta_jax.config.settings import AUTO
from advmeta_jax.config.settings import AutoBool
from advmeta_jax.config.settings import AutoInt
from advmeta_jax.config.settings import Config
from advmeta_jax.config.settings import fields
from advmeta_jax.config.protocol import ProtocolConfig


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


def define_setting_flag(f: dataclasses.Field, flag_values, default) -> None:
  """The absl flag of one setting (a `setting(...)` field): enum for choices, list, bool, int, float,
  or string; `auto` kinds through `auto_flag`."""
  meta = f.metadata
  kw = dict(flag_values=flag_values)
  kind = meta.get("kind") or type(default)
  help_ = meta["help"]() if callable(meta["help"]) else meta["help"]
  if kind in (AutoBool, AutoInt):
    flags.DEFINE_flag(auto_flag(kind is AutoBool, f.name, default, help_),
                      flag_values)
  elif meta.get("choices") is not None:
    flags.DEFINE_enum(f.name, default, list(meta["choices"]()), help_, **kw)
  elif kind is list:
    flags.DEFINE_list(f.name, list(default), help_, **kw)
  elif kind is bool:
    flags.DEFINE_bool(f.name, default, help_, **kw)
  elif kind is int:
    flags.DEFINE_integer(f.name, default, help_, **kw)
  elif kind is float:
    flags.DEFINE_float(f.name, default, help_, **kw)
  else:
    flags.DEFINE_string(f.name, default, help_, **kw)


def define_flags(flag_values=None, *, only: Optional[Sequence[str]] = None
                 ) -> None:
  """Defines one absl flag per field (or per field in `only`), named by its
  flat name, with the field's default and help; choices become enum flags
  (absl then refuses an unknown value, listing the allowed ones)."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  for _, f in fields():
    if only is None or f.name in only:
      define_setting_flag(f, flag_values, f.default)


def define_protocol_flags(flag_values=None, *,
                          only: Optional[Sequence[str]] = None,
                          **defaults) -> None:
  """Defines the flags of the meta-test protocol (`ProtocolConfig`'s fields,
  or those in `only`), with a launcher's own `defaults` where given
  (e.g. `cases="robust"`)."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  for f in dataclasses.fields(ProtocolConfig):
    if only is None or f.name in only:
      define_setting_flag(f, flag_values, defaults.get(f.name, f.default))


def protocol_from_flags(flag_values=None) -> ProtocolConfig:
  """The validated `ProtocolConfig` of the protocol flags that are defined
  (the others keep their defaults)."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  return ProtocolConfig(**{
      f.name: (tuple(flag_values[f.name].value) if f.metadata.get("kind")
               is list else flag_values[f.name].value)
      for f in dataclasses.fields(ProtocolConfig)
      if f.name in flag_values}).validate()


def from_flags(flag_values=None) -> Config:
  """The validated `Config` of the flags `define_flags` defined."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  return Config.make(**{f.name: flag_values[f.name].value
                        for _, f in fields()}).validate()
