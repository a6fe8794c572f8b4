"""Flags shared by the launch scripts, and the error handling they all use.

Every field of `advmeta_jax.config.Config` is a flag of the same (flat) name,
generated from the config's one declaration (`config.define_flags`); choices
(datasets, learners, conv formulations) are enum flags, so `--helpfull` lists
them and absl rejects an unknown value with the allowed ones.
"""

import dataclasses
import functools
import math
import os
import logging as py_logging
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging

from advmeta_jax import config as config_lib
from advmeta_jax.errors import AdvMetaError
from advmeta_jax.errors import ConfigError


def default_compilation_cache_dir() -> str:
  """`$XDG_CACHE_HOME/advmeta_jax/xla` (`~/.cache/advmeta_jax/xla`)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "advmeta_jax", "xla")


flags.DEFINE_string(
    "compilation_cache_dir", None,
    "XLA's persistent compilation cache: a later launch of the same programs "
    "loads them instead of compiling (default: $JAX_COMPILATION_CACHE_DIR, "
    "else ~/.cache/advmeta_jax/xla; '' turns it off).")


def enable_compilation_cache(path=None) -> Optional[str]:
  """Points JAX's persistent compilation cache at `path` (default: the
  --compilation_cache_dir flag, else $JAX_COMPILATION_CACHE_DIR, else
  `default_compilation_cache_dir()`); '' leaves it off. A directory that
  cannot be created or written is a warning, not an error: the run compiles
  as without a cache. Returns the directory in use, or None."""
  if path is None:
    path = flags.FLAGS.compilation_cache_dir if flags.FLAGS.is_parsed() and (
        "compilation_cache_dir" in flags.FLAGS) else None
  if path is None:
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or (
        default_compilation_cache_dir())
  from advmeta_jax.training import executables  # pylint: disable=g-import-not-at-top
  executables.enable(bool(path))
  if not path:
    return None
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
      raise PermissionError(f"{path} is not writable")
  except OSError as e:
    logging.warning("no compilation cache (%s); every program compiles.", e)
    executables.enable(False)
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", path)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    # Every program, not only those over JAX's default 1 s of compiling: a
    # launch compiles dozens of small ones (measured in docs/performance.md).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def define_config_flags(only=None, flag_values=flags.FLAGS):
  """Defines one flag per config field (or the fields in `only`) in
  `flag_values` (default: the global absl flags)."""
  config_lib.define_flags(flag_values, only=only)


def define_distributed_flags():
  """Flags of a multi-host (multi-process) run, for `initialize_distributed`."""
  flags.DEFINE_bool("distributed", False,
                    "Multi-host run: call jax.distributed.initialize before "
                    "anything else (on TPU pods and SLURM/Open MPI clusters "
                    "the three flags below are auto-detected).")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 (implies --distributed).")
  flags.DEFINE_integer("num_processes", None,
                       "Number of processes (hosts) in the run (implies "
                       "--distributed).")
  flags.DEFINE_integer("process_id", None,
                       "This process's index in [0, num_processes) (implies "
                       "--distributed).")


def initialize_distributed() -> None:
  """Joins the multi-host run the distributed flags describe, if any.

  Must run before any JAX computation. Afterwards `jax.devices()` lists the
  devices of every host and `training.train` shards the task batch over all
  of them.
  """
  values = {name: flags.FLAGS[name].value
            for name in ("coordinator_address", "num_processes", "process_id")}
  if not (flags.FLAGS.distributed or any(v is not None
                                         for v in values.values())):
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(**values)
  logging.info("process %d of %d; %d local / %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def config_from_flags(flag_values=flags.FLAGS) -> config_lib.Config:
  """The validated config of the flags `define_config_flags` defined."""
  return config_lib.from_flags(flag_values)


# INFO lines of the libraries that say nothing to a user: orbax's per-save
# chatter, and JAX's probe of backends this machine does not have ("Unable
# to initialize backend 'tpu'" on every CPU-only start). Warnings stay.
_QUIET_INFO = (("orbax", ""), ("xla_bridge", "Unable to initialize backend"))


def _is_noise(record) -> bool:
  return record.levelno < py_logging.WARNING and any(
      where in record.pathname and text in record.getMessage()
      for where, text in _QUIET_INFO)


def quiet_library_logs():
  """Drops the INFO lines of `_QUIET_INFO` from the absl log (where the
  launchers' INFO lines go); keeps every warning."""
  class _Filter(py_logging.Filter):

    def filter(self, record):
      return not _is_noise(record)

  handler = logging.get_absl_handler()
  if not any(isinstance(f, _Filter) for f in handler.filters):
    handler.addFilter(_Filter())


def user_errors_exit(main):
  """Runs `main`, turning a user error into one line on stderr and exit 2."""
  @functools.wraps(main)
  def wrapped(argv):
    quiet_library_logs()
    enable_compilation_cache()
    try:
      return main(argv)
    except AdvMetaError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
      print("error: interrupted (Ctrl-C). A training run saved a checkpoint "
            "of its last finished step; run the same command to resume.",
            file=sys.stderr)
      sys.exit(130)
  return wrapped


def show_usage_of(module_name: str) -> None:
  """Makes `--help` print the program's docstring and flags: absl prints
  `__main__`'s docstring and the flags key to the program file (`argv[0]`),
  which for a console script is the generated stub and for `python -m
  launch.X` the checkout's one-line entry point, so both are taken from the
  program's module (and the shared flags of this one)."""
  doc = sys.modules[module_name].__doc__
  if doc:
    sys.modules["__main__"].__doc__ = doc
  for source in (module_name, __name__):
    for flag in flags.FLAGS.get_key_flags_for_module(source):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main):
  """Runs a program's `main` with absl's flag parsing, bad input as one
  line (`user_errors_exit`) and its module's docstring as `--help`."""
  show_usage_of(main.__module__)
  app.run(user_errors_exit(main))


