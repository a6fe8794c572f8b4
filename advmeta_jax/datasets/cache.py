"""The prepared cache of a slow format: uint8 `.npy` files and a manifest.

The first read of a slow format (image folders, pickles, zip and tar.gz
archives) writes, for each split it read,

    <cache>/<split>_images.npy    uint8 [N, S, S, C], memory-mapped on reads
    <cache>/<split>_labels.npy    int32 [N], class ids of the split
    <cache>/manifest.json         what the files hold and their sha256

where `<cache>` is `advmeta_cache/<dataset>-<format>-<S>px` next to the data
(in the folder where the format was found) or, with `cache_dir`,
`<cache_dir>/<dataset>-<format>-<S>px-<hash of the source path>`.

Every later read checks the manifest (format, image size, class names, counts,
byte sizes and sha256 of the split's files) before it memory-maps the arrays,
and refuses a cache that does not match with a `DataError` that says how to
rebuild it. Files are written to a temporary name and renamed into place, and
the manifest last, so that an interrupted build leaves no cache that passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, Optional

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.errors import DataError

CACHE_FOLDER = "advmeta_cache"
MANIFEST = "manifest.json"
VERSION = 1
_HASH_CHUNK = 1 << 24


def cache_path(*, dataset: str, fmt: str, image_size: int, root: str,
               source: str, cache_dir: Optional[str]) -> str:
  """Where the cache of `source` (found in `root`) lives.

  Args:
    dataset: the registered dataset name.
    fmt: the format (layout) name.
    image_size: side of the cached images.
    root: the folder in which the format was found.
    source: the file or folder read, whose absolute path names the cache under
      `cache_dir`.
    cache_dir: a folder for all caches; `None` puts the cache next to the data.

  Returns:
    The cache folder (it may not exist yet).
  """
  name = f"{dataset}-{fmt}-{image_size}px"
  if cache_dir is None:
    return os.path.join(root, CACHE_FOLDER, name)
  digest = hashlib.sha256(
      os.path.abspath(root).encode("utf-8")).hexdigest()[:10]
  return os.path.join(os.path.expanduser(cache_dir), f"{name}-{digest}")


def rebuild_hint(path: str, dataset: str) -> str:
  """The sentence that tells how to rebuild a refused cache."""
  return (f"Rebuild it: delete {path!r} and run again, or run `python -m "
          f"launch.prepare_data --dataset={dataset} --data_dir=DIR --rebuild` "
          f"(with the same --data_dir, --cache_dir and --image_size).")


def sha256(path: str) -> str:
  """The hex sha256 of a file, read in 16 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
      h.update(chunk)
  return h.hexdigest()


def read_manifest(path: str, dataset: str) -> Optional[dict]:
  """The manifest of the cache at `path`; `None` if there is none.

  Raises:
    DataError: the manifest exists but is not a manifest of this module.
  """
  file = os.path.join(path, MANIFEST)
  if not os.path.isfile(file):
    return None
  try:
    with open(file, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{dataset}: the cache manifest {file!r} cannot be read "
                    f"({e}). {rebuild_hint(path, dataset)}") from e
  if (not isinstance(manifest, dict) or manifest.get("version") != VERSION or
      not isinstance(manifest.get("splits"), dict)):
    raise DataError(f"{dataset}: {file!r} is not a version-{VERSION} cache "
                    f"manifest. {rebuild_hint(path, dataset)}")
  return manifest


def _refuse(path: str, dataset: str, split: str, problem: str):
  raise DataError(
      f"{dataset}/{split}: the prepared cache {path!r} does not match its "
      f"manifest: {problem}. {rebuild_hint(path, dataset)}")


def _check_header(manifest: dict, expect: Dict[str, object], path: str,
                  dataset: str, split: str) -> None:
  for key, value in expect.items():
    if manifest.get(key) != value:
      _refuse(path, dataset, split,
              f"it holds {key}={manifest.get(key)!r}, this run reads "
              f"{key}={value!r}")


def _classes_digest(classes, labels_file: dict) -> str:
  """sha256 of the class names in label order, bound to the labels file's
  own sha256: an edit of the names (swapped, renamed, dropped) changes it."""
  text = json.dumps([list(classes), labels_file.get("sha256")])
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_classes(entry: dict, path: str, dataset: str, split: str) -> None:
  """The class names against the labels: as many names as labelled classes,
  and (caches that record it) the digest of names and labels."""
  classes = entry.get("classes")
  counts = entry.get("class_counts")
  if (not isinstance(classes, list) or not isinstance(counts, list)
      or len(classes) != len(counts)):
    _refuse(path, dataset, split,
            f"it names {len(classes or [])} classes for "
            f"{len(counts or [])} labelled ones")
  want = entry.get("classes_sha256")
  labels = entry["files"][f"{split}_labels.npy"]
  if want is not None and want != _classes_digest(classes, labels):
    _refuse(path, dataset, split, "its class names were edited (they no "
            "longer match the digest written with the labels)")


def _check_files(entry: dict, path: str, dataset: str, split: str) -> None:
  """Byte sizes first (cheap, catches truncation), then sha256 (edits)."""
  files = entry.get("files")
  if not isinstance(files, dict) or set(files) != {
      f"{split}_images.npy", f"{split}_labels.npy"}:
    _refuse(path, dataset, split, "its list of files is malformed")
  for name, want in files.items():
    file = os.path.join(path, name)
    if not os.path.isfile(file):
      _refuse(path, dataset, split, f"{name} is missing")
    size = os.path.getsize(file)
    if size != want.get("bytes"):
      _refuse(path, dataset, split,
              f"{name} is {size:,} bytes, the manifest says "
              f"{want.get('bytes'):,} (truncated or replaced)")
  for name, want in files.items():
    if sha256(os.path.join(path, name)) != want.get("sha256"):
      _refuse(path, dataset, split,
              f"the sha256 of {name} differs from the manifest's (the file "
              f"was edited or damaged)")


