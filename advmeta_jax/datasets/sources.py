"""Finding a dataset's format in `--data_dir`, and reading it through the cache.

A dataset module lists its `Layout`s (one per on-disk format, in order of
preference). `find` looks for each in `data_dir`, then in each of its
sub-folders (so that both the folder of the data and the folder above it
work), and returns the first one present for the split. `load` reads it: a
fast format directly, a slow one (`Layout.cached`) through the prepared cache
of `advmeta_jax.datasets.cache`, built on the first read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging

from advmeta_jax.datasets import base
from advmeta_jax.datasets import cache
from advmeta_jax.errors import DataError

# (source, split, image_size, dataset) -> the splits read: at least `split`,
# plus any other split the same source holds (read in the same pass).
Reader = Callable[[str, str, int, str], Dict[str, base.ClassSplit]]


@dataclasses.dataclass(frozen=True)
class Layout:
  """One on-disk format of a dataset.

  Attributes:
    name: short name, used in messages and cache folder names.
    looks_for: what `find` looks for, in words (file and folder names);
      "{split}" stands for the split's name.
    probe: `(root, split) -> source or None`: the file or folder holding
      `split` directly inside `root`, if this format is there.
    read: reads a source (see `Reader`).
    cached: whether the format is slow to read and gets a prepared cache.
  """
  name: str
  looks_for: str
  probe: Callable[[str, str], Optional[str]]
  read: Reader
  cached: bool


@dataclasses.dataclass(frozen=True)
class Found:
  layout: Layout
  root: str
  source: str


def is_file(root: str, *names: str) -> Optional[str]:
  """`root/names...` if it is a file, else `None`."""
  path = os.path.join(root, *names)
  return path if os.path.isfile(path) else None


def is_dir(root: str, *names: str) -> Optional[str]:
  """`root/names...` if it is a folder, else `None`."""
  path = os.path.join(root, *names)
  return path if os.path.isdir(path) else None


def _sub_folders(data_dir: str) -> List[str]:
  return [os.path.join(data_dir, d) for d in sorted(os.listdir(data_dir))
          if not d.startswith(".") and d != cache.CACHE_FOLDER and
          os.path.isdir(os.path.join(data_dir, d))]


def listing(folder: str, limit: int = 12) -> str:
  """The first entries of a folder, for messages (folders end with '/')."""
  try:
    names = sorted(os.listdir(folder))
  except OSError as e:
    return f"(cannot list it: {e})"
  if not names:
    return "nothing (it is empty)"
  shown = [n + ("/" if os.path.isdir(os.path.join(folder, n)) else "")
           for n in names[:limit]]
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(shown) + more


def check_data_dir(data_dir: str, dataset: str) -> str:
  """`data_dir` expanded; DataError if it is not a folder."""
  path = os.path.expanduser(str(data_dir))
  if not os.path.isdir(path):
    raise DataError(f"{dataset}: data_dir {str(data_dir)!r} is not a "
                    f"directory.")
  return path


def find(data_dir: str, split: str, layouts: Sequence[Layout],
         dataset: str) -> Found:
  """The first of `layouts` that holds `split` in `data_dir` or a sub-folder.

  Args:
    data_dir: the folder the user gave.
    split: "train", "val" or "test".
    layouts: the dataset's formats, in order of preference.
    dataset: the dataset name, for messages.

  Returns:
    What was found and where.

  Raises:
    DataError: `data_dir` is not a folder, or holds none of the layouts; the
      message lists what was looked for and what the folder holds.
  """
  data_dir = check_data_dir(data_dir, dataset)
  for root in [data_dir] + _sub_folders(data_dir):
    for layout in layouts:
      source = layout.probe(root, split)
      if source:
        return Found(layout, root, source)
  looked = "; ".join(
      f"({i}) {layout.name}: {layout.looks_for.replace('{split}', split)}"
      for i, layout in enumerate(layouts, start=1))
  raise DataError(
      f"{dataset}/{split}: no known layout in {data_dir!r} or its "
      f"sub-folders. Looked for {looked}. The directory holds: "
      f"{listing(data_dir)}.")


def _header(found: Found, dataset: str, image_size: int) -> Dict[str, object]:
  return {"dataset": dataset, "format": found.layout.name,
          "image_size": image_size, "source": os.path.abspath(found.source)}


def cache_folder(found: Found, dataset: str, image_size: int,
                 cache_dir: Optional[str]) -> Optional[str]:
  """The cache folder of what was found; `None` for a format read directly."""
  if not found.layout.cached:
    return None
  return cache.cache_path(dataset=dataset, fmt=found.layout.name,
                          image_size=image_size, root=found.root,
                          source=found.source, cache_dir=cache_dir)


def load(found: Found, split: str, *, dataset: str, image_size: int,
         cache_dir: Optional[str]) -> base.ClassSplit:
  """Reads `split` from what `find` found, through the cache if it is slow.

  A cached split is memory-mapped. On a first read, every split the source
  holds is read in one pass, written to the cache, and `split` is returned
  from the cache. If the cache folder cannot be written, a warning says so
  and the split is returned from memory.

  Raises:
    DataError: malformed source files, or a cache that does not match its
      manifest.
  """
  folder = cache_folder(found, dataset, image_size, cache_dir)
  if folder is None:
    return found.layout.read(found.source, split, image_size, dataset)[split]
  header = _header(found, dataset, image_size)
  expect = {k: header[k] for k in ("dataset", "format", "image_size")}
  cached = cache.read_split(folder, split, dataset=dataset, expect=expect)
  if cached is not None:
    logging.info("%s/%s: read the prepared cache %s.", dataset, split, folder)
    return cached
  logging.info("%s/%s: reading %s (%s), once; later runs read the cache %s.",
               dataset, split, found.source, found.layout.name, folder)
  splits = found.layout.read(found.source, split, image_size, dataset)
  try:
    cache.write_splits(folder, splits, header=header)
  except OSError as e:
    logging.warning(
        "%s: cannot write the cache %s (%s); the data will be read from %s "
        "again next time. Pass --cache_dir=A_WRITABLE_FOLDER to keep it.",
        dataset, folder, e, found.source)
    return splits[split]
  del splits
  return cache.read_split(folder, split, dataset=dataset, expect=expect)
