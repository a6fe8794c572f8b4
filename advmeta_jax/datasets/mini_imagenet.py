"""`mini_imagenet`: MiniImageNet read from a local directory.

Source: MiniImageNet (Vinyals et al. 2016) with the class split of Ravi &
Larochelle ("Optimization as a model for few-shot learning", ICLR 2017):
100 ImageNet classes, 600 images each,
  train: 64 classes (38,400 images)
  val:   16 classes ( 9,600 images)
  test:  20 classes (12,000 images).
Nothing is downloaded: pass `--data_dir` holding the files in one of the
formats people have. Each format already carries the split (one file per
split), so the split membership is read from the files, not from a table
here; class ids within a split follow the sorted class names (WordNet ids).

Formats, auto-detected per split in this order of preference:
  1. CSV + image files (Ravi & Larochelle's own format):
       data_dir/{train,val,test}.csv   header `filename,label` (label: WordNet
                                       id), one row per image
       data_dir/images/<filename>      JPEG/PNG, decoded with Pillow
  2. npz: data_dir/mini-imagenet-{train,val,test}.npz with uint8 images
       [N, H, W, 3] under `images` (or `image_data`, `features`) and labels
       [N] (WordNet id strings or integers) under `labels` (or `targets`);
       loaded with `allow_pickle=False`.
  3. pickle: data_dir/mini-imagenet-cache-{train,val,test}.pkl, a dict with
       `image_data` (uint8 [N, 84, 84, 3]) and `class_dict` ({WordNet id: list
       of image indices}). Loading a pickle runs code from the file, so it is
       used only when neither other format is present, and a warning says so.

Format returned: uint8 `[N, image_size, image_size, 3]` (default 84);
greyscale is replicated to RGB and alpha dropped, other sizes are resized
(bilinear, antialiased).
"""

from __future__ import annotations

import csv
import os
import pickle
import zipfile
from typing import Optional, Tuple

from absl import logging
import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import image_folder
from advmeta_jax.errors import DataError

NPZ_IMAGE_KEYS = ("images", "image_data", "features")
NPZ_LABEL_KEYS = ("labels", "targets")
CSV_HEADER = ("filename", "label")


def _csv_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"{split}.csv")


def _npz_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"mini-imagenet-{split}.npz")


def _pkl_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"mini-imagenet-cache-{split}.pkl")


def to_rgb_uint8(images, image_size: int, what: str) -> np.ndarray:
  """Checks an image array and returns it as uint8 RGB at `image_size`².

  Args:
    images: uint8 `[N, H, W, 3]`; `[N, H, W]`, `[N, H, W, 1]` (greyscale) and
      `[N, H, W, 4]` (RGBA) are converted.
    image_size: side of the returned square images.
    what: the file and key the array came from, for messages.

  Returns:
    uint8 `[N, image_size, image_size, 3]`.

  Raises:
    DataError: not a uint8 array of one of the shapes above.
  """
  if not isinstance(images, np.ndarray):
    raise DataError(f"{what}: expected a uint8 array [N, H, W, 3], got a "
                    f"{type(images).__name__}.")
  if images.dtype != np.uint8:
    raise DataError(f"{what}: images must be uint8 (0-255), got dtype "
                    f"{images.dtype}.")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise DataError(
        f"{what}: images must have shape [N, H, W, 3] (channels last; "
        f"[N, H, W], [N, H, W, 1] and [N, H, W, 4] are converted), got "
        f"{images.shape}.")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  elif images.shape[-1] == 4:
    images = images[..., :3]
  return base.resize_uint8(images, image_size)


def _labelled_split(images: np.ndarray, names: np.ndarray,
                    name: str) -> base.ClassSplit:
  """A `ClassSplit` whose classes are the sorted distinct `names` (labels)."""
  classes, labels = np.unique(np.asarray(names), return_inverse=True)
  return base.ClassSplit(images=images,
                         labels=labels.reshape(-1).astype(np.int32),
                         class_names=tuple(str(c) for c in classes), name=name)


