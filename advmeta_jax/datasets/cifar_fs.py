"""`cifar_fs`: CIFAR-FS read from the files people have, without TensorFlow.

CIFAR-FS (Bertinetto et al., "Meta-learning with differentiable closed-form
solvers", ICLR 2019) splits CIFAR-100's 100 fine classes 64 / 16 / 20 (the
tables of `advmeta_jax.datasets.splits`), all 600 images of each class (the
archives' `train` and `test` images pooled): 38,400 / 9,600 / 12,000 images,
32x32 RGB.

`--data_dir=DIR` may hold any of these layouts, in DIR or one folder below it;
the first found, in this order, is read:

  1. cifar100_binary      `cifar-100-binary/{train,test}.bin` +
                          `fine_label_names.txt` (the CIFAR-100 binary
                          archive, extracted); read directly (memory-mapped)
  2. torchmeta            `cifar100/data.hdf5` (groups `<coarse>/<fine>`, uint8
                          [600, 32, 32, 3] each) + `cifar100/cifar-fs/
                          {train,val,test}_labels.json` (torchmeta's
                          `CIFARFS`); read directly
  3. cifar100_binary_tgz  `cifar-100-binary.tar.gz`; cached
  4. bertinetto           `cifar100/data/<class>/*.png` +
                          `cifar100/splits/bertinetto/{train,val,test}.txt`
                          (the R2-D2 repository's and learn2learn's); cached
  5. cifar100_python      `cifar-100-python/{train,test,meta}` (pickles);
                          cached
  6. cifar100_python_tgz  `cifar-100-python.tar.gz` (pickles); cached
  7. metaoptnet           `CIFAR_FS_{train,val,test}.pickle` (MetaOptNet's:
                          `data` uint8 [N, 32, 32, 3], `labels` CIFAR-100
                          fine-label ids); cached
  8. tfds                 a tensorflow-datasets data_dir with `cifar100/`
                          prepared as array_record (`tfds_sources`)

Without `--data_dir`, tfds' default data_dir is read (as before). The
archives carry no split: the tables give it. Formats that carry one (split
files, per-split files) are checked against the tables (a warning lists any
difference; the files' classes are used). Class ids follow the table order;
a split's images are grouped by class, in file order within a class. "Cached"
formats are read once into the prepared cache (`advmeta_jax.datasets.cache`)
and memory-mapped afterwards. Pickles are read with `safe_pickle`, with a
warning.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import cifar_archives as archives
from advmeta_jax.datasets import image_folder
from advmeta_jax.datasets import safe_pickle
from advmeta_jax.datasets import sources
from advmeta_jax.datasets import splits
from advmeta_jax.datasets import tfds_sources
from advmeta_jax.errors import DataError

NAME = "cifar_fs"
BERTINETTO_SPLITS = ("splits", "bertinetto")
METAOPTNET_FILE = "CIFAR_FS_{split}.pickle"


def _split_name(split: str) -> str:
  return f"{NAME}/{split}"


def _finish(data: base.ClassSplit) -> base.ClassSplit:
  """Warns when the classes do not hold CIFAR-FS's 600 images each."""
  splits.check_counts(data.class_counts(), data.class_names,
                      splits.CIFAR_FS_IMAGES_PER_CLASS, data.name)
  return data


# --- the CIFAR-100 archives (no split in the files) ---------------------------


def _from_archive(parts: List[archives.Part], image_size: int,
                  wanted) -> Dict[str, base.ClassSplit]:
  """The `wanted` splits of the pooled `train` + `test` parts of an archive."""
  return {s: base.gather_by_class(parts, splits.CIFAR_FS_SPLITS[s],
                                  image_size, _split_name(s))
          for s in wanted}


def _archive_probe(folder, members, tar_name, want_tar):
  def probe(root: str, split: str) -> Optional[str]:
    del split
    extracted, tar = archives.find_archive(root, folder, members, tar_name)
    return tar if want_tar else extracted
  return probe


def _archive_reader(read_parts, all_splits: bool):
  """A reader of an archive: all splits in one pass (to cache them) or one."""
  def read(source: str, split: str, image_size: int, dataset: str):
    del dataset
    wanted = base.SPLITS if all_splits else (split,)
    return _from_archive(read_parts(source), image_size, wanted)
  return read


