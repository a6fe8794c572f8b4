"""`mini_imagenet`: MiniImageNet read from a local directory.

Source: MiniImageNet (Vinyals et al. 2016) with the class split of Ravi &
Larochelle ("Optimization as a model for few-shot learning", ICLR 2017):
100 ImageNet classes, 600 images each,
  train: 64 classes (38,400 images)
  val:   16 classes ( 9,600 images)
  test:  20 classes (12,000 images).
Nothing is downloaded: pass `--data_dir` holding the files in one of the
formats people have, in it or one folder below it. Each format carries the
split (one file per split), so the split membership is read from the files and
checked against Ravi & Larochelle's lists (`splits.MINI_IMAGENET_*_CLASSES`;
a difference is a warning); class ids within a split follow the sorted class
names (WordNet ids).

Formats, auto-detected per split in this order of preference:
  1. csv: Ravi & Larochelle's own format:
       {train,val,test}.csv   header `filename,label` (label: WordNet id), one
                              row per image
       images/<filename>      JPEG/PNG, decoded with Pillow;  cached
  2. npz: mini-imagenet-{train,val,test}.npz with uint8 images [N, H, W, 3]
       under `images` (or `image_data`, `features`) and labels [N] (WordNet
       id strings or integers) under `labels` (or `targets`); loaded with
       `allow_pickle=False`; read directly.
  3. torchmeta: miniimagenet/{train,val,test}_data.hdf5 (group `datasets`, one
       uint8 [600, 84, 84, 3] dataset per WordNet id) with
       {train,val,test}_labels.json (the sorted WordNet ids), torchmeta's
       `MiniImagenet`; read directly.
  4. learn2learn: mini-imagenet-cache-{train,val,test}.pkl, a dict with
       `image_data` (uint8 [N, 84, 84, 3]) and `class_dict` ({WordNet id: list
       of image indices}), learn2learn's and few-shot-ssl's; cached.
  5. metaoptnet: miniImageNet_category_split_{train_phase_train,val,test}
       .pickle (MetaOptNet's and Gidaris & Komodakis'), dicts with `data`
       (uint8 [N, 84, 84, 3]), `labels` (ints) and `catname2label` ({WordNet
       id: int}); cached.
Pickles are read with `safe_pickle` (NumPy arrays and plain containers only,
with a warning that pickles can run code). "Cached" formats are read once into
the prepared cache (`advmeta_jax.datasets.cache`), memory-mapped afterwards.

Memory: every reader builds the split's images once (no second copy), at
84x84x3 bytes each: 813 MB for the 38,400 meta-train images.

Format returned: uint8 `[N, image_size, image_size, 3]` (default 84);
greyscale is replicated to RGB and alpha dropped, other sizes are resized
(bilinear, antialiased).
"""

from __future__ import annotations

import csv
import os
import zipfile
from typing import Dict, Optional

from absl import logging
import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import image_folder
from advmeta_jax.datasets import safe_pickle
from advmeta_jax.datasets import sources
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

NAME = "mini_imagenet"

NPZ_IMAGE_KEYS = ("images", "image_data", "features")
NPZ_LABEL_KEYS = ("labels", "targets")
CSV_HEADER = ("filename", "label")


def _csv_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"{split}.csv")


def _npz_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"mini-imagenet-{split}.npz")


def _pkl_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"mini-imagenet-cache-{split}.pkl")


METAOPTNET_FILES = {"train": "train_phase_train", "val": "val",
                    "test": "test"}


def _metaoptnet_path(data_dir: str, split: str) -> str:
  return os.path.join(
      data_dir,
      f"miniImageNet_category_split_{METAOPTNET_FILES[split]}.pickle")


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
  """Format 4: `mini-imagenet-cache-<split>.pkl` (pickle)."""
  path = _pkl_path(data_dir, split)
  data = safe_pickle.load(path, name)
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


def _load_torchmeta(folder: str, split: str, image_size: int,
                    name: str) -> base.ClassSplit:
  """Format 3: torchmeta's `<split>_data.hdf5` + `<split>_labels.json`."""
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  labels_path = os.path.join(folder, f"{split}_labels.json")
  wnids = hdf5.read_json_list(labels_path, name, "WordNet ids")
  if not all(isinstance(w, str) and w for w in wnids) or len(set(wnids)) != len(
      wnids):
    raise DataError(f"{name}: {labels_path!r} must list distinct WordNet id "
                    f"strings.")
  wnids = sorted(wnids)
  images, counts = hdf5.read_datasets(
      os.path.join(folder, f"{split}_data.hdf5"),
      [f"datasets/{w}" for w in wnids], image_size, name)
  return base.ClassSplit(
      images=images,
      labels=np.repeat(np.arange(len(wnids), dtype=np.int32), counts),
      class_names=tuple(wnids), name=name)


