"""`tiered_imagenet`: tieredImageNet read from the files people have.

tieredImageNet (Ren et al., "Meta-learning for semi-supervised few-shot
classification", ICLR 2018): 608 ImageNet classes in 34 categories, 84x84
RGB; categories never straddle splits. train 351 classes (20 categories,
448,695 images), val 97 (6, 124,261), test 160 (8, 206,209). The split is
the authors' (`fewshot/data/tiered_imagenet_split/{train,val,test}.csv` in
github.com/renmengye/few-shot-ssl-public) and every layout has one file per
split, so it is read from the files; the class, category and image counts
are checked against the published ones (a difference is a warning).

`--data_dir=DIR` may hold any of these layouts, in DIR or one folder below it
(so both `tiered-imagenet/` and the folder above it work); the first found,
per split, in this order, is read:

  1. npz        `{split}_images.npz` (`images`: uint8 [N, 84, 84, 3], BGR) +
                `{split}_labels.pkl`: the decompressed form of Ren et al.'s
                files (their `fewshot/data/compress_tiered_imagenet.py`
                `decompress`, which decodes with OpenCV, hence BGR; converted
                to RGB here), which MetaOptNet's `data/tiered_imagenet.py`
                (github.com/kjunelee/MetaOptNet) reads; read directly
                (`allow_pickle=False` for the images)
  2. png_pkl    `{split}_images_png.pkl` + `{split}_labels.pkl`: Ren et al.'s
                released files (the `tiered-imagenet.tar` that learn2learn's
                `TieredImagenet` downloads): a pickled list of N encoded PNG
                files (uint8 arrays or bytes); cached
  3. torchmeta  `tieredimagenet/{split}_data.hdf5` (group `datasets`, one
                dataset per class whose elements are the PNG files' bytes) +
                `{split}_labels.json` (the class names), torchmeta's
                `TieredImagenet`; cached

`{split}_labels.pkl` is a dict with `label_specific` (int [N], the class of
each image, 0..C-1), `label_specific_str` (the C class names),
`label_general` (int [N], the category of each image) and `label_general_str`
(the category names). Class ids follow `label_specific` (torchmeta's JSON
lists the same names in the same order); a split's images are grouped by
class, in file order within a class.

Pickles run code when read: they are read with `safe_pickle` (NumPy arrays
and plain containers only), with a warning. Decoding the 779,165 PNGs takes a
while, so the PNG layouts are read once into the prepared cache
(`advmeta_jax.datasets.cache`) and memory-mapped afterwards. Reading a
`png_pkl` split holds the unpickled PNG bytes (about the size of the file)
beside the split's decoded pixels (N x 84 x 84 x 3 bytes: 9.5 GB for train).
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import image_folder
from advmeta_jax.datasets import safe_pickle
from advmeta_jax.datasets import sources
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

NAME = "tiered_imagenet"
LABELS_FILE = "{split}_labels.pkl"
NPZ_FILE = "{split}_images.npz"
PNG_FILE = "{split}_images_png.pkl"
TORCHMETA_FOLDER = "tieredimagenet"
TORCHMETA_DATA = "{split}_data.hdf5"
TORCHMETA_LABELS = "{split}_labels.json"


def _split_name(split: str) -> str:
  return f"{NAME}/{split}"


# --- `{split}_labels.pkl` ------------------------------------------------------


def _read_labels(path: str, name: str) -> Tuple[np.ndarray, Tuple[str, ...],
                                                Optional[np.ndarray]]:
  """`(label_specific [N], class names, label_general [N] or None)`."""
  data = safe_pickle.load(path, name)
  ids = safe_pickle.get(data, "label_specific", path, name,
                        "the class id of each image")
  names = safe_pickle.get(data, "label_specific_str", path, name,
                          "the class names")
  try:
    ids = np.asarray(ids, np.int64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise DataError(f"{name}: {path}['label_specific'] must be integers "
                    f"({base.reason(e)}).") from e
  if not isinstance(names, (list, tuple)) or not names:
    raise DataError(f"{name}: {path}['label_specific_str'] must be a "
                    f"non-empty list of class names, got "
                    f"{type(names).__name__}.")
  names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n)
                for n in names)
  if not len(ids) or ids.min() < 0 or ids.max() >= len(names):
    raise DataError(f"{name}: {path}['label_specific'] must hold class ids in "
                    f"0..{len(names) - 1} (one per name of "
                    f"'label_specific_str').")
  general = None
  if isinstance(data, dict) and any(k in data for k in ("label_general",
                                                        b"label_general")):
    try:
      general = np.asarray(safe_pickle.get(data, "label_general", path, name,
                                           "the category of each image"),
                           np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
      raise DataError(f"{name}: {path}['label_general'] must be integers "
                      f"({base.reason(e)}).") from e
    if general.shape != ids.shape:
      raise DataError(f"{name}: {path}: 'label_general' holds {len(general)} "
                      f"labels, 'label_specific' {len(ids)}.")
  return ids, names, general


def _check(split: str, num_classes: int, num_images: int,
           general: Optional[np.ndarray], what: str) -> None:
  """Warns where the split differs from the published counts."""
  splits.check_total(num_classes, splits.TIERED_IMAGENET_NUM_CLASSES[split],
                     what, "classes")
  splits.check_total(num_images, splits.TIERED_IMAGENET_NUM_IMAGES[split],
                     what, "images")
  if general is not None:
    splits.check_total(len(np.unique(general)),
                       splits.TIERED_IMAGENET_NUM_CATEGORIES[split], what,
                       "categories")


def _class_order(ids: np.ndarray) -> Optional[np.ndarray]:
  """The stable order that groups images by class; None if they already are."""
  if np.all(ids[1:] >= ids[:-1]):
    return None
  return np.argsort(ids, kind="stable")


def _split_of(images: np.ndarray, ids: np.ndarray, names: Sequence[str],
              name: str) -> base.ClassSplit:
  return base.ClassSplit(images=images, labels=ids.astype(np.int32),
                         class_names=tuple(names), name=name)


def _labels_path(folder: str, split: str) -> str:
  return os.path.join(folder, LABELS_FILE.format(split=split))


# --- 1. npz + labels pickle ----------------------------------------------------


def _bgr_to_rgb(images: np.ndarray) -> None:
  """Reverses the channels in place, a chunk at a time (no second copy)."""
  for start in range(0, len(images), 4096):
    chunk = images[start:start + 4096]
    chunk[...] = chunk[..., ::-1]


def _read_npz(source: str, split: str, image_size: int,
              dataset: str) -> Dict[str, base.ClassSplit]:
  del dataset
  name = _split_name(split)
  folder = os.path.dirname(source)
  ids, names, general = _read_labels(_labels_path(folder, split), name)
  images = base.read_npz_arrays(source, name, {
      "images": "uint8 [N, 84, 84, 3]"})["images"]
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise DataError(f"{name}: {source!r}['images'] must be uint8 "
                    f"[N, 84, 84, 3], got {images.dtype} {images.shape}.")
  if len(images) != len(ids):
    raise DataError(f"{name}: {source!r} holds {len(images)} images, its "
                    f"labels {_labels_path(folder, split)!r} {len(ids)}.")
  _check(split, len(names), len(ids), general, name)
  order = _class_order(ids)
  if order is not None:
    images, ids = images[order], ids[order]
  _bgr_to_rgb(images)
  images = base.resize_uint8(images, image_size)
  return {split: _split_of(images, ids, names, name)}


# --- 2. PNG pickle + labels pickle ----------------------------------------------


def _read_png_pkl(source: str, split: str, image_size: int,
                  dataset: str) -> Dict[str, base.ClassSplit]:
  del dataset
  name = _split_name(split)
  folder = os.path.dirname(source)
  ids, names, general = _read_labels(_labels_path(folder, split), name)
  pngs = safe_pickle.load(source, name, warned=True)
  if not isinstance(pngs, (list, tuple)):
    raise DataError(f"{name}: {source!r} must hold a list of encoded PNG "
                    f"files, got a {type(pngs).__name__}.")
  if len(pngs) != len(ids):
    raise DataError(f"{name}: {source!r} holds {len(pngs)} images, its "
                    f"labels {_labels_path(folder, split)!r} {len(ids)}.")
  _check(split, len(names), len(ids), general, name)
  order = _class_order(ids)
  if order is not None:
    pngs, ids = [pngs[i] for i in order], ids[order]
  images = image_folder.read_image_bytes(pngs, image_size, repr(source))
  return {split: _split_of(images, ids, names, name)}


# --- 3. torchmeta's HDF5 of PNG bytes ----------------------------------------------


def _torchmeta_probe(root: str, split: str) -> Optional[str]:
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  return hdf5.torchmeta_split_folder(root, split, TORCHMETA_FOLDER)


def _read_torchmeta(source: str, split: str, image_size: int,
                    dataset: str) -> Dict[str, base.ClassSplit]:
  del dataset
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  name = _split_name(split)
  labels_path = os.path.join(source, TORCHMETA_LABELS.format(split=split))
  names = hdf5.read_json_list(labels_path, name, "class names")
  if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(
      names):
    raise DataError(f"{name}: {labels_path!r} must list distinct class "
                    f"names.")
  images, counts = hdf5.read_encoded_datasets(
      os.path.join(source, TORCHMETA_DATA.format(split=split)),
      [f"datasets/{n}" for n in names], image_size, name)
  _check(split, len(names), int(sum(counts)), None, name)
  ids = np.repeat(np.arange(len(names)), counts)
  return {split: _split_of(images, ids, names, name)}


def _in_folder(file_pattern: str):
  def probe(root: str, split: str) -> Optional[str]:
    labels = os.path.join(root, LABELS_FILE.format(split=split))
    data = os.path.join(root, file_pattern.format(split=split))
    return data if os.path.isfile(data) and os.path.isfile(labels) else None
  return probe


LAYOUTS = (
    sources.Layout("npz", "{split}_images.npz with {split}_labels.pkl",
                   _in_folder(NPZ_FILE), _read_npz, cached=False),
    sources.Layout("png_pkl", "{split}_images_png.pkl with {split}_labels.pkl",
                   _in_folder(PNG_FILE), _read_png_pkl, cached=True),
    sources.Layout("torchmeta", "tieredimagenet/{split}_data.hdf5 with "
                   "{split}_labels.json", _torchmeta_probe, _read_torchmeta,
                   cached=True),
)


@base.register(NAME, default_image_size=84, channels=3, needs_data_dir=True,
               caches=True,
               description="tieredImageNet from a local --data_dir (Ren et "
               "al.'s PNG pickles, their decompressed npz, or torchmeta's "
               "HDF5), 351/97/160 classes in 20/6/8 categories, 84x84 RGB.")
def load_tiered_imagenet(split: str, *, data_dir: Optional[str] = None,
                         image_size: int = 84,
                         cache_dir: Optional[str] = None) -> base.ClassSplit:
  """Loads a tieredImageNet class split from a local directory.

  Args:
    split: "train", "val" or "test".
    data_dir: directory holding one of the layouts of the module docstring.
    image_size: side of the square images returned.
    cache_dir: where the prepared cache of a slow layout is kept; `None`:
      next to the data.

  Returns:
    The split; class ids follow the files' `label_specific`.

  Raises:
    DataError: missing directory or files, malformed or corrupt files, a
      cache that does not match its manifest.
  """
  if not data_dir:
    raise DataError("tiered_imagenet is read from a local directory: pass "
                    "--data_dir.")
  found = sources.find(data_dir, split, LAYOUTS, NAME)
  return sources.load(found, split, dataset=NAME, image_size=image_size,
                      cache_dir=cache_dir)

