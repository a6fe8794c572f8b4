"""absl flags of the settings that take `auto` or a value (config.py's
`AutoBool` and `AutoInt` kinds): `--remat`, `--noremat`, `--remat=auto`;
`--parallel_tasks=2`, `--parallel_tasks=auto`. A bad value is one line
(absl's "flag --remat=maybe: should be auto, true or false")."""

from absl import flags

from advmeta_jax.config import _is_int  # pylint: disable=protected-access
from advmeta_jax.config import AUTO


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
  if _is_int(text):
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
