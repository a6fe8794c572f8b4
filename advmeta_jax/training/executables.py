"""The train iteration's compiled executable, kept beside XLA's cache.

XLA's persistent compilation cache (`jax_compilation_cache_dir`, which the
launchers turn on) skips compiling, but a launch still traces and lowers the
train iteration to find its entry: about 2.5 s of Python for MAML's
second-order step on a CPU, the largest part of a relaunch's start. Here the
compiled iteration is stored whole (`jax.experimental.serialize_executable`)
in the `train_iteration/` folder of that directory, under a key of
everything that determines the program without tracing it: the resolved
config, the arguments' shapes, dtypes, shardings and tree structure, the
devices and the host CPU, the versions of Python, JAX, jaxlib, Flax, Optax,
Chex, NumPy and ml_dtypes, JAX's settings, `XLA_FLAGS`, and the source of
this package. A relaunch of the same run loads it instead of tracing.
Only a program the compiler has just made is stored: one that XLA's cache
gave back does not serialize again whole, so after an edit of the package
that leaves the program the same, relaunches trace it as without this cache
(and load it from XLA's).

It is used only where a launcher turned it on (`enable`, which the command
-line programs call with the compilation cache: their learners, objectives
and backbones are this package's, whose source the key covers; a library
user's own registered code is not in the key, so `training.train` called
from Python traces as usual), with the compilation cache on and in a
one-process run; anything that fails (an unreadable entry, a folder that cannot be written)
is a warning, and the iteration compiles as without it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import platform
import sys
from typing import Any, Callable, Dict, Optional, Sequence

from absl import logging
import jax

SUBDIR = "train_iteration"
_FORMAT = "advmeta_jax train iteration v1"
_LOADED: Dict[str, Callable] = {}   # key -> executable, within this process
_ENABLED = [False]                  # set by `enable` (the launchers)
# JAX settings that do not change a program: where and what to log or cache.
_SETTINGS_IGNORED = ("cache", "log", "explain", "traceback", "dump", "pprint")
_VERSIONS_OF = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "ml_dtypes")


def enable(on: bool = True) -> None:
  """Turns the stored train iterations on (the launchers do, with XLA's
  compilation cache) or off (the default for `training.train` called from
  Python)."""
  _ENABLED[0] = bool(on)


def cache_dir() -> Optional[str]:
  """The folder of the stored iterations, or None: not `enable`d, XLA's
  compilation cache is off, or the run has several processes."""
  base = jax.config.jax_compilation_cache_dir
  if not _ENABLED[0] or not base or jax.process_count() > 1:
    return None
  return os.path.join(base, SUBDIR)


@functools.lru_cache(maxsize=None)
def _source_digest() -> str:
  """A digest of this package's Python source."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in sorted(f for f in files if f.endswith(".py")):
      path = os.path.join(folder, name)
      digest.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
  return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _host_cpu() -> str:
  """The host CPU's model and features (a CPU executable is built for
  them), from /proc/cpuinfo where there is one."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().split("\n\n")[0].splitlines()
    return "\n".join(l for l in lines if l.split(":")[0].strip() in (
        "vendor_id", "model name", "flags", "Features", "CPU part"))
  except OSError:
    return platform.processor() or platform.machine()


def _versions() -> str:
  out = [sys.version]
  for name in _VERSIONS_OF:
    module = sys.modules.get(name)
    out.append(f"{name} {getattr(module, '__version__', None)}")
  return "\n".join(out)


def _arg_signature(args) -> str:
  leaves, treedef = jax.tree.flatten(args)
  out = [str(treedef)]
  for x in leaves:
    out.append(f"{getattr(x, 'shape', None)} {getattr(x, 'dtype', type(x))} "
               f"{getattr(x, 'weak_type', None)} "
               f"{getattr(x, 'sharding', None)}")
  return "\n".join(out)


def key_of(args, parts: Sequence[Any], devices) -> str:
  """The entry's key for a program of `parts` (reprs that determine it, the
  resolved config first) applied to `args` on `devices`."""
  settings = sorted((k, repr(v)) for k, v in jax.config.values.items()
                    if not any(s in k for s in _SETTINGS_IGNORED))
  backend = devices[0].client
  text = "\n".join([
      _FORMAT, _source_digest(), _versions(), _host_cpu(),
      f"{backend.platform} {backend.platform_version}",
      repr([(d.id, d.device_kind) for d in devices]),
      repr(settings), os.environ.get("XLA_FLAGS", ""),
      _arg_signature(args), *map(repr, parts)])
  return hashlib.sha256(text.encode()).hexdigest()


def _load(path: str, devices):
  from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    payload, in_tree, out_tree = pickle.load(f)
  return serialize_executable.deserialize_and_load(
      payload, in_tree, out_tree, backend=devices[0].client,
      execution_devices=list(devices))


def _store(path: str, compiled) -> None:
  from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  blob = pickle.dumps(serialize_executable.serialize(compiled))
  tmp = f"{path}.{os.getpid()}.tmp"
  try:
    with open(tmp, "wb") as f:
      f.write(blob)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def executable(jitted, args, parts: Sequence[Any], devices) -> Callable:
  """`jitted`'s executable for `args`: loaded from the cache when stored
  there, else compiled (through XLA's cache) and stored; `jitted` itself
  when there is no cache (`cache_dir`)."""
  folder = cache_dir()
  if folder is None:
    return jitted
  try:
    key = key_of(args, parts, devices)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("no stored train iteration (%s); tracing it.", e)
    return jitted
  if key in _LOADED:
    return _LOADED[key]
  path = os.path.join(folder, key)
  if os.path.exists(path):
    try:
      _LOADED[key] = _load(path, devices)
      logging.info("train iteration loaded from %s", path)
      return _LOADED[key]
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not load the stored train iteration %s (%s); "
                      "compiling it.", path, e)
  compiled, fresh = _compile(jitted, args)
  if fresh:
    try:
      _store(path, compiled)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not store the train iteration in %s (%s).",
                      folder, e)
  else:
    # An executable that XLA's cache (or JAX's memory of one) gave back does
    # not serialize again whole (on a CPU its reloaded copy fails to run),
    # so only one the compiler has just made is stored.
    logging.info("train iteration not stored: it was not compiled afresh.")
  _LOADED[key] = compiled
  return compiled


def _compile(jitted, args):
  """`(compiled, fresh)`: `jitted` compiled for `args`, and whether the
  compiler made it now (XLA's persistent cache was asked and missed), not
  XLA's cache or JAX's memory."""
  events = []

  def listen(event, **kwargs):
    del kwargs
    events.append(event)

  jax.monitoring.register_event_listener(listen)
  try:
    compiled = jitted.lower(*args).compile()
  finally:
    jax.monitoring.unregister_event_listener(listen)
  asked = events.count("/jax/compilation_cache/compile_requests_use_cache")
  hits = events.count("/jax/compilation_cache/cache_hits")
  return compiled, asked == 1 and hits == 0


class Cached:
  """A jitted function that, at its first call, becomes its `executable` for
  that call's arguments (later calls must have the same shapes, as a train
  iteration's state and source do)."""

  def __init__(self, jitted, parts: Sequence[Any], devices):
    self.jitted, self.parts, self.devices = jitted, tuple(parts), devices
    self.fn: Optional[Callable] = None

  def __call__(self, *args):
    if self.fn is None:
      self.fn = executable(self.jitted, args, self.parts, self.devices)
    return self.fn(*args)