def _load_csv(data_dir: str, split: str, image_size: int,
              name: str) -> base.ClassSplit:
  """Format 1: `<split>.csv` + `images/`."""
  path = _csv_path(data_dir, split)
  image_dir = os.path.join(data_dir, "images")
  if not os.path.isdir(image_dir):
    raise DataError(
        f"{name}: found {path!r} but not the folder of images it names, "
        f"{image_dir!r}.")
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"{name}: cannot read {path!r} as CSV ({e}).") from e
  if not rows or tuple(c.strip() for c in rows[0]) != CSV_HEADER:
    raise DataError(
        f"{name}: {path!r} must start with the header "
        f"{','.join(CSV_HEADER)!r}, got {','.join(rows[0]) if rows else ''!r}.")
  files, wnids = [], []
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != 2 or not row[0].strip() or not row[1].strip():
      raise DataError(f"{name}: {path!r} line {line}: expected "
                      f"'filename,label', got {','.join(row)!r}.")
    files.append(os.path.join(image_dir, row[0].strip()))
    wnids.append(row[1].strip())
  if not files:
    raise DataError(f"{name}: {path!r} lists no images.")
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise DataError(
        f"{name}: {len(missing)} of the {len(files)} image files named in "
        f"{path!r} do not exist, e.g. {missing[0]!r}.")
  images = image_folder.read_image_files(files, image_size)
  return _labelled_split(images, wnids, name)


def _load_npz(data_dir: str, split: str, image_size: int,
              name: str) -> base.ClassSplit:
  """Format 2: `mini-imagenet-<split>.npz`."""
  path = _npz_path(data_dir, split)
  try:
    with np.load(path, allow_pickle=False) as npz:
      keys = list(npz.files)
      image_key = next((k for k in NPZ_IMAGE_KEYS if k in keys), None)
      label_key = next((k for k in NPZ_LABEL_KEYS if k in keys), None)
      if image_key is None or label_key is None:
        raise DataError(
            f"{name}: {path!r} holds arrays {keys}; expected images under one "
            f"of {list(NPZ_IMAGE_KEYS)} and labels under one of "
            f"{list(NPZ_LABEL_KEYS)}.")
      images = npz[image_key]
      labels = npz[label_key]
  except DataError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(
        f"{name}: cannot read {path!r} as an npz archive of plain arrays "
        f"({type(e).__name__}: {e}). Object arrays are not loaded (that would "
        f"run pickle); store labels as strings (dtype 'U') or integers."
    ) from e
  images = to_rgb_uint8(images, image_size, f"{name}: {path}[{image_key!r}]")
  what = f"{name}: {path}[{label_key!r}]"
  if labels.shape != (images.shape[0],):
    raise DataError(f"{what}: labels must have shape [{images.shape[0]}] (one "
                    f"per image), got {labels.shape}.")
  if labels.dtype.kind == "S":
    labels = labels.astype("U")
  if labels.dtype.kind == "U":
    return _labelled_split(images, labels, name)
  if labels.dtype.kind in "iu":
    return _labelled_split(images, labels.astype(np.int64), name)
  raise DataError(f"{what}: labels must be strings (WordNet ids) or integers, "
                  f"got dtype {labels.dtype}.")