# --- Bertinetto's PNG folders --------------------------------------------------


def _bertinetto_root(root: str) -> Optional[str]:
  for folder in (root, os.path.join(root, "cifar100")):
    if (os.path.isdir(os.path.join(folder, "data")) and
        os.path.isfile(os.path.join(folder, *BERTINETTO_SPLITS, "train.txt"))):
      return folder
  return None


def _read_class_list(path: str, split: str) -> List[str]:
  try:
    with open(path, encoding="utf-8") as f:
      classes = [line.strip() for line in f if line.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{_split_name(split)}: cannot read the split file "
                    f"{path!r} ({e}).") from e
  if not classes:
    raise DataError(f"{_split_name(split)}: the split file {path!r} lists no "
                    f"classes.")
  return classes


def _read_bertinetto(source: str, split: str, image_size: int,
                     dataset: str) -> Dict[str, base.ClassSplit]:
  del split, dataset
  out = {}
  for s in base.SPLITS:
    path = os.path.join(source, *BERTINETTO_SPLITS, f"{s}.txt")
    classes = splits.ordered_classes(_read_class_list(path, s),
                                     splits.CIFAR_FS_SPLITS[s],
                                     f"{_split_name(s)} ({path})")
    files, labels = [], []
    for label, c in enumerate(classes):
      folder = os.path.join(source, "data", c)
      if not os.path.isdir(folder):
        raise DataError(f"{_split_name(s)}: {path!r} lists class {c!r} but "
                        f"its folder {folder!r} does not exist.")
      pngs = sorted(f for f in os.listdir(folder)
                    if f.lower().endswith(image_folder.IMAGE_EXTENSIONS))
      if not pngs:
        raise DataError(f"{_split_name(s)}: class folder {folder!r} holds no "
                        f"image files.")
      files.extend(os.path.join(folder, f) for f in pngs)
      labels.extend([label] * len(pngs))
    out[s] = base.ClassSplit(
        images=image_folder.read_image_files(files, image_size),
        labels=np.asarray(labels, np.int32), class_names=classes,
        name=_split_name(s))
  return out


# --- torchmeta's HDF5 ----------------------------------------------------------


def _torchmeta_root(root: str, split: str) -> Optional[str]:
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  return hdf5.torchmeta_cifar_root(root, split, "cifar-fs")


def _read_torchmeta(source: str, split: str, image_size: int,
                    dataset: str) -> Dict[str, base.ClassSplit]:
  """torchmeta's `data.hdf5` + `cifar-fs/<split>_labels.json`."""
  del dataset
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  return hdf5.read_torchmeta_cifar(
      source, split, image_size, subfolder="cifar-fs", name=_split_name(split),
      split_classes=splits.CIFAR_FS_SPLITS[split])


# --- MetaOptNet's pickles ------------------------------------------------------


