"""Readers of the two CIFAR-100 archives of its authors (Krizhevsky, 2009).

Both hold CIFAR-100's 50,000 `train` and 10,000 `test` images, 32x32 RGB, with
a fine label (0-99) and a coarse label (0-19) each.

Binary archive, `cifar-100-binary/` (or `cifar-100-binary.tar.gz`):
  train.bin, test.bin   records of 3,074 bytes: 1 coarse-label byte, 1
                        fine-label byte, then 3,072 pixel bytes: the red,
                        green and blue planes, each 32x32 row-major
  fine_label_names.txt  the 100 fine label names, one a line, in id order
  Read with NumPy alone (no pickle); a folder is memory-mapped.

Python archive, `cifar-100-python/` (or `cifar-100-python.tar.gz`):
  train, test           pickles of dicts with b'data' (uint8 [N, 3072], rows
                        in the binary archive's plane order), b'fine_labels',
                        b'coarse_labels', b'filenames', b'batch_label'
  meta                  a pickle with 'fine_label_names', 'coarse_label_names'
  Read with `safe_pickle` (a warning says that pickles can run code).

Each reader returns `Part`s: the images as a lazy uint8 `[N, 32, 32, 3]` view
and their fine label names, in file order. `dataset` (the registered name
reading the archive: `cifar_fs` or `fc100`) starts every message.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from typing import List, Optional, Tuple

from absl import logging
import numpy as np

from advmeta_jax.datasets import base as base_lib
from advmeta_jax.datasets import safe_pickle
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

RECORD_BYTES = 3074
PIXELS = 3072
ARCHIVE_COUNTS = {"train": 50000, "test": 10000}
BINARY_FOLDER = "cifar-100-binary"
PYTHON_FOLDER = "cifar-100-python"

Part = Tuple[np.ndarray, np.ndarray]  # (images [N,32,32,3] view, fine names)


def planes_to_images(pixels: np.ndarray) -> np.ndarray:
  """`[N, 3072]` R,G,B planes -> a `[N, 32, 32, 3]` view (no copy)."""
  return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _label_names(names, what: str) -> Tuple[str, ...]:
  """Checks a list of 100 fine label names; warns if they are not CIFAR-100's."""
  names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n)
                for n in names)
  names = tuple(n.strip() for n in names if n.strip())
  if len(names) != 100:
    raise DataError(f"{what}: expected CIFAR-100's 100 fine label names, got "
                    f"{len(names)}.")
  splits.ordered_classes(names, splits.CIFAR100_FINE_LABELS, what)
  return names


def _check_count(n: int, part: str, what: str) -> None:
  if n != ARCHIVE_COUNTS[part]:
    logging.warning("%s: %d images, not CIFAR-100's %d.", what, n,
                    ARCHIVE_COUNTS[part])


def parse_bin(buffer: np.ndarray, names: Tuple[str, ...], part: str,
              what: str) -> Part:
  """One `.bin` file's bytes -> `(images view, fine names)`.

  Raises:
    DataError: the size is not a whole number of records (a truncated file),
      or a fine label is not below 100.
  """
  if buffer.size == 0 or buffer.size % RECORD_BYTES:
    raise DataError(
        f"{what}: {buffer.size:,} bytes is not a whole number of "
        f"{RECORD_BYTES:,}-byte records (1 coarse-label byte, 1 fine-label "
        f"byte, {PIXELS:,} pixel bytes): the file is truncated or not a "
        f"CIFAR-100 binary file.")
  records = buffer.reshape(-1, RECORD_BYTES)
  fine = records[:, 1]
  if fine.max() >= len(names):
    raise DataError(f"{what}: fine label {int(fine.max())} found; CIFAR-100 "
                    f"has labels 0-99: not a CIFAR-100 binary file.")
  _check_count(len(records), part, what)
  return planes_to_images(records[:, 2:]), np.asarray(names)[fine]


def _names_file(text: str, what: str) -> Tuple[str, ...]:
  return _label_names(text.splitlines(), what)


def read_binary_folder(folder: str, dataset: str = "cifar_fs") -> List[Part]:
  """The `train` and `test` parts of an extracted binary archive."""
  names_path = os.path.join(folder, "fine_label_names.txt")
  if os.path.isfile(names_path):
    with open(names_path, encoding="latin1") as f:
      names = _names_file(f.read(), f"{dataset}: {names_path!r}")
  else:
    logging.warning("%s: no fine_label_names.txt; using CIFAR-100's label "
                    "order (the names sorted).", folder)
    names = splits.CIFAR100_FINE_LABELS
  parts = []
  for part in ("train", "test"):
    path = os.path.join(folder, f"{part}.bin")
    try:
      buffer = np.memmap(path, np.uint8, mode="r") if os.path.getsize(
          path) else np.zeros(0, np.uint8)
    except OSError as e:
      raise DataError(f"{dataset}: cannot read {path!r} ({e}).") from e
    parts.append(parse_bin(buffer, names, part, f"{dataset}: {path!r}"))
  return parts


