"""`cifar_fs` and `omniglot` read from a tensorflow-datasets data_dir.

One of the layouts of `cifar_fs` and `omniglot` (see those modules): the one
used when `--data_dir` is not given, or points to a tfds data_dir.

Both are read with `tfds.data_source` (random access to a dataset prepared in
the `array_record` file format), which needs neither TensorFlow nor network
access at load time. Nothing is downloaded, prepared or cached on disk here:
the dataset must already be prepared under `data_dir` (default: `$TFDS_DATA_DIR`
or `~/tensorflow_datasets`). Preparing it does need TensorFlow and network
access, once, on any machine:

    pip install tensorflow tensorflow-datasets
    tfds build cifar100 --data_dir=DIR --file_format=array_record
    tfds build omniglot --data_dir=DIR --file_format=array_record

then copy DIR over and pass `--data_dir=DIR`. (tfds' default `tfrecord` format
cannot be read without TensorFlow.)

cifar_fs (CIFAR-FS, Bertinetto et al., "Meta-learning with differentiable
closed-form solvers", ICLR 2019):
  Source: tfds `cifar100`; its `train` and `test` splits are pooled (60,000
  32x32 RGB images, 600 per fine label) and split by fine label name:
    train: 64 classes (38,400 images)   `CIFAR_FS_TRAIN_CLASSES`
    val:   16 classes ( 9,600 images)   `CIFAR_FS_VAL_CLASSES`
    test:  20 classes (12,000 images)   `CIFAR_FS_TEST_CLASSES`
  The table is the authors' split (the R2-D2 repository's
  `data/cifar100/splits/bertinetto/{train,val,test}.txt`), transcribed from its
  copy in torchmeta (`tristandeleu/pytorch-meta`,
  `torchmeta/datasets/assets/cifar100/cifar-fs/{train,val,test}.json`).
  Class ids within a split follow the order of the table. Images are 32x32x3
  by default.

omniglot (Lake et al., Science 2015; the few-shot setting of MAML):
  Source: tfds `omniglot`; 1,623 handwritten characters of 50 alphabets, 20
  images each, 105x105 (stored as RGB with three equal channels).
    train: tfds `train` (the 30 "background" alphabets, 964 characters) minus
           its last `OMNIGLOT_NUM_VAL_CLASSES` = 100 characters: 864 classes.
    val:   those last 100 background characters, in sorted tfds label order
           (tfds labels 864-963 of the real dataset).
    test:  tfds `test` (the 20 "evaluation" alphabets, 659 characters).
  A class is a character (tfds feature `label`); class names are tfds'
  `<alphabet>_<character index>`. Images are reduced to one channel, inverted
  so that strokes are bright (255) on a dark (0) background, as in MAML's
  Omniglot pipeline, and resized (bilinear, antialiased) to 28x28 by default.
  No rotation augmentation is applied.

Format returned: `base.ClassSplit` with uint8 `[N, H, W, C]` images.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

# The class tables live in `splits`; kept here under their old names.
CIFAR_FS_TRAIN_CLASSES = splits.CIFAR_FS_TRAIN_CLASSES
CIFAR_FS_VAL_CLASSES = splits.CIFAR_FS_VAL_CLASSES
CIFAR_FS_TEST_CLASSES = splits.CIFAR_FS_TEST_CLASSES
_CIFAR_FS_SPLITS = splits.CIFAR_FS_SPLITS
CIFAR100_FINE_LABELS = splits.CIFAR100_FINE_LABELS
OMNIGLOT_NUM_VAL_CLASSES = splits.OMNIGLOT_NUM_VAL_CLASSES

_READ_CHUNK = 1024  # records converted and resized at a time


def is_prepared(root: str, tfds_name: str) -> bool:
  """Whether `root` looks like a tfds data_dir holding `tfds_name`.

  True when `root/<tfds_name>/<version>/dataset_info.json` exists (tfds writes
  it when it prepares a dataset).
  """
  folder = os.path.join(root, tfds_name)
  if not os.path.isdir(folder):
    return False
  return any(os.path.isfile(os.path.join(folder, v, "dataset_info.json"))
             for v in os.listdir(folder))


def _tfds_dir(data_dir: Optional[str]) -> str:
  """The directory tfds searches: `data_dir`, else tfds' default."""
  if data_dir:
    return str(data_dir)
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), "tensorflow_datasets")


