"""`image_folder`: your own few-shot dataset, one folder of images per class.

Source: a local `--data_dir` (required). Each class is a folder of image files
with one of the extensions in `IMAGE_EXTENSIONS` (any case); other files,
hidden files and sub-folders inside a class folder are ignored.

Class split, in one of two layouts (if both are present, `splits.json` wins):

  1. split folders:                  2. one folder per class + splits.json:
       data_dir/train/<class>/*.png       data_dir/<class>/*.png
       data_dir/val/<class>/...           data_dir/splits.json:
       data_dir/test/<class>/...            {"train": ["cat", "dog", ...],
                                             "val": [...], "test": [...]}

  `val` may be absent (a missing `val/` folder or `"val"` key gives an empty
  split with zero classes); `train` and `test` must be present. A class that
  appears in two splits is an error. Class ids within a split follow the
  sorted folder names (layout 1) or the order of the JSON list (layout 2).

Format returned: uint8 `[N, H, W, 3]`. Every image is decoded with Pillow and
converted to RGB (greyscale is replicated to three channels, alpha is
dropped), then resized (bilinear, antialiased) to `image_size` x
`image_size`: 84 by default, `--image_size` changes it. Images are read anew
on each load; nothing is cached on disk.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLITS_FILE = "splits.json"


def _to_rgb_array(image, image_size: int) -> np.ndarray:
  """An open Pillow image as uint8 RGB `[image_size, image_size, 3]`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image.load()
  if image.mode in ("RGBA", "LA", "PA") or (
      image.mode == "P" and "transparency" in image.info):
    image = image.convert("RGBA")
  image = image.convert("RGB")
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.BILINEAR)
  return np.asarray(image, dtype=np.uint8)