def _tar_members(path: str, wanted: Tuple[str, ...], dataset: str):
  """Yields `(basename, fileobj)` of the members named `wanted` of a tar.gz."""
  try:
    tar = tarfile.open(path, "r:*")
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise DataError(f"{dataset}: cannot open {path!r} as a tar archive "
                    f"({base_lib.reason(e)}); download it again.") from e
  with tar:
    seen = set()
    try:
      for member in tar:
        base = os.path.basename(member.name)
        if member.isfile() and base in wanted and base not in seen:
          seen.add(base)
          yield base, tar.extractfile(member), f"{path}::{member.name}"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
      raise DataError(
          f"{dataset}: {path!r} is truncated or corrupt ({base_lib.reason(e)}); "
          f"download it again.") from e
  missing = [w for w in wanted if w not in seen]
  if missing:
    raise DataError(f"{dataset}: {path!r} has no member {missing[0]!r} (it "
                    f"must hold {', '.join(wanted)}).")


def _read_member(fileobj, label: str, dataset: str) -> bytes:
  try:
    return fileobj.read()
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise DataError(f"{dataset}: {label!r} cannot be read: the archive is "
                    f"truncated or corrupt ({base_lib.reason(e)}).") from e


def read_binary_tar(path: str, dataset: str = "cifar_fs") -> List[Part]:
  """The `train` and `test` parts of `cifar-100-binary.tar.gz`."""
  raw, names = {}, None
  wanted = ("fine_label_names.txt", "train.bin", "test.bin")
  for base, fileobj, label in _tar_members(path, wanted, dataset):
    data = _read_member(fileobj, label, dataset)
    if base == "fine_label_names.txt":
      names = _names_file(data.decode("latin1"), f"{dataset}: {label!r}")
    else:
      raw[base[:-4]] = (np.frombuffer(data, np.uint8), f"{dataset}: {label!r}")
  return [parse_bin(raw[p][0], names, p, raw[p][1]) for p in ("train", "test")]


def parse_python(data, names: Tuple[str, ...], part: str, label: str,
                 dataset: str = "cifar_fs") -> Part:
  """One unpickled `train`/`test` dict -> `(images view, fine names)`."""
  pixels = safe_pickle.get(data, "data", label, dataset,
                           "uint8 [N, 3072]")
  fine = safe_pickle.get(data, "fine_labels", label, dataset,
                         "a list of N fine labels")
  if (not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or
      pixels.ndim != 2 or pixels.shape[1] != PIXELS):
    raise DataError(
        f"{dataset}: {label!r}: 'data' must be a uint8 array [N, {PIXELS}], "
        f"got {getattr(pixels, 'dtype', type(pixels).__name__)} "
        f"{getattr(pixels, 'shape', '')}.")
  try:
    fine = np.asarray(fine, np.int64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise DataError(f"{dataset}: {label!r}: 'fine_labels' must be a list of "
                    f"integers ({e}).") from e
  if (fine.shape != (pixels.shape[0],) or not fine.size or fine.min() < 0 or
      fine.max() > 99):
    raise DataError(f"{dataset}: {label!r}: 'fine_labels' must hold "
                    f"{pixels.shape[0]} labels in 0-99.")
  _check_count(len(fine), part, f"{dataset}: {label!r}")
  return planes_to_images(pixels), np.asarray(names)[fine]


def _meta_names(meta, label: str, dataset: str) -> Tuple[str, ...]:
  return _label_names(safe_pickle.get(meta, "fine_label_names", label,
                                      dataset, "the 100 label names"),
                      f"{dataset}: {label!r}")


def read_python_folder(folder: str, dataset: str = "cifar_fs") -> List[Part]:
  """The `train` and `test` parts of an extracted python archive."""
  meta_path = os.path.join(folder, "meta")
  names = _meta_names(safe_pickle.load(meta_path, dataset), meta_path,
                      dataset)
  parts = []
  for part in ("train", "test"):
    path = os.path.join(folder, part)
    data = safe_pickle.load(path, dataset, warned=True)
    parts.append(parse_python(data, names, part, path, dataset))
  return parts


def read_python_tar(path: str, dataset: str = "cifar_fs") -> List[Part]:
  """The `train` and `test` parts of `cifar-100-python.tar.gz`."""
  loaded, whats = {}, {}
  for base, fileobj, label in _tar_members(path, ("meta", "train", "test"),
                                           dataset):
    loaded[base] = safe_pickle.load(label, dataset, fileobj=fileobj,
                                    warned=bool(loaded))
    whats[base] = label
  names = _meta_names(loaded["meta"], whats["meta"], dataset)
  return [parse_python(loaded[p], names, p, whats[p], dataset) for p in ("train",
                                                                 "test")]


def find_archive(root: str, folder: str, members: Tuple[str, ...],
                 tar_name: str) -> Tuple[Optional[str], Optional[str]]:
  """`(extracted folder, tar.gz)` of an archive directly in `root`, if any.

  The extracted folder may be `root` itself (it holds the members) or
  `root/folder`.
  """
  def has_members(d):
    return all(os.path.isfile(os.path.join(d, m)) for m in members)
  extracted = next((d for d in (root, os.path.join(root, folder))
                    if os.path.isdir(d) and has_members(d)), None)
  tar = os.path.join(root, tar_name)
  return extracted, (tar if os.path.isfile(tar) else None)