def _open_source(tfds_name: str, tfds_split: str, data_dir: Optional[str],
                 dataset: str):
  """Opens a prepared tfds split for random access, or raises `DataError`.

  Args:
    tfds_name: the tfds dataset name, e.g. "cifar100".
    tfds_split: the tfds split, e.g. "train".
    data_dir: the tfds data directory; `None` for tfds' default.
    dataset: our dataset name, for messages.

  Returns:
    The tfds data source (a sequence of example dicts).
  """
  if data_dir:
    data_dir = os.path.expanduser(str(data_dir))
  searched = _tfds_dir(data_dir)
  how = (f"Prepare it once on a machine with TensorFlow and network access "
         f"(`pip install tensorflow tensorflow-datasets; "
         f"tfds build {tfds_name} "
         f"--data_dir={searched} --file_format=array_record`) or pass "
         f"--data_dir pointing to a directory where it is prepared in the "
         f"array_record format.")
  if data_dir and not os.path.isdir(data_dir):
    raise DataError(
        f"{dataset}: the tfds data_dir {data_dir!r} does not exist. {how}")
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(
        f"{dataset}: reading tfds {tfds_name!r} needs the tensorflow-datasets "
        f"package (`pip install tensorflow-datasets`); importing it failed: "
        f"{e}") from e
  try:
    return tfds.data_source(tfds_name, split=tfds_split, data_dir=data_dir,
                            download=False)
  except Exception as e:  # tfds raises several types; all mean "not readable".
    folder = os.path.join(searched, tfds_name)
    if not os.path.isdir(folder):
      problem = f"it is not prepared there (no folder {folder!r})"
    else:
      problem = (f"{folder!r} exists but cannot be read without TensorFlow: "
                 f"it is incomplete or was prepared in tfds' default tfrecord "
                 f"format instead of array_record")
    reason = " ".join(str(e).split())[:400]
    raise DataError(
        f"{dataset}: tfds dataset {tfds_name!r} (split {tfds_split!r}) could "
        f"not be opened from {searched!r}: {problem}. {how} "
        f"(tfds said: {type(e).__name__}: {reason})") from e


