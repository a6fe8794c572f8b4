"""`fc100`: FC100 (Fewshot-CIFAR100) read from the CIFAR-100 files people have.

FC100 (Oreshkin et al., "TADAM: Task dependent adaptive metric for improved
few-shot learning", NeurIPS 2018) splits CIFAR-100 by superclass, so that no
superclass has fine classes in two splits: 12 / 4 / 4 superclasses, 60 / 20 /
20 fine classes, all 600 images of each class (the archives' `train` and
`test` images pooled): 36,000 / 12,000 / 12,000 images, 32x32 RGB.

The superclasses of each split are those of TADAM's own
`datasets/create_dataset_cifar100.py` (github.com/ServiceNow/TADAM, its
`class_split` of coarse label ids), which are also torchmeta's
`torchmeta/datasets/assets/cifar100/fc100/{train,val,test}.json`
(github.com/tristandeleu/pytorch-meta); the tables are
`splits.FC100_SUPERCLASSES` and `splits.FC100_SPLITS`. Class ids follow
`splits.FC100_SPLITS`: superclass by superclass, fine classes sorted within
each; a split's images are grouped by class, in file order within a class.

`--data_dir=DIR` may hold any of these layouts, in DIR or one folder below it;
the first found, in this order, is read:

  1. cifar100_binary      `cifar-100-binary/{train,test}.bin` +
                          `fine_label_names.txt`; read directly
                          (memory-mapped)
  2. torchmeta            `cifar100/data.hdf5` (groups `<coarse>/<fine>`) +
                          `cifar100/fc100/{train,val,test}_labels.json`
                          ([coarse, fine] pairs; torchmeta's `FC100`); read
                          directly
  3. tadam_npz            `few-shot-{train,val,test}.npz` (TADAM's
                          `create_dataset_cifar100.py`: `features` uint8
                          [N, 32, 32, 3], `targets` CIFAR-100 fine-label ids);
                          read directly, `allow_pickle=False`
  4. cifar100_binary_tgz  `cifar-100-binary.tar.gz`; cached
  5. cifar100_python      `cifar-100-python/{train,test,meta}` (pickles);
                          cached
  6. cifar100_python_tgz  `cifar-100-python.tar.gz` (pickles); cached

The archives carry no split: the tables give it. Formats that carry one
(torchmeta's label files, TADAM's per-split files) are checked against the
tables (a warning lists any difference; the files' classes are used).
"Cached" formats are read once into the prepared cache
(`advmeta_jax.datasets.cache`) and memory-mapped afterwards. Pickles are read
with `safe_pickle` (NumPy arrays and plain containers only), with a warning
that pickles can run code.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import cifar_archives as archives
from advmeta_jax.datasets import sources
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

NAME = "fc100"
TADAM_FILE = "few-shot-{split}.npz"


def _split_name(split: str) -> str:
  return f"{NAME}/{split}"


def _finish(data: base.ClassSplit) -> base.ClassSplit:
  """Warns when the classes do not hold CIFAR-100's 600 images each."""
  splits.check_counts(data.class_counts(), data.class_names,
                      splits.CIFAR_FS_IMAGES_PER_CLASS, data.name)
  return data


# --- the CIFAR-100 archives (no split in the files) ---------------------------


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
    parts: List[archives.Part] = read_parts(source, NAME)
    wanted = base.SPLITS if all_splits else (split,)
    return {s: base.gather_by_class(parts, splits.FC100_SPLITS[s], image_size,
                                    _split_name(s))
            for s in wanted}
  return read


# --- torchmeta's HDF5 ----------------------------------------------------------


def _torchmeta_root(root: str, split: str) -> Optional[str]:
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  return hdf5.torchmeta_cifar_root(root, split, "fc100")


def _read_torchmeta(source: str, split: str, image_size: int,
                    dataset: str) -> Dict[str, base.ClassSplit]:
  """torchmeta's `data.hdf5` + `fc100/<split>_labels.json`."""
  del dataset
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  return hdf5.read_torchmeta_cifar(
      source, split, image_size, subfolder="fc100", name=_split_name(split),
      split_classes=splits.FC100_SPLITS[split])