def _load_pickle(data_dir: str, split: str, image_size: int,
                 name: str) -> base.ClassSplit:
  """Format 3: `mini-imagenet-cache-<split>.pkl` (runs pickle)."""
  path = _pkl_path(data_dir, split)
  logging.warning(
      "%s: loading %s with pickle, which can run arbitrary code stored in the "
      "file: load only pickles from a source you trust. The CSV + images and "
      "npz formats are safer (see advmeta_jax.datasets.mini_imagenet); "
      "convert once, e.g. np.savez('mini-imagenet-%s.npz', images=..., "
      "labels=...).", name, path, split)
  try:
    with open(path, "rb") as f:
      data = pickle.load(f, encoding="latin1")
  except Exception as e:  # pickle raises many types for a bad file
    raise DataError(f"{name}: cannot unpickle {path!r} "
                    f"({type(e).__name__}: {e}).") from e
  if (not isinstance(data, dict) or "image_data" not in data or
      "class_dict" not in data):
    keys = sorted(map(str, data)) if isinstance(data, dict) else None
    raise DataError(
        f"{name}: {path!r} must hold a dict with 'image_data' (uint8 "
        f"[N, 84, 84, 3]) and 'class_dict' ({{wnid: [indices]}}), got "
        f"{type(data).__name__}" + (f" with keys {keys}." if keys else "."))
  images = to_rgb_uint8(data["image_data"], image_size,
                        f"{name}: {path}['image_data']")
  class_dict = data["class_dict"]
  if not isinstance(class_dict, dict) or not class_dict:
    raise DataError(f"{name}: {path}['class_dict'] must be a non-empty dict "
                    f"{{wnid: list of image indices}}, got "
                    f"{type(class_dict).__name__}.")
  n = images.shape[0]
  owner = np.full((n,), -1, np.int64)
  wnids = sorted(class_dict, key=str)
  for label, wnid in enumerate(wnids):
    try:
      index = np.asarray(class_dict[wnid], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
      raise DataError(f"{name}: {path}['class_dict'][{wnid!r}] must be a list "
                      f"of image indices ({e}).") from e
    if index.size and (index.min() < 0 or index.max() >= n):
      raise DataError(f"{name}: {path}['class_dict'][{wnid!r}] has indices "
                      f"outside 0..{n - 1}.")
    if np.any(owner[index] >= 0):
      raise DataError(f"{name}: {path}['class_dict'] assigns some images to "
                      f"more than one class (e.g. class {wnid!r}).")
    owner[index] = label
  keep = owner >= 0
  if not keep.all():
    logging.warning("%s: %d of %d images in %s belong to no class of "
                    "'class_dict'; they are dropped.", name,
                    int((~keep).sum()), n, path)
    images, owner = images[keep], owner[keep]
  return base.ClassSplit(images=images, labels=owner.astype(np.int32),
                         class_names=tuple(str(w) for w in wnids), name=name)


def detect_format(data_dir: str, split: str) -> Tuple[str, str]:
  """Which format holds `split` in `data_dir`, in order of preference.

  Args:
    data_dir: the MiniImageNet directory.
    split: "train", "val" or "test".

  Returns:
    `(format, path)`: format "csv", "npz" or "pickle" and the file found.

  Raises:
    DataError: `data_dir` is missing or holds none of the formats.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f"mini_imagenet: data_dir {data_dir!r} is not a "
                    f"directory.")
  candidates = (("csv", _csv_path(data_dir, split)),
                ("npz", _npz_path(data_dir, split)),
                ("pickle", _pkl_path(data_dir, split)))
  for fmt, path in candidates:
    if os.path.isfile(path):
      return fmt, path
  present = sorted(os.listdir(data_dir))
  raise DataError(
      f"mini_imagenet/{split}: none of the supported files is in "
      f"{data_dir!r}; looked for "
      + ", ".join(os.path.basename(p) for _, p in candidates)
      + f" (the CSV also needs an images/ folder). The directory holds: "
      f"{present[:10]}{' ...' if len(present) > 10 else ''}.")


_LOADERS = {"csv": _load_csv, "npz": _load_npz, "pickle": _load_pickle}


@base.register("mini_imagenet", default_image_size=84, channels=3,
               needs_data_dir=True,
               description="MiniImageNet from a local --data_dir (CSV + "
               "images, npz, or pickle cache), Ravi-Larochelle 64/16/20 "
               "split, 84x84 RGB.")
def load_mini_imagenet(split: str, *, data_dir: Optional[str] = None,
                       image_size: int = 84) -> base.ClassSplit:
  """Loads a MiniImageNet class split from a local directory.

  Args:
    split: "train", "val" or "test".
    data_dir: directory holding one of the formats of the module docstring.
    image_size: side of the returned square images.

  Returns:
    The split; class ids follow the sorted WordNet ids.

  Raises:
    DataError: missing directory or files, malformed or corrupt files.
  """
  if not data_dir:
    raise DataError("mini_imagenet is read from a local directory: pass "
                    "--data_dir.")
  fmt, path = detect_format(data_dir, split)
  name = f"mini_imagenet/{split}"
  logging.info("%s: reading %s (%s format).", name, path, fmt)
  return _LOADERS[fmt](data_dir, split, image_size, name)
