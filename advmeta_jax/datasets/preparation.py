"""Preparing a dataset ahead of time, and measuring what loading it costs.

`prepare` finds the layout of each split in `data_dir`, builds the prepared
cache of a slow format (or checks an existing one) and reports what it found;
`launch.prepare_data` prints the report. `measure` loads one split in a fresh
process and reports its wall time and peak resident memory, the figures of
docs/datasets.md.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import cache
from advmeta_jax.datasets import cifar_fs
from advmeta_jax.datasets import cub
from advmeta_jax.datasets import fc100
from advmeta_jax.datasets import mini_imagenet
from advmeta_jax.datasets import omniglot
from advmeta_jax.datasets import sources
from advmeta_jax.datasets import tiered_imagenet
from advmeta_jax.errors import DataError

LAYOUTS = {"cifar_fs": cifar_fs.LAYOUTS, "mini_imagenet": mini_imagenet.LAYOUTS,
           "omniglot": omniglot.LAYOUTS, "fc100": fc100.LAYOUTS,
           "tiered_imagenet": tiered_imagenet.LAYOUTS, "cub": cub.LAYOUTS}


@dataclasses.dataclass(frozen=True)
class SplitReport:
  """What `prepare` found for one split."""
  split: str
  layout: str
  source: str
  cache: Optional[str]       # None: the format is read directly
  built: bool                # the cache of this split was written now
  num_classes: int
  num_images: int
  per_class: Tuple[int, int]  # fewest, most images of a class
  image_shape: Tuple[int, int, int]
  seconds: float


def _layouts(name: str):
  if name not in LAYOUTS:
    raise DataError(f"prepare_data reads the local formats of "
                    f"{', '.join(sorted(LAYOUTS))}; got {name!r}.")
  return LAYOUTS[name]


def _has_split(folder: Optional[str], split: str, name: str) -> bool:
  if folder is None:
    return False
  manifest = cache.read_manifest(folder, name)
  return bool(manifest) and split in manifest["splits"]


def prepare(name: str, *, data_dir: str, cache_dir: Optional[str] = None,
            image_size: Optional[int] = None,
            rebuild: bool = False) -> List[SplitReport]:
  """Reads every split of `name` once, building the cache where it is slow.

  Args:
    name: a key of `LAYOUTS` (a dataset read from local files).
    data_dir: the folder holding one of the dataset's layouts.
    cache_dir: where caches are kept; `None`: next to the data.
    image_size: side of the images (default: the dataset's).
    rebuild: delete the split's existing cache first and build it anew.

  Returns:
    One report per split.

  Raises:
    DataError: no known layout for a split, malformed files, a cache that
      does not match its manifest (without `rebuild`).
  """
  layouts = _layouts(name)
  if not data_dir:
    raise DataError("prepare_data needs --data_dir, the folder of the data.")
  size = image_size or base.info(name).default_image_size
  reports, removed = [], set()
  for split in base.SPLITS:
    found = sources.find(data_dir, split, layouts, name)
    folder = sources.cache_folder(found, name, size, cache_dir)
    if rebuild and folder and folder not in removed:
      cache.remove(folder)
      removed.add(folder)
    had = _has_split(folder, split, name)
    start = time.perf_counter()
    data = base.load(name, split, data_dir=data_dir, image_size=size,
                     cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    counts = data.class_counts()
    reports.append(SplitReport(
        split=split, layout=found.layout.name, source=found.source,
        cache=folder, built=folder is not None and not had,
        num_classes=data.num_classes, num_images=int(len(data.labels)),
        per_class=(int(counts.min()), int(counts.max())),
        image_shape=data.image_shape, seconds=seconds))
  return reports


def format_report(name: str, reports: List[SplitReport]) -> str:
  """The lines `launch.prepare_data` prints."""
  lines = []
  for r in reports:
    low, high = r.per_class
    per = f"{low}" if low == high else f"{low}-{high}"
    if r.cache is None:
      how = "read directly (fast format, no cache)"
    else:
      how = f"cache {'built' if r.built else 'verified'}: {r.cache}"
    lines.append(
        f"{name}/{r.split}: {r.layout} at {r.source}; {r.num_classes} classes, "
        f"{r.num_images:,} images ({per} per class), "
        f"{'x'.join(map(str, r.image_shape))} uint8, {r.seconds:.2f} s; {how}")
  return "\n".join(lines)


# --- measurement ------------------------------------------------------------


def _peak_mb() -> float:
  """This process's peak resident memory, MB.

  Linux's `VmHWM` (the high-water mark of this program's own address space);
  `ru_maxrss` would also count the parent's memory at the fork that started a
  spawned process, which Linux carries over `exec`.
  """
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure_child(name: str, split: str, data_dir: str,
                   cache_dir: Optional[str], image_size: Optional[int]):
  """Runs in a fresh process: load, then read every pixel once."""
  baseline = _peak_mb()
  start = time.perf_counter()
  data = base.load(name, split, data_dir=data_dir, image_size=image_size,
                   cache_dir=cache_dir)
  seconds = time.perf_counter() - start
  loaded = _peak_mb()
  checksum = int(np.sum(data.images, dtype=np.uint64))
  return {"seconds": seconds, "baseline_mb": baseline, "load_peak_mb": loaded,
          "touched_peak_mb": _peak_mb(), "checksum": checksum,
          "num_images": int(len(data.labels)),
          "image_mb": data.images.nbytes / 2**20}


def measure(name: str, split: str, *, data_dir: str,
            cache_dir: Optional[str] = None,
            image_size: Optional[int] = None) -> Dict[str, float]:
  """Loads one split in a fresh (spawned) process and reports its cost.

  Returns:
    `seconds` (wall time of `datasets.load`), `baseline_mb` (peak RSS of the
    fresh process before loading: Python, NumPy, advmeta), `load_peak_mb`
    (peak RSS once `load` returned), `touched_peak_mb` (peak RSS after every
    pixel was read once, as moving the split to a device does: memory-mapped
    pages count from then on), `image_mb` (the split's uint8 pixels),
    `num_images` and `checksum` (the sum of all pixels).
  """
  context = multiprocessing.get_context("spawn")
  with context.Pool(1) as pool:
    return pool.apply(_measure_child,
                      (name, split, os.path.abspath(data_dir), cache_dir,
                       image_size))


def measure_table(name: str, *, data_dir: str, cache_dir: Optional[str] = None,
                  image_size: Optional[int] = None,
                  rebuild: bool = True) -> str:
  """Measures every split twice and returns a Markdown table of the figures.

  With `rebuild`, the caches are deleted first, so that the first load of a
  slow format includes building its cache (for a source holding several
  splits, the first split's load builds them all). The second load of each
  split reads what the first left (the cache, or the fast format again).
  """
  layouts = _layouts(name)
  size = image_size or base.info(name).default_image_size
  found = {s: sources.find(data_dir, s, layouts, name) for s in base.SPLITS}
  if rebuild:
    for folder in {sources.cache_folder(f, name, size, cache_dir)
                   for f in found.values()} - {None}:
      cache.remove(folder)
  rows = ["| split | format | images | pixels MB | load | s | peak RSS MB "
          "(baseline / after load / after reading every pixel) |",
          "|---|---|---|---|---|---|---|"]
  for split in base.SPLITS:
    folder = sources.cache_folder(found[split], name, size, cache_dir)
    for run in ("first", "second"):
      builds = folder is not None and not _has_split(folder, split, name)
      m = measure(name, split, data_dir=data_dir, cache_dir=cache_dir,
                  image_size=size)
      what = ("builds cache" if builds else "cache" if folder else "direct")
      rows.append(
          f"| {split} | {found[split].layout.name} | {m['num_images']:,} | "
          f"{m['image_mb']:.0f} | {run} ({what}) | {m['seconds']:.2f} | "
          f"{m['baseline_mb']:.0f} / {m['load_peak_mb']:.0f} / "
          f"{m['touched_peak_mb']:.0f} |")
  return "\n".join(rows)