# --- TADAM's npz -----------------------------------------------------------------


def _read_tadam(source: str, split: str, image_size: int,
                dataset: str) -> Dict[str, base.ClassSplit]:
  """`few-shot-<split>.npz`: `features` [N, 32, 32, 3], `targets` fine ids."""
  del dataset
  name = _split_name(split)
  arrays = base.read_npz_arrays(source, name, {
      "features": "uint8 [N, 32, 32, 3]", "targets": "fine-label ids"})
  images, ids = arrays["features"], arrays["targets"]
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise DataError(f"{name}: {source!r}['features'] must be uint8 "
                    f"[N, 32, 32, 3], got {images.dtype} {images.shape}.")
  if (ids.dtype.kind not in "iu" or ids.shape != (len(images),) or
      not len(ids) or ids.min() < 0 or ids.max() > 99):
    raise DataError(f"{name}: {source!r}['targets'] must hold {len(images)} "
                    f"CIFAR-100 fine-label ids in 0-99, got {ids.dtype} "
                    f"{ids.shape}.")
  names = np.asarray(splits.CIFAR100_FINE_LABELS)[ids]
  classes = splits.ordered_classes(sorted(set(names.tolist())),
                                   splits.FC100_SPLITS[split],
                                   f"{name} ({source})")
  return {split: base.gather_by_class([(images, names)], classes, image_size,
                                      name)}


LAYOUTS = (
    sources.Layout(
        "cifar100_binary",
        "cifar-100-binary/{train,test}.bin with fine_label_names.txt",
        _archive_probe(archives.BINARY_FOLDER, ("train.bin", "test.bin"),
                       "cifar-100-binary.tar.gz", False),
        _archive_reader(archives.read_binary_folder, False), cached=False),
    sources.Layout(
        "torchmeta",
        "cifar100/data.hdf5 with cifar100/fc100/{split}_labels.json",
        _torchmeta_root, _read_torchmeta, cached=False),
    sources.Layout(
        "tadam_npz", "few-shot-{split}.npz",
        lambda root, split: sources.is_file(
            root, TADAM_FILE.format(split=split)),
        _read_tadam, cached=False),
    sources.Layout(
        "cifar100_binary_tgz", "cifar-100-binary.tar.gz",
        _archive_probe(archives.BINARY_FOLDER, ("train.bin", "test.bin"),
                       "cifar-100-binary.tar.gz", True),
        _archive_reader(archives.read_binary_tar, True), cached=True),
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
)


@base.register(NAME, default_image_size=32, channels=3, needs_data_dir=True,
               caches=True,
               description="FC100: CIFAR-100 (binary or python archive, "
               "torchmeta's HDF5 or TADAM's npz) split by superclass as "
               "Oreshkin et al., 60/20/20 classes (12/4/4 superclasses), "
               "32x32 RGB.")
def load_fc100(split: str, *, data_dir: Optional[str] = None,
               image_size: int = 32,
               cache_dir: Optional[str] = None) -> base.ClassSplit:
  """Loads an FC100 class split from the layout found in `data_dir`.

  Args:
    split: "train", "val" or "test".
    data_dir: a folder holding one of the layouts of the module docstring (in
      it or one level below).
    image_size: side of the returned images (32 keeps the originals).
    cache_dir: where the prepared cache of a slow layout is kept; `None`:
      next to the data.

  Returns:
    The split; class ids follow `splits.FC100_SPLITS`.

  Raises:
    DataError: no data_dir or no known layout in it, a truncated or corrupt
      file, a cache that does not match its manifest.
  """
  if not data_dir:
    raise DataError("fc100 is read from a local directory: pass --data_dir.")
  found = sources.find(data_dir, split, LAYOUTS, NAME)
  return _finish(sources.load(found, split, dataset=NAME,
                              image_size=image_size, cache_dir=cache_dir))
