"""Reading torchmeta's HDF5 files: one uint8 dataset per class, and a JSON list.

torchmeta (Deleu et al., "Torchmeta: A meta-learning library for PyTorch",
2019) converts CIFAR-100 and MiniImageNet once into HDF5 files with one
dataset of shape `[n, H, W, 3]` per class, and lists each split's classes in a
JSON file beside them. Each dataset is read straight into its place in one
preallocated array, so a split costs one copy of its pixels
(`read_datasets`). For tieredImageNet and CUB it keeps the encoded files
instead: one dataset of shape `[n]` per class whose elements are
variable-length uint8 arrays, the bytes of a PNG or JPEG file
(`read_encoded_datasets` decodes them).
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError


def read_json_list(path: str, what: str, expected: str) -> list:
  """The JSON list in `path`; DataError naming the file if it is not one."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{what}: cannot read {path!r} as JSON ({e}).") from e
  if not isinstance(value, list) or not value:
    raise DataError(f"{what}: {path!r} must hold a non-empty JSON list of "
                    f"{expected}, got {type(value).__name__}.")
  return value


def _open(path: str, what: str):
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f"{what}: reading {path!r} needs h5py (`pip install "
                    f"h5py`).") from e
  try:
    return h5py.File(path, "r")
  except (OSError, ValueError) as e:
    raise DataError(f"{what}: cannot open {path!r} as HDF5 "
                    f"({base.reason(e)}); the file is "
                    f"truncated or corrupt: download or convert it again."
                    ) from e


def _dataset(f, key: str, path: str, what: str):
  """The dataset `key` of the open file `f`, or one line naming what the file
  holds instead."""
  ds = f.get(key)
  if ds is None or not hasattr(ds, "shape"):
    raise DataError(f"{what}: {path!r} has no dataset {key!r} (it holds "
                    f"{sorted(f.keys())[:8]} at the top).")
  return ds


def read_datasets(path: str, keys: Sequence[str], image_size: int,
                  what: str) -> Tuple[np.ndarray, List[int]]:
  """Reads the datasets `keys` of an HDF5 file into one uint8 array.

  Args:
    path: the HDF5 file.
    keys: dataset paths inside the file (e.g. "fish/shark"), in class order.
    image_size: side of the returned images (resized if it differs).
    what: the split, for messages.

  Returns:
    `(images, counts)`: uint8 `[sum(counts), image_size, image_size, 3]`, the
    datasets one after the other, and the number of images of each.

  Raises:
    DataError: the file cannot be opened, a key is missing, a dataset is not
      uint8 `[n, H, W, 3]`, or its data cannot be read.
  """
  with _open(path, what) as f:
    shapes = []
    for key in keys:
      ds = _dataset(f, key, path, what)
      if ds.dtype != np.uint8 or len(ds.shape) != 4 or ds.shape[-1] != 3:
        raise DataError(f"{what}: {path!r}[{key!r}] must be uint8 "
                        f"[n, H, W, 3], got {ds.dtype} {ds.shape}.")
      shapes.append(ds.shape)
    counts = [s[0] for s in shapes]
    out = np.empty((sum(counts), image_size, image_size, 3), np.uint8)
    pos = 0
    for key, shape in zip(keys, shapes):
      try:
        if shape[1:3] == (image_size, image_size):
          if shape[0]:
            f[key].read_direct(out, dest_sel=np.s_[pos:pos + shape[0]])
        else:
          out[pos:pos + shape[0]] = base.resize_uint8(f[key][()], image_size)
      except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{what}: cannot read {path!r}[{key!r}] "
                        f"({base.reason(e)}); the "
                        f"file is truncated or corrupt.") from e
      pos += shape[0]
  return out, counts