def check_data_dir(path, flag: str = "--data_dir") -> None:
  """Refuses a data directory that is not an existing directory."""
  if path and not os.path.isdir(os.path.expanduser(path)):
    what = "a file" if os.path.exists(os.path.expanduser(path)) else "missing"
    raise ConfigError(f"{flag}={path!r} is {what}: give the directory that "
                      "holds the dataset's files.")


def check_finite(value: float, flag: str) -> None:
  if not math.isfinite(value):
    raise ConfigError(f"--{flag} must be a finite number, got {value}.")


# --- trained runs (evaluate, certify) ------------------------------------------

def define_run_flags(verb: str, out_dir: str, flag_values=flags.FLAGS) -> None:
  """The flags that name the trained runs of a program that `verb`s them
  (--workdirs, --workdir, --names, --checkpoint_step, --split, --data_dir)
  and its report directory --out (default `<first workdir>/<out_dir>`)."""
  kw = dict(flag_values=flag_values)
  flags.DEFINE_list("workdirs", None, f"Training workdirs to {verb} "
                    "(comma-separated).", **kw)
  flags.DEFINE_string("workdir", None, "One training workdir (the same as "
                      "--workdirs with one entry).", **kw)
  flags.DEFINE_list("names", None, "Row names, one per workdir (default: "
                    "each run's learner).", **kw)
  flags.DEFINE_integer("checkpoint_step", None,
                       f"Checkpoint to {verb} (default: the latest).", **kw)
  flags.DEFINE_enum("split", "test", ["test", "val"],
                    "Class split to test on.", **kw)
  flags.DEFINE_string("data_dir", None, "Override the runs' data_dir.", **kw)
  flags.DEFINE_string("out", None, "Report directory (default: "
                      f"<first workdir>/{out_dir}).", **kw)


def workdirs_from_flags(verb: str, flag_values=flags.FLAGS):
  """The runs `define_run_flags` named (--workdirs, then --workdir), with
  --data_dir checked; one line when there are none."""
  f = flag_values
  workdirs = list(f.workdirs or []) + ([f.workdir] if f.workdir else [])
  if not workdirs:
    raise ConfigError(f"give the runs to {verb}: --workdirs=DIR[,DIR...] "
                      "(or --workdir=DIR).")
  check_data_dir(f.data_dir)
  return workdirs


# --- meta-test protocol flags (evaluate, sweep) -------------------------------