def read_split(path: str, split: str, *, dataset: str,
               expect: Dict[str, object]) -> Optional[base.ClassSplit]:
  """The cached `split`, memory-mapped, or `None` if it is not cached.

  Args:
    path: the cache folder.
    split: "train", "val" or "test".
    dataset: the dataset name, for messages.
    expect: manifest fields this run requires (format, image_size, ...).

  Returns:
    The split with read-only memory-mapped images, or `None` when the folder
    has no manifest or the manifest has no entry for `split`.

  Raises:
    DataError: the cache does not match its manifest or `expect`.
  """
  manifest = read_manifest(path, dataset)
  if manifest is None or split not in manifest["splits"]:
    return None
  _check_header(manifest, expect, path, dataset, split)
  entry = manifest["splits"][split]
  _check_files(entry, path, dataset, split)
  _check_classes(entry, path, dataset, split)
  try:
    images = np.load(os.path.join(path, f"{split}_images.npy"), mmap_mode="r",
                     allow_pickle=False)
    labels = np.load(os.path.join(path, f"{split}_labels.npy"),
                     allow_pickle=False)
  except (OSError, ValueError) as e:
    _refuse(path, dataset, split, f"its arrays cannot be read ({e})")
  classes = tuple(entry.get("classes", ()))
  shape = (entry.get("num_images"),) + tuple(entry.get("image_shape", ()))
  if images.dtype != np.uint8 or images.shape != shape:
    _refuse(path, dataset, split,
            f"images are {images.dtype} {images.shape}, the manifest says "
            f"uint8 {shape}")
  if labels.shape != (shape[0],) or labels.dtype != np.int32:
    _refuse(path, dataset, split, f"labels are {labels.dtype} {labels.shape}")
  counts = np.bincount(labels, minlength=len(classes)).tolist() if len(
      labels) and labels.min() >= 0 else None
  if counts != entry.get("class_counts"):
    _refuse(path, dataset, split, "the images per class differ from the "
            "manifest's counts")
  return base.ClassSplit(images=images, labels=labels, class_names=classes,
                         name=f"{dataset}/{split}")


def write_splits(path: str, splits: Dict[str, base.ClassSplit], *,
                 header: Dict[str, object]) -> None:
  """Writes `splits` into the cache at `path` and adds them to its manifest.

  Each array is written to a temporary file in `path`, hashed while it is
  written, and renamed into place; the manifest is replaced last.

  Args:
    path: the cache folder (created if missing).
    splits: the splits to store.
    header: the manifest fields describing the source (dataset, format,
      source, image_size, ...), stored as given.

  Raises:
    OSError: the folder cannot be written (the caller decides what to do).
  """
  os.makedirs(path, exist_ok=True)
  dataset = str(header.get("dataset", ""))
  try:
    manifest = read_manifest(path, dataset) or {}
  except DataError:
    manifest = {}
  if manifest and any(manifest.get(k) != v for k, v in header.items()
                      if k != "source"):
    manifest = {}
  entries = dict(manifest.get("splits", {}))
  for split, data in splits.items():
    files = {}
    for kind, array in (("images", data.images), ("labels", data.labels)):
      name = f"{split}_{kind}.npy"
      files[name] = _write_npy(os.path.join(path, name), array)
    entries[split] = {
        "classes": list(data.class_names),
        "classes_sha256": _classes_digest(data.class_names,
                                          files[f"{split}_labels.npy"]),
        "num_images": int(data.images.shape[0]),
        "image_shape": list(data.images.shape[1:]),
        "class_counts": data.class_counts().tolist(),
        "source": header.get("source"),
        "files": files,
    }
  manifest = dict(header, version=VERSION, splits=entries)
  _atomic_write(os.path.join(path, MANIFEST),
                json.dumps(manifest, indent=1).encode("utf-8"))


class _HashingWriter:
  """A write-only file object that hashes what passes through it."""

  def __init__(self, f):
    self._f = f
    self.hash = hashlib.sha256()
    self.bytes = 0

  def write(self, data) -> int:
    data = memoryview(data).cast("B")
    self.hash.update(data)
    self.bytes += len(data)
    return self._f.write(data)


def _write_npy(file: str, array: np.ndarray) -> Dict[str, object]:
  """Writes one `.npy` through a temporary file; returns its size and sha256."""
  folder = os.path.dirname(file)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      writer = _HashingWriter(f)
      np.lib.format.write_array(writer, np.asarray(array), allow_pickle=False)
    os.replace(tmp, file)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return {"bytes": writer.bytes, "sha256": writer.hash.hexdigest()}


def _atomic_write(file: str, data: bytes) -> None:
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(file))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, file)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _is_cache_file(name: str) -> bool:
  return (name == MANIFEST or name.startswith(".tmp-") or
          name.endswith(("_images.npy", "_labels.npy")))


def remove(path: str) -> bool:
  """Deletes the cache folder at `path`; returns whether there was one.

  Only a folder that holds nothing but cache files (a complete cache, or what
  an interrupted first run left) is deleted.
  """
  if not os.path.isdir(path):
    return False
  others = [n for n in os.listdir(path) if not _is_cache_file(n)]
  if others:
    raise DataError(f"{path!r} is not an advmeta cache (it holds "
                    f"{sorted(others)[:3]}); not deleting it.")
  shutil.rmtree(path)
  return True
