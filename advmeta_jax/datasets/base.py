"""The in-memory form of one class split of a few-shot dataset, and its registry.

A few-shot dataset is split by *class*: meta-train, meta-validation and
meta-test classes never mix. Each split is loaded once into a `ClassSplit`,
a small container of NumPy arrays that the episode sampler
(`advmeta_jax.episodes`) moves to the accelerator and samples from on device.

Images are stored as uint8 `[N, H, W, C]` (0-255) to keep device memory small
(MiniImageNet's 38,400 meta-train images are 0.8 GB as uint8, 3.3 GB as
float32); the sampler converts the sampled episode to float32 in [0, 1].
Labels are contiguous class ids `0..num_classes-1` *within the split*.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from advmeta_jax.errors import DataError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class ClassSplit:
  """One class split of a dataset.

  Attributes:
    images: uint8 array `[N, H, W, C]`, values 0-255.
    labels: int32 array `[N]`, class ids in `0..num_classes-1`.
    class_names: one name per class id (e.g. a WordNet id or a folder name).
    name: a human-readable name such as `"digits/test"`, used in messages.
  """
  images: np.ndarray
  labels: np.ndarray
  class_names: Tuple[str, ...]
  name: str = ""

  def __post_init__(self):
    if self.images.ndim != 4:
      raise DataError(
          f"{self.name}: images must have shape [N, H, W, C], got "
          f"{self.images.shape}.")
    if self.images.dtype != np.uint8:
      raise DataError(
          f"{self.name}: images must be uint8 in 0..255, got {self.images.dtype}.")
    if self.labels.shape != (self.images.shape[0],):
      raise DataError(
          f"{self.name}: {self.images.shape[0]} images but labels of shape "
          f"{self.labels.shape}.")
    if len(self.labels) and (self.labels.min() < 0 or
                             self.labels.max() >= len(self.class_names)):
      raise DataError(
          f"{self.name}: labels must lie in 0..{len(self.class_names) - 1}, got "
          f"{self.labels.min()}..{self.labels.max()}.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def class_counts(self) -> np.ndarray:
    """Number of images of each class, `[num_classes]`."""
    return np.bincount(self.labels, minlength=self.num_classes)


def from_class_lists(images: np.ndarray, labels: Sequence, classes: Sequence,
                     name: str) -> ClassSplit:
  """Builds a `ClassSplit` of the images whose label is in `classes`.

  Args:
    images: uint8 `[N, H, W, C]` array of the whole dataset.
    labels: `[N]` labels of any hashable type (ints or names).
    classes: the labels that belong to this split, in the order that defines the
      split's class ids.
    name: name of the split, for messages.

  Returns:
    The split with labels renumbered to `0..len(classes)-1`.
  """
  labels = np.asarray(labels)
  classes = list(classes)
  index = {c: i for i, c in enumerate(classes)}
  keep = np.array([l in index for l in labels.tolist()], dtype=bool)
  missing = sorted(set(classes) - set(labels[keep].tolist()), key=str)
  if missing:
    raise DataError(
        f"{name}: no images found for {len(missing)} of the split's "
        f"{len(classes)} classes (first: {missing[:5]}).")
  new_labels = np.array([index[l] for l in labels[keep].tolist()], np.int32)
  return ClassSplit(images=np.ascontiguousarray(images[keep]),
                    labels=new_labels,
                    class_names=tuple(str(c) for c in classes), name=name)


# --- registry -------------------------------------------------------------

# A loader maps (split, options) to a ClassSplit. Options every loader accepts:
#   data_dir: Optional[str]   where the data lives (local formats) or the tfds dir
#   image_size: Optional[int] resize images to image_size x image_size
# and, for loaders registered with caches=True,
#   cache_dir: Optional[str]  where prepared caches of slow formats are kept
# Loaders ignore nothing silently: an option they cannot honour is a DataError.
Loader = Callable[..., ClassSplit]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  loader: Loader
  description: str
  default_image_size: int
  channels: int
  needs_data_dir: bool = False
  caches: bool = False


_REGISTRY: Dict[str, DatasetInfo] = {}


def register(name: str, *, description: str, default_image_size: int,
             channels: int, needs_data_dir: bool = False,
             caches: bool = False):
  """Decorator that registers a loader `(split, *, data_dir, image_size)`.

  A loader registered with `caches=True` also takes `cache_dir`.
  """
  def wrap(fn: Loader) -> Loader:
    _REGISTRY[name] = DatasetInfo(name, fn, description, default_image_size,
                                  channels, needs_data_dir, caches)
    return fn
  return wrap


def names() -> Tuple[str, ...]:
  """The registered dataset names."""
  return tuple(sorted(_REGISTRY))


def info(name: str) -> DatasetInfo:
  if name not in _REGISTRY:
    raise DataError(
        f"unknown dataset {name!r}; choose one of: {', '.join(names())}.")
  return _REGISTRY[name]


def load(name: str, split: str, *, data_dir: Optional[str] = None,
         image_size: Optional[int] = None,
         cache_dir: Optional[str] = None) -> ClassSplit:
  """Loads one class split of a registered dataset.

  Args:
    name: a registered dataset name (see `names()`).
    split: one of "train", "val", "test".
    data_dir: directory of the data; required by local formats.
    image_size: side of the square images returned; `None` keeps the dataset's
      default (`info(name).default_image_size`).
    cache_dir: where the prepared cache of a slow format is kept (see
      `advmeta_jax.datasets.cache`); `None` keeps it next to the data.
      Datasets without such formats (`info(name).caches` is False) do not use
      it.

  Returns:
    The `ClassSplit`.

  Raises:
    DataError: unknown name or split, missing or malformed data, a prepared
      cache that does not match its manifest.
  """
  ds = info(name)
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; choose one of {SPLITS}.")
  if ds.needs_data_dir and not data_dir:
    raise DataError(
        f"dataset {name!r} is read from a local directory: pass --data_dir.")
  if image_size is not None and image_size < 1:
    raise DataError(f"image_size must be a positive integer, got {image_size}.")
  options = dict(data_dir=data_dir,
                 image_size=image_size or ds.default_image_size)
  if ds.caches:
    options["cache_dir"] = cache_dir
  return ds.loader(split, **options)


def resize_uint8(images: np.ndarray, image_size: int) -> np.ndarray:
  """Resizes uint8 `[N, H, W, C]` images to `image_size`² (bilinear, antialiased).

  Uses Pillow when it is installed, else `jax.image.resize`. Returns uint8.
  """
  n, h, w, c = images.shape
  if (h, w) == (image_size, image_size):
    return images
  import jax  # local: keep `datasets` importable without initialising JAX
  out = []
  for start in range(0, n, 1024):
    chunk = np.asarray(images[start:start + 1024], np.float32)
    r = jax.image.resize(chunk, (chunk.shape[0], image_size, image_size, c),
                         method="linear", antialias=True)
    out.append(np.clip(np.rint(np.asarray(r)), 0, 255).astype(np.uint8))
  return np.concatenate(out) if out else np.zeros((0, image_size, image_size, c),
                                                  np.uint8)


def gather_by_class(parts: Sequence[Tuple[np.ndarray, np.ndarray]],
                    classes: Sequence, image_size: int,
                    name: str) -> ClassSplit:
  """The images of `classes` from several arrays, grouped by class.

  Only the selected images are copied (into one preallocated array), so the
  sources may be memory-mapped or lazily transposed views.

  Args:
    parts: `(images, labels)` pairs: uint8 `[N, H, W, C]` array-likes that
      support integer-array indexing, and `[N]` labels (names or ids).
    classes: the labels of the split, in the order of its class ids.
    image_size: side of the returned images (resized if it differs).
    name: the split's name, for messages.

  Returns:
    The split: class 0's images first (in part order, then source order),
    then class 1's, and so on.

  Raises:
    DataError: a class of `classes` has no image in `parts`.
  """
  index = [[np.flatnonzero(np.asarray(labels) == c) for _, labels in parts]
           for c in classes]
  counts = [sum(len(i) for i in per_part) for per_part in index]
  missing = [c for c, n in zip(classes, counts) if n == 0]
  if missing:
    raise DataError(
        f"{name}: no images found for {len(missing)} of the split's "
        f"{len(classes)} classes (first: {list(missing[:5])}).")
  channels = parts[0][0].shape[-1]
  out = np.empty((sum(counts), image_size, image_size, channels), np.uint8)
  labels = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
  pos = 0
  for per_part in index:
    for (images, _), idx in zip(parts, per_part):
      for start in range(0, len(idx), 1024):
        chunk = np.asarray(images[idx[start:start + 1024]])
        out[pos:pos + len(chunk)] = resize_uint8(chunk, image_size)
        pos += len(chunk)
  return ClassSplit(images=out, labels=labels,
                    class_names=tuple(str(c) for c in classes), name=name)


def reason(e: BaseException) -> str:
  """An exception as `Type: message` on one line, for a user's error message."""
  return f"{type(e).__name__}: {' '.join(str(e).split())}"


def read_npz_arrays(path: str, name: str, expected: Dict[str, str]
                    ) -> Dict[str, np.ndarray]:
  """The arrays `expected` (`{key: what it holds}`) of the npz archive at
  `path`, read without pickle; one `DataError` line naming the arrays the
  file holds when one is missing, or saying the file is truncated or
  corrupt when it cannot be read."""
  import zipfile  # pylint: disable=g-import-not-at-top
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [k for k in expected if k not in npz.files]
      if missing:
        raise DataError(f"{name}: {path!r} holds arrays {list(npz.files)}; "
                        "expected " + " and ".join(
                            f"{k!r} ({v})" for k, v in expected.items())
                        + ".")
      return {k: npz[k] for k in expected}
  except DataError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"{name}: cannot read {path!r} as an npz archive of "
                    f"plain arrays ({reason(e)}); the file is truncated "
                    f"or corrupt.") from e