def decode_image_file(path: str, image_size: int) -> np.ndarray:
  """Decodes one image file to uint8 RGB `[image_size, image_size, 3]`.

  Args:
    path: the image file (any format Pillow reads).
    image_size: side of the returned square image.

  Returns:
    The image, resized with Pillow's bilinear filter (antialiased when
    shrinking).

  Raises:
    DataError: the file is missing or cannot be decoded.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      array = _to_rgb_array(image, image_size)
  except FileNotFoundError as e:
    raise DataError(f"image file {path!r} does not exist.") from e
  except Exception as e:  # Pillow raises several types for a corrupt file
    raise DataError(
        f"cannot decode image file {path!r} ({type(e).__name__}: {e}); "
        f"replace or remove it.") from e
  return array


def decode_image_bytes(data, image_size: int, what: str) -> np.ndarray:
  """Decodes one encoded image (PNG, JPEG, ... bytes) like `decode_image_file`.

  Args:
    data: the encoded file's bytes (`bytes`, or a uint8 array of them).
    image_size: side of the returned square image.
    what: where the bytes came from (file and index), for messages.

  Raises:
    DataError: the bytes cannot be decoded as an image.
  """
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    if isinstance(data, np.ndarray):
      data = data.tobytes()
    with Image.open(io.BytesIO(data)) as image:
      return _to_rgb_array(image, image_size)
  except Exception as e:  # Pillow raises several types for corrupt bytes
    raise DataError(
        f"cannot decode {what} as an image ({type(e).__name__}: "
        f"{' '.join(str(e).split())}); the file is truncated or corrupt."
    ) from e


def _parallel_decode(decode, items: Sequence, image_size: int) -> np.ndarray:
  """`decode(item)` of every item in threads (Pillow releases the GIL)."""
  out = np.empty((len(items), image_size, image_size, 3), np.uint8)
  if not len(items):
    return out
  workers = min(32, (os.cpu_count() or 1) + 4)
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    for i, image in enumerate(pool.map(decode, items)):
      out[i] = image
  finally:  # on an error, do not decode the rest before reporting it
    pool.shutdown(wait=True, cancel_futures=True)
  return out


def read_image_files(paths: Sequence[str], image_size: int) -> np.ndarray:
  """Decodes image files in parallel threads (Pillow releases the GIL).

  Args:
    paths: the image files.
    image_size: side of the returned square images.

  Returns:
    uint8 `[len(paths), image_size, image_size, 3]`.

  Raises:
    DataError: naming the first file that is missing or cannot be decoded.
  """
  return _parallel_decode(lambda p: decode_image_file(p, image_size), paths,
                          image_size)


def read_image_bytes(items: Sequence, image_size: int,
                     what: str) -> np.ndarray:
  """Decodes encoded images held in memory, in parallel threads.

  Args:
    items: encoded images (`bytes` or uint8 arrays of the bytes).
    image_size: side of the returned square images.
    what: their source (a file), for messages; the item's index is added.

  Returns:
    uint8 `[len(items), image_size, image_size, 3]`.

  Raises:
    DataError: naming the first item that cannot be decoded.
  """
  return _parallel_decode(
      lambda iv: decode_image_bytes(iv[1], image_size, f"{what} item {iv[0]}"),
      list(enumerate(items)), image_size)


def _list_images(folder: str) -> List[str]:
  """The image files directly inside `folder`, sorted by name."""
  return sorted(
      os.path.join(folder, f) for f in os.listdir(folder)
      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
      and os.path.isfile(os.path.join(folder, f)))


def _list_classes(folder: str) -> List[str]:
  """The class folders directly inside `folder`, sorted by name."""
  return sorted(f for f in os.listdir(folder)
                if not f.startswith(".") and
                os.path.isdir(os.path.join(folder, f)))


def _layout_from_folders(data_dir: str) -> Dict[str, Tuple[str, List[str]]]:
  """Split -> (folder holding its class folders, class names), layout 1."""
  layout = {}
  for split in base.SPLITS:
    folder = os.path.join(data_dir, split)
    if not os.path.isdir(folder):
      if split == "val":
        layout[split] = (folder, [])
        continue
      raise DataError(
          f"image_folder: split folder {folder!r} does not exist. Give "
          f"data_dir/train/<class>/ and data_dir/test/<class>/ (val/ is "
          f"optional), or class folders data_dir/<class>/ with a "
          f"{SPLITS_FILE} listing the classes of each split.")
    layout[split] = (folder, _list_classes(folder))
  return layout


def _layout_from_json(data_dir: str) -> Dict[str, Tuple[str, List[str]]]:
  """Split -> (data_dir, class names), layout 2 (`splits.json`)."""
  path = os.path.join(data_dir, SPLITS_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      spec = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(
        f"image_folder: cannot read {path!r} as JSON ({e}).") from e
  allowed = ('{"train": [class folder names], "val": [...], '
             '"test": [...]} ("val" optional)')
  if not isinstance(spec, dict):
    raise DataError(f"image_folder: {path!r} must hold an object {allowed}, "
                    f"got a {type(spec).__name__}.")
  unknown = sorted(set(spec) - set(base.SPLITS))
  if unknown:
    raise DataError(f"image_folder: {path!r} has unknown keys {unknown}; "
                    f"allowed: {allowed}.")
  layout = {}
  for split in base.SPLITS:
    if split not in spec:
      if split == "val":
        layout[split] = (data_dir, [])
        continue
      raise DataError(f"image_folder: {path!r} has no {split!r} key; "
                      f"expected {allowed}.")
    classes = spec[split]
    if (not isinstance(classes, list) or
        not all(isinstance(c, str) and c for c in classes)):
      raise DataError(f"image_folder: {path!r}: {split!r} must be a list of "
                      f"class folder names, got {classes!r}.")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
      raise DataError(f"image_folder: {path!r}: {split!r} lists classes more "
                      f"than once: {repeated}.")
    layout[split] = (data_dir, list(classes))
  return layout


def _check_disjoint(layout: Dict[str, Tuple[str, List[str]]], source: str):
  """Raises `DataError` if a class is in two splits."""
  seen = {}
  for split in base.SPLITS:
    for c in layout[split][1]:
      if c in seen:
        raise DataError(
            f"image_folder: class {c!r} is in both the {seen[c]!r} and the "
            f"{split!r} split ({source}); a class may belong to one split "
            f"only.")
      seen[c] = split


@base.register("image_folder", default_image_size=84, channels=3,
               needs_data_dir=True,
               description="your own data: one folder of images per class, "
               "split by train/val/test folders or splits.json; RGB, 84x84 "
               "unless --image_size.")
def load_image_folder(split: str, *, data_dir: str,
                      image_size: int = 84) -> base.ClassSplit:
  """Loads a class split of a dataset stored as one folder per class.

  Args:
    split: "train", "val" or "test".
    data_dir: the dataset directory, in one of the layouts of the module
      docstring.
    image_size: side of the returned square images.

  Returns:
    The split, uint8 RGB images.

  Raises:
    DataError: missing directory, unknown layout, a class in two splits, a
      missing or empty class folder, an image that cannot be decoded.
  """
  if not data_dir or not os.path.isdir(data_dir):
    raise DataError(f"image_folder: data_dir {data_dir!r} is not a directory.")
  if os.path.isfile(os.path.join(data_dir, SPLITS_FILE)):
    layout = _layout_from_json(data_dir)
    source = os.path.join(data_dir, SPLITS_FILE)
  else:
    layout = _layout_from_folders(data_dir)
    source = f"split folders in {data_dir}"
  _check_disjoint(layout, source)
  folder, classes = layout[split]
  name = f"image_folder/{split}"
  if not classes:
    if split != "val":
      raise DataError(f"image_folder: the {split!r} split has no classes "
                      f"({source}).")
    return base.ClassSplit(
        images=np.zeros((0, image_size, image_size, 3), np.uint8),
        labels=np.zeros((0,), np.int32), class_names=(), name=name)
  paths, labels = [], []
  for label, c in enumerate(classes):
    class_dir = os.path.join(folder, c)
    if not os.path.isdir(class_dir):
      raise DataError(
          f"image_folder: class folder {class_dir!r} of the {split!r} split "
          f"does not exist ({source}).")
    files = _list_images(class_dir)
    if not files:
      raise DataError(
          f"image_folder: class folder {class_dir!r} holds no image files "
          f"(allowed extensions: {', '.join(IMAGE_EXTENSIONS)}).")
    paths.extend(files)
    labels.extend([label] * len(files))
  return base.ClassSplit(images=read_image_files(paths, image_size),
                         labels=np.asarray(labels, np.int32),
                         class_names=tuple(classes), name=name)