def _read_metaoptnet(source: str, split: str, image_size: int,
                     dataset: str) -> Dict[str, base.ClassSplit]:
  """`CIFAR_FS_<split>.pickle`: `data` [N, 32, 32, 3], `labels` fine ids."""
  del dataset
  name = _split_name(split)
  data = safe_pickle.load(source, name)
  images = safe_pickle.get(data, "data", source, name, "uint8 [N, 32, 32, 3]")
  ids = safe_pickle.get(data, "labels", source, name,
                        "CIFAR-100 fine-label ids, one per image")
  if (not isinstance(images, np.ndarray) or images.dtype != np.uint8 or
      images.ndim != 4 or images.shape[-1] != 3):
    raise DataError(f"{name}: {source!r}: 'data' must be a uint8 array "
                    f"[N, 32, 32, 3], got "
                    f"{getattr(images, 'dtype', type(images).__name__)} "
                    f"{getattr(images, 'shape', '')}.")
  try:
    ids = np.asarray(ids, np.int64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise DataError(f"{name}: {source!r}: 'labels' must be integers "
                    f"({e}).") from e
  if ids.shape != (len(images),) or ids.min() < 0 or ids.max() > 99:
    raise DataError(f"{name}: {source!r}: 'labels' must hold {len(images)} "
                    f"CIFAR-100 fine-label ids in 0-99.")
  names = np.asarray(splits.CIFAR100_FINE_LABELS)[ids]
  classes = splits.ordered_classes(sorted(set(names.tolist())),
                                   splits.CIFAR_FS_SPLITS[split],
                                   f"{name} ({source})")
  return {split: base.gather_by_class([(images, names)], classes, image_size,
                                      name)}


# --- tfds ----------------------------------------------------------------------


def _tfds_probe(root: str, split: str) -> Optional[str]:
  del split
  return root if tfds_sources.is_prepared(root, "cifar100") else None


def _read_tfds(source, split, image_size, dataset):
  del dataset
  return {split: tfds_sources.load_cifar_fs(split, data_dir=source,
                                            image_size=image_size)}


LAYOUTS = (
    sources.Layout(
        "cifar100_binary",
        "cifar-100-binary/{train,test}.bin with fine_label_names.txt",
        _archive_probe(archives.BINARY_FOLDER, ("train.bin", "test.bin"),
                       "cifar-100-binary.tar.gz", False),
        _archive_reader(archives.read_binary_folder, False), cached=False),
    sources.Layout(
        "torchmeta",
        "cifar100/data.hdf5 with cifar100/cifar-fs/{split}_labels.json",
        lambda root, split: _torchmeta_root(root, split),
        _read_torchmeta, cached=False),
    sources.Layout(
        "cifar100_binary_tgz", "cifar-100-binary.tar.gz",
        _archive_probe(archives.BINARY_FOLDER, ("train.bin", "test.bin"),
                       "cifar-100-binary.tar.gz", True),
        _archive_reader(archives.read_binary_tar, True), cached=True),
    sources.Layout(
        "bertinetto",
        "cifar100/data/<class>/*.png with "
        "cifar100/splits/bertinetto/{train,val,test}.txt",
        lambda root, split: _bertinetto_root(root),
        _read_bertinetto, cached=True),
    sources.Layout(
        "cifar100_python", "cifar-100-python/{train,test,meta}",
        _archive_probe(archives.PYTHON_FOLDER, ("train", "test", "meta"),
                       "cifar-100-python.tar.gz", False),
        _archive_reader(archives.read_python_folder, True), cached=True),
    sources.Layout(
        "cifar100_python_tgz", "cifar-100-python.tar.gz",
        _archive_probe(archives.PYTHON_FOLDER, ("train", "test", "meta"),
                       "cifar-100-python.tar.gz", True),
        _archive_reader(archives.read_python_tar, True), cached=True),
    sources.Layout(
        "metaoptnet", "CIFAR_FS_{train,val,test}.pickle",
        lambda root, split: sources.is_file(
            root, METAOPTNET_FILE.format(split=split)),
        _read_metaoptnet, cached=True),
    sources.Layout(
        "tfds", "a tensorflow-datasets data_dir with cifar100/<version>/ "
        "prepared as array_record (`tfds build cifar100 "
        "--file_format=array_record`)",
        _tfds_probe, _read_tfds, cached=False),
)


@base.register(NAME, default_image_size=32, channels=3, caches=True,
               description="CIFAR-FS: CIFAR-100 (binary or python archive, "
               "Bertinetto's PNGs, torchmeta's HDF5, MetaOptNet's pickles or "
               "tfds), Bertinetto et al. 64/16/20 class split, 32x32 RGB.")
def load_cifar_fs(split: str, *, data_dir: Optional[str] = None,
                  image_size: int = 32,
                  cache_dir: Optional[str] = None) -> base.ClassSplit:
  """Loads a CIFAR-FS class split from the layout found in `data_dir`.

  Args:
    split: "train", "val" or "test".
    data_dir: a folder holding one of the layouts of the module docstring (in
      it or one level below); `None` reads tfds' default data_dir.
    image_size: side of the returned images (32 keeps the originals).
    cache_dir: where the prepared cache of a slow layout is kept; `None`:
      next to the data.

  Returns:
    The split; class ids follow `splits.CIFAR_FS_*_CLASSES`.

  Raises:
    DataError: no known layout, a truncated or corrupt file, a cache that does
      not match its manifest.
  """
  if data_dir is None:
    return _finish(tfds_sources.load_cifar_fs(split, data_dir=None,
                                              image_size=image_size))
  found = sources.find(data_dir, split, LAYOUTS, NAME)
  return _finish(sources.load(found, split, dataset=NAME,
                              image_size=image_size, cache_dir=cache_dir))