def _read_images(source, *, keep: Callable[[int], bool],
                 to_image: Callable[[np.ndarray], np.ndarray], image_size: int,
                 what: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads the examples of a tfds data source whose label passes `keep`.

  Examples are read one at a time with `source[i]` (tfds' batched
  `__getitems__` decodes the same way and is not faster; its mock under
  `tfds.testing.mock_data` is broken), converted with `to_image` and resized in
  chunks of `_READ_CHUNK` so that the full-size images are never all in memory.

  Args:
    source: a tfds data source of dicts with "image" and "label".
    keep: predicate on the integer label.
    to_image: maps a decoded image to uint8 `[H, W, C]`.
    image_size: side of the returned square images.
    what: name of the source, for messages.

  Returns:
    `(images, labels)`: uint8 `[N, image_size, image_size, C]` and int64 `[N]`.
  """
  chunks, labels, pending = [], [], []

  def flush():
    if pending:
      chunks.append(base.resize_uint8(np.stack(pending), image_size))
      pending.clear()

  for i in range(len(source)):
    try:
      example = source[i]
      label = int(example["label"])
      if not keep(label):
        continue
      image = to_image(np.asarray(example["image"]))
    except DataError:
      raise
    except Exception as e:  # a corrupt record: name it instead of a traceback
      raise DataError(
          f"{what}: cannot read record {i} of {len(source)}: "
          f"{type(e).__name__}: {e}") from e
    pending.append(image)
    labels.append(label)
    if len(pending) == _READ_CHUNK:
      flush()
  flush()
  if not chunks:
    raise DataError(f"{what}: no images of the requested classes were found.")
  return np.concatenate(chunks), np.asarray(labels, np.int64)


def _check_image(image: np.ndarray, channels: int, what: str) -> np.ndarray:
  """Returns `image` if it is uint8 `[H, W, channels]`; else DataError."""
  if image.ndim != 3 or image.shape[-1] != channels or image.dtype != np.uint8:
    raise DataError(
        f"{what}: expected uint8 images of shape [H, W, {channels}], got "
        f"{image.dtype} {image.shape}.")
  return image


# --- CIFAR-FS -----------------------------------------------------------------


def _cifar100_names(source, what: str) -> Tuple[str, ...]:
  """The fine label names of the prepared dataset, in label-id order."""
  names = tuple(source.dataset_info.features["label"].names)
  if names == tuple(str(i) for i in range(len(names))):
    # No names stored (e.g. under tfds.testing.mock_data): CIFAR-100's order.
    return CIFAR100_FINE_LABELS
  if sorted(names) != sorted(CIFAR100_FINE_LABELS):
    unknown = sorted(set(names) - set(CIFAR100_FINE_LABELS))
    raise DataError(
        f"{what}: the prepared dataset's {len(names)} label names are not "
        f"CIFAR-100's 100 fine labels (unexpected: {unknown[:5]}).")
  return names


def load_cifar_fs(split: str, *, data_dir: Optional[str] = None,
                  image_size: int = 32) -> base.ClassSplit:
  """Loads a CIFAR-FS class split from a prepared tfds `cifar100`.

  Args:
    split: "train", "val" or "test".
    data_dir: tfds data directory; `None` for tfds' default.
    image_size: side of the returned images (32 keeps the originals).

  Returns:
    The split; class ids follow the order of `CIFAR_FS_*_CLASSES`.

  Raises:
    DataError: the dataset is not prepared under `data_dir` or is malformed.
  """
  classes = _CIFAR_FS_SPLITS[split]
  name = f"cifar_fs/{split}"
  images, labels = [], []
  for tfds_split in ("train", "test"):
    what = f"{name} (tfds cifar100/{tfds_split})"
    source = _open_source("cifar100", tfds_split, data_dir, "cifar_fs")
    names = _cifar100_names(source, what)
    wanted = {names.index(c) for c in classes}
    split_images, split_labels = _read_images(
        source, keep=wanted.__contains__,
        to_image=lambda x, what=what: _check_image(x, 3, what),
        image_size=image_size, what=what)
    images.append(split_images)
    labels.extend(names[l] for l in split_labels)
  logging.info("%s: %d images of %d classes.", name, len(labels), len(classes))
  return base.from_class_lists(np.concatenate(images), labels, classes, name)


# --- Omniglot -----------------------------------------------------------------


def omniglot_image(image: np.ndarray, what: str) -> np.ndarray:
  """One channel, strokes bright: `[105, 105, 3]` -> uint8 `[105, 105, 1]`."""
  if image.ndim == 3:
    image = image[..., 0]
  if image.ndim != 2:
    raise DataError(
        f"{what}: expected images of shape [H, W] or [H, W, C], got "
        f"{image.shape}.")
  image = image.astype(np.uint8)
  if image.max() <= 1:  # 1-bit PNGs decoded by Pillow come as 0/1
    image = image * np.uint8(255)
  return (255 - image)[..., None]


def _split_classes(labels: Sequence[int], split: str,
                   what: str) -> Tuple[int, ...]:
  """Omniglot's classes of `split` among the sorted labels of a tfds split."""
  present = sorted(set(int(l) for l in labels))
  if split == "test":
    return tuple(present)
  if len(present) <= OMNIGLOT_NUM_VAL_CLASSES:
    raise DataError(
        f"{what}: only {len(present)} characters found; meta-train and "
        f"meta-val need more than {OMNIGLOT_NUM_VAL_CLASSES} (the real "
        f"background set has 964).")
  if split == "val":
    return tuple(present[-OMNIGLOT_NUM_VAL_CLASSES:])
  return tuple(present[:-OMNIGLOT_NUM_VAL_CLASSES])


def load_omniglot(split: str, *, data_dir: Optional[str] = None,
                  image_size: int = 28) -> base.ClassSplit:
  """Loads an Omniglot class split from a prepared tfds `omniglot`.

  Args:
    split: "train", "val" or "test".
    data_dir: tfds data directory; `None` for tfds' default.
    image_size: side of the returned images (default 28, from 105).

  Returns:
    The split; class ids follow the sorted tfds character labels.

  Raises:
    DataError: the dataset is not prepared under `data_dir` or is malformed.
  """
  tfds_split = "test" if split == "test" else "train"
  name = f"omniglot/{split}"
  what = f"{name} (tfds omniglot/{tfds_split})"
  source = _open_source("omniglot", tfds_split, data_dir, "omniglot")
  images, labels = _read_images(
      source, keep=lambda label: True,
      to_image=lambda x: omniglot_image(x, what), image_size=image_size,
      what=what)
  classes = _split_classes(labels, split, what)
  label_feature = source.dataset_info.features["label"]
  class_names = tuple(label_feature.int2str(c) for c in classes)
  result = base.from_class_lists(images, labels, classes, name)
  logging.info("%s: %d images of %d classes.", name, len(result.labels),
               len(classes))
  return base.ClassSplit(images=result.images, labels=result.labels,
                         class_names=class_names, name=name)