# The test-time settings of launch.evaluate and launch.reproduce, and their
# names before they were `--test_*` (deprecated; each still works once it
# prints a line saying so).
RUN_PROTOCOL_FLAGS = ("test_episodes", "test_inner_steps", "test_q_query",
                      "test_seed")
DEPRECATED_PROTOCOL_FLAGS = {"episodes": "test_episodes",
                             "inner_steps": "test_inner_steps",
                             "seed": "test_seed"}


def define_protocol_flags(*, cases="robust", attacks="pgd", eps="8/255",
                          run_flags: bool = True, deprecated: bool = False,
                          flag_values=flags.FLAGS):
  """Flags of the meta-test protocol (`config.ProtocolConfig`, declared
  once): cases, attacks, ε, attack budgets, episodes, test inner steps, seed.

  `cases=None` leaves out --cases, for a launcher whose cases are fixed. With
  `run_flags=False` --test_episodes and --test_inner_steps are left out, for
  a launcher that also defines the training flags (whose --eval_episodes and
  --eval_inner_steps serve instead). `deprecated` also defines --episodes,
  --inner_steps and --seed, the earlier names of the --test_* flags.
  """
  only = [f for f in ("cases", "attacks", "eps", "attack_steps", "apgd_steps",
                      "square_queries") if f != "cases" or cases is not None]
  only += list(RUN_PROTOCOL_FLAGS if run_flags else ("test_seed",))
  config_lib.define_protocol_flags(flag_values, only=only, cases=cases,
                                   attacks=(attacks,), eps=(eps,))
  if deprecated:
    for old, new in DEPRECATED_PROTOCOL_FLAGS.items():
      flags.DEFINE_integer(old, None, f"Deprecated: use --{new}.",
                           flag_values=flag_values)


def protocol_from_flags(flag_values=flags.FLAGS) -> config_lib.ProtocolConfig:
  """The validated protocol of the flags; a deprecated name (--episodes,
  --inner_steps, --seed) is taken for its --test_* flag with one line on
  stderr, unless the --test_* flag is given too."""
  f = flag_values
  changes = {}
  for old, new in DEPRECATED_PROTOCOL_FLAGS.items():
    # Only where `old` is the deprecated alias: in a launcher with the
    # training flags (launch.sweep), --inner_steps and --seed are training's.
    if (old in f and f[old].present and new in f
        and f[old].help.startswith("Deprecated")):
      print(f"warning: --{old} is deprecated; use --{new} (same meaning).",
            file=sys.stderr)
      if not f[new].present:
        changes[new] = f[old].value
  protocol = config_lib.protocol_from_flags(flag_values)
  return dataclasses.replace(protocol, **changes).validate()


def attack_specs_from_flags(protocol=None):
  """The `AttackSpec`s of --attacks × --eps (cw_l2 once, with no ε), from
  `protocol` (default: `protocol_from_flags()`)."""
  p = protocol or protocol_from_flags()
  return attack_specs(p.attack_names, p.eps_values,
                      attack_steps=p.attack_steps, apgd_steps=p.apgd_steps,
                      square_queries=p.square_queries)


def attack_specs(names, eps_list, *, attack_steps: int = 20,
                 apgd_steps: int = 100, square_queries: int = 5000):
  """The `AttackSpec`s of `names` × `eps_list` (ε-free attacks once)."""
  from advmeta_jax import attacks as attacks_lib  # pylint: disable=g-import-not-at-top
  from advmeta_jax import evaluation  # pylint: disable=g-import-not-at-top
  specs = []
  for name in names:
    if not attacks_lib.runs_at_each_eps(name):   # presets, C&W: once
      specs.append(evaluation.default_test_attack(name, None))
      continue
    for eps in eps_list:
      attacks_lib.parse_budget(eps, "--eps")
      specs.append(evaluation.default_test_attack(
          name, eps, num_steps=attack_steps, apgd_steps=apgd_steps,
          square_queries=square_queries))
  specs = tuple(dict.fromkeys(specs))
  for spec in specs:   # refuse bad budgets before any run is loaded
    try:
      spec.build()
    except ConfigError as e:
      raise ConfigError(f"--attacks={spec.name}: {e} (set by --attack_steps, "
                        "--apgd_steps or --square_queries)") from None
  return specs