def read_encoded_datasets(path: str, keys: Sequence[str], image_size: int,
                          what: str) -> Tuple[np.ndarray, List[int]]:
  """Decodes the datasets `keys` of encoded images into one uint8 array.

  Args:
    path: the HDF5 file.
    keys: datasets of shape `[n]` whose elements are the bytes of one image
      file each (h5py's variable-length uint8), in class order.
    image_size: side of the returned images.
    what: the split, for messages.

  Returns:
    `(images, counts)`: uint8 `[sum(counts), image_size, image_size, 3]` and
    the number of images of each dataset.

  Raises:
    DataError: the file cannot be opened, a key is missing or is not a 1-D
      dataset of variable-length bytes, or an image cannot be decoded.
  """
  from advmeta_jax.datasets import image_folder  # pylint: disable=g-import-not-at-top
  with _open(path, what) as f:
    shapes = []
    for key in keys:
      ds = _dataset(f, key, path, what)
      if len(ds.shape) != 1 or ds.dtype.kind != "O":
        raise DataError(f"{what}: {path!r}[{key!r}] must hold one encoded "
                        f"image (variable-length uint8) per element, [n], got "
                        f"{ds.dtype} {ds.shape}.")
      shapes.append(ds.shape)
    counts = [s[0] for s in shapes]
    out = np.empty((sum(counts), image_size, image_size, 3), np.uint8)
    pos = 0
    for key, count in zip(keys, counts):
      try:
        items = list(f[key][()]) if count else []
      except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{what}: cannot read {path!r}[{key!r}] "
                        f"({base.reason(e)}); the file is truncated or "
                        f"corrupt.") from e
      out[pos:pos + count] = image_folder.read_image_bytes(
          items, image_size, f"{path!r}[{key!r}]")
      pos += count
  return out, counts


# torchmeta's CIFAR-100 layout, shared by CIFAR-FS and FC100: `data.hdf5`
# (one dataset per "<coarse>/<fine>" class) and `<subfolder>/<split>_labels
# .json` ([coarse, fine] pairs), in the data directory or its `cifar100/`.
TORCHMETA_CIFAR_DATA = "data.hdf5"


def torchmeta_cifar_root(root: str, split: str,
                         subfolder: str) -> Optional[str]:
  """The folder of torchmeta's CIFAR-100 files for `split` of the dataset in
  `subfolder` ("cifar-fs", "fc100"), or None."""
  for folder in (root, os.path.join(root, "cifar100")):
    labels = os.path.join(folder, subfolder, f"{split}_labels.json")
    if os.path.isfile(os.path.join(folder, TORCHMETA_CIFAR_DATA)) and (
        os.path.isfile(labels)):
      return folder
  return None


def read_torchmeta_cifar(source: str, split: str, image_size: int, *,
                         subfolder: str, name: str,
                         split_classes: Sequence[str]
                         ) -> Dict[str, base.ClassSplit]:
  """`{split: ClassSplit}` from torchmeta's CIFAR-100 files in `source`:
  the classes of `<subfolder>/<split>_labels.json`, checked against
  `split_classes` and put in their order (`splits.ordered_classes`)."""
  labels_path = os.path.join(source, subfolder, f"{split}_labels.json")
  pairs = read_json_list(labels_path, name, "[coarse, fine] pairs")
  if not all(isinstance(p, list) and len(p) == 2 and
             all(isinstance(x, str) for x in p) for p in pairs):
    raise DataError(f"{name}: {labels_path!r} must be a JSON list of "
                    f"[coarse name, fine name] pairs.")
  coarse_of = {fine: coarse for coarse, fine in pairs}
  classes = splits.ordered_classes(list(coarse_of), split_classes,
                                   f"{name} ({labels_path})")
  keys = [f"{coarse_of[c]}/{c}" for c in classes]
  images, counts = read_datasets(os.path.join(source, TORCHMETA_CIFAR_DATA),
                                 keys, image_size, name)
  labels = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
  return {split: base.ClassSplit(images=images, labels=labels,
                                 class_names=tuple(classes), name=name)}


def torchmeta_split_folder(root: str, split: str,
                           subfolder: str) -> Optional[str]:
  """The folder (`root` or `root/<subfolder>`) that holds torchmeta's
  `<split>_data.hdf5` and `<split>_labels.json` (tieredImageNet, CUB), or
  None."""
  for folder in (root, os.path.join(root, subfolder)):
    if all(os.path.isfile(os.path.join(folder, f"{split}_{suffix}"))
           for suffix in ("data.hdf5", "labels.json")):
      return folder
  return None