def _load_metaoptnet(data_dir: str, split: str, image_size: int,
                     name: str) -> base.ClassSplit:
  """Format 5: MetaOptNet's `miniImageNet_category_split_*.pickle`."""
  path = _metaoptnet_path(data_dir, split)
  data = safe_pickle.load(path, name)
  images = safe_pickle.get(data, "data", path, name, "uint8 [N, 84, 84, 3]")
  ids = safe_pickle.get(data, "labels", path, name, "an int per image")
  names = safe_pickle.get(data, "catname2label", path, name,
                          "{WordNet id: int}")
  images = to_rgb_uint8(images, image_size, f"{name}: {path}['data']")
  if not isinstance(names, dict) or not names:
    raise DataError(f"{name}: {path}['catname2label'] must be a non-empty "
                    f"dict {{WordNet id: label}}.")
  try:
    ids = np.asarray(ids, np.int64).reshape(-1)
    wnid_of = {int(v): str(k) for k, v in names.items()}
  except (TypeError, ValueError) as e:
    raise DataError(f"{name}: {path}: 'labels' and the values of "
                    f"'catname2label' must be integers ({e}).") from e
  if ids.shape != (images.shape[0],):
    raise DataError(f"{name}: {path}['labels'] must hold one label per image "
                    f"({images.shape[0]}), got {ids.shape[0]}.")
  unknown = sorted(set(ids.tolist()) - set(wnid_of))
  if unknown:
    raise DataError(f"{name}: {path}['labels'] holds ids {unknown[:5]} that "
                    f"'catname2label' does not name.")
  present = sorted(set(ids.tolist()))
  wnids = sorted(wnid_of[i] for i in present)
  lookup = np.zeros(max(present) + 1, np.int32)
  for i in present:
    lookup[i] = wnids.index(wnid_of[i])
  return base.ClassSplit(images=images, labels=lookup[ids],
                         class_names=tuple(wnids), name=name)


def _reader(load_fn, folder_of=os.path.dirname):
  def read(source: str, split: str, image_size: int,
           dataset: str) -> Dict[str, base.ClassSplit]:
    del dataset
    return {split: load_fn(folder_of(source), split, image_size,
                           f"{NAME}/{split}")}
  return read


def _torchmeta_probe(root: str, split: str) -> Optional[str]:
  for folder in (root, os.path.join(root, "miniimagenet")):
    if (os.path.isfile(os.path.join(folder, f"{split}_data.hdf5")) and
        os.path.isfile(os.path.join(folder, f"{split}_labels.json"))):
      return folder
  return None


LAYOUTS = (
    sources.Layout("csv", "{split}.csv with images/",
                   lambda root, split: sources.is_file(_csv_path(root, split)),
                   _reader(_load_csv), cached=True),
    sources.Layout("npz", "mini-imagenet-{split}.npz",
                   lambda root, split: sources.is_file(_npz_path(root, split)),
                   _reader(_load_npz), cached=False),
    sources.Layout("torchmeta", "miniimagenet/{split}_data.hdf5 with "
                   "{split}_labels.json", _torchmeta_probe,
                   _reader(_load_torchmeta, folder_of=lambda s: s),
                   cached=False),
    sources.Layout("learn2learn", "mini-imagenet-cache-{split}.pkl",
                   lambda root, split: sources.is_file(_pkl_path(root, split)),
                   _reader(_load_pickle), cached=True),
    sources.Layout("metaoptnet", "miniImageNet_category_split_"
                   "{train_phase_train,val,test}.pickle",
                   lambda root, split: sources.is_file(
                       _metaoptnet_path(root, split)),
                   _reader(_load_metaoptnet), cached=True),
)


def _finish(data: base.ClassSplit, split: str) -> base.ClassSplit:
  """Warns when the split's classes or counts differ from the published."""
  splits.ordered_classes(data.class_names, splits.MINI_IMAGENET_SPLITS[split],
                         data.name)
  splits.check_counts(data.class_counts(), data.class_names,
                      splits.MINI_IMAGENET_IMAGES_PER_CLASS, data.name)
  return data


@base.register(NAME, default_image_size=84, channels=3,
               needs_data_dir=True, caches=True,
               description="MiniImageNet from a local --data_dir (CSV + "
               "images, npz, torchmeta HDF5, learn2learn or MetaOptNet "
               "pickles), Ravi-Larochelle 64/16/20 split, 84x84 RGB.")
def load_mini_imagenet(split: str, *, data_dir: Optional[str] = None,
                       image_size: int = 84,
                       cache_dir: Optional[str] = None) -> base.ClassSplit:
  """Loads a MiniImageNet class split from a local directory.

  Args:
    split: "train", "val" or "test".
    data_dir: directory holding one of the formats of the module docstring.
    image_size: side of the square images returned.
    cache_dir: where the prepared cache of a slow format is kept; `None`:
      next to the data.

  Returns:
    The split; class ids follow the sorted WordNet ids.

  Raises:
    DataError: missing directory or files, malformed or corrupt files, a
      cache that does not match its manifest.
  """
  if not data_dir:
    raise DataError("mini_imagenet is read from a local directory: pass "
                    "--data_dir.")
  found = sources.find(data_dir, split, LAYOUTS, NAME)
  return _finish(sources.load(found, split, dataset=NAME,
                              image_size=image_size, cache_dir=cache_dir),
                 split)
