"""Reads the pickles few-shot datasets ship in, with one copy of the pixels.

Unpickling runs code named in the file. The `Unpickler` here lets through only
what the data pickles of CIFAR-100, MiniImageNet and CIFAR-FS hold (NumPy
arrays and dtypes, and plain containers); any other global is refused with a
`DataError`. That narrows, but does not remove, the risk: a warning says so
each time a pickle is read.

Memory: Python 2 pickles (CIFAR-100's `cifar-100-python`, MetaOptNet's files)
store an array's bytes as a `str`; the standard `encoding="latin1"` decodes it
to a Python `str` and NumPy encodes it back, holding two or three copies of
the pixels at once. Here a string longer than `_RAW_BYTES_MIN` stays `bytes`
and NumPy builds the array on it without a copy, so a 38,400-image
MiniImageNet split costs its 813 MB once.
"""

from __future__ import annotations

import pickle
from typing import Any

from absl import logging
import numpy as np

from advmeta_jax.errors import DataError

_RAW_BYTES_MIN = 1 << 16

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "bytearray"): bytearray,
}


class RefusedGlobal(pickle.UnpicklingError):
  """The pickle names a function or class that data pickles do not need."""


class Unpickler(pickle._Unpickler):  # pylint: disable=protected-access
  """A pickle reader for data files: allow-listed globals, no pixel copies."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise RefusedGlobal(
          f"it refers to {module}.{name}, which a data pickle has no reason "
          f"to hold; refusing to run it") from None

  def _decode_string(self, value: bytes):
    # Python 2 `str` (opcodes STRING, BINSTRING, SHORT_BINSTRING): keep large
    # ones (array bytes) as bytes, decode the rest (keys, names) as latin1.
    if len(value) >= _RAW_BYTES_MIN:
      return value
    return super()._decode_string(value)


def warn(path: str, what: str) -> None:
  """The warning logged before any pickle is read."""
  logging.warning(
      "%s: reading %s with pickle, which can run arbitrary code stored in the "
      "file. advmeta only lets NumPy arrays and plain containers through, but "
      "load pickles only from a source you trust; the safer formats (npz, "
      "HDF5, image folders, the CIFAR-100 binary archive) need no pickle.",
      what, path)


def load(path: str, what: str, fileobj=None, warned: bool = False) -> Any:
  """Unpickles `path` (or `fileobj`, an open binary stream of it).

  Args:
    path: the file, for messages (and to open when `fileobj` is None).
    what: the dataset split or source, for messages.
    fileobj: an already open binary stream (e.g. a tar member).
    warned: the caller already warned for this source (e.g. another member
      of the same archive): do not warn again.

  Returns:
    The unpickled object.

  Raises:
    DataError: the file cannot be read, is not a pickle, is truncated, or
      names a global outside the allow-list.
  """
  if not warned:
    warn(path, what)
  try:
    if fileobj is not None:
      return Unpickler(fileobj, encoding="latin1").load()
    with open(path, "rb") as f:
      return Unpickler(f, encoding="latin1").load()
  except RefusedGlobal as e:
    raise DataError(f"{what}: refusing to unpickle {path!r}: {e}.") from e
  except FileNotFoundError as e:
    raise DataError(f"{what}: {path!r} does not exist.") from e
  except Exception as e:  # pickle raises many types for a bad file
    raise DataError(
        f"{what}: cannot unpickle {path!r} ({' '.join(str(e).split())} "
        f"[{type(e).__name__}]); the file is truncated, corrupt or not a "
        f"pickle: download it again."
    ) from e


def get(data: Any, key: str, path: str, what: str, expected: str) -> Any:
  """`data[key]` of an unpickled dict, accepting `key` or `key.encode()`.

  Python 2 pickles read with `encoding="bytes"` elsewhere have bytes keys; this
  reader decodes them as latin1, but files re-saved by Python 3 tools may
  carry either.

  Raises:
    DataError: `data` is not a dict or has no such key; names what it holds.
  """
  if isinstance(data, dict):
    for k in (key, key.encode("latin1")):
      if k in data:
        return data[k]
  keys = (sorted(k.decode("latin1") if isinstance(k, bytes) else str(k)
                 for k in data) if isinstance(data, dict) else None)
  held = (f"a dict with keys {keys}" if keys is not None
          else f"a {type(data).__name__}")
  raise DataError(f"{what}: {path!r} must hold a dict with {key!r} "
                  f"({expected}); it holds {held}.")
