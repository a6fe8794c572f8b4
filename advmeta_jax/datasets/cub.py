"""`cub`: CUB-200-2011 with the class split of Chen et al. (ICLR 2019).

CUB-200-2011 (Wah et al., Caltech-UCSD Birds, 2011): 11,788 photographs of
200 bird species, 41-60 per species, of varied sizes. Chen et al. ("A Closer
Look at Few-shot Classification", ICLR 2019) split the species 100 / 50 / 50:
with the 200 class folders sorted by name and numbered from 0, folder i goes
to train if i % 2 == 0, to val if i % 4 == 1, to test if i % 4 == 3 (their
`filelists/CUB/write_CUB_filelist.py`, github.com/wyharveychen/CloserLookFewShot;
torchmeta's `torchmeta/datasets/assets/cub/{train,val,test}.json` hold the
same lists). The rule is `splits.cub_split`, the lists `splits.CUB_SPLITS`.
Class ids follow the sorted class names; a split's images are grouped by
class, sorted by file name within a class (torchmeta's order). Images are
decoded with Pillow, converted to RGB (a few are greyscale) and resized
(bilinear, the whole photograph, no crop) to `image_size`² (84 by default).

`--data_dir=DIR` may hold any of these layouts, in DIR or one folder below it;
the first found, in this order, is read:

  1. cub_folder  the extracted archive: `CUB_200_2011/images/<class>/*.jpg`
                 with `CUB_200_2011/images.txt` (`<id> <class>/<file>` a line)
                 and `CUB_200_2011/classes.txt` (`<id> <class>` a line); cached
  2. cub_tgz     `CUB_200_2011.tgz`, the archive as its authors distribute it;
                 cached
  3. torchmeta   `cub/{train,val,test}_data.hdf5` (group `datasets`, one
                 dataset per class whose elements are the JPEG files' bytes)
                 + `cub/{split}_labels.json` (the class names), torchmeta's
                 `CUB`; cached

The archive and the folder carry no split: the rule gives it, on the classes
of `classes.txt`, which are checked against CUB-200-2011's 200 names (a
difference is a warning). torchmeta's label files carry one and are checked
against the lists. Decoding JPEGs is slow, so every layout is read once into
the prepared cache (`advmeta_jax.datasets.cache`), all three splits in one
pass, and memory-mapped afterwards.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import image_folder
from advmeta_jax.datasets import sources
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

NAME = "cub"
FOLDER = "CUB_200_2011"
TGZ = "CUB_200_2011.tgz"
TORCHMETA_FOLDER = "cub"
TORCHMETA_DATA = "{split}_data.hdf5"
TORCHMETA_LABELS = "{split}_labels.json"


def _split_name(split: str) -> str:
  return f"{NAME}/{split}"


# --- the archive's text files ----------------------------------------------------


def _id_lines(text: str, path: str) -> List[Tuple[str, str]]:
  """The `<id> <value>` lines of `classes.txt` / `images.txt`."""
  out = []
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split(maxsplit=1)
    if len(parts) != 2 or not parts[0].isdigit():
      raise DataError(f"{NAME}: {path!r} line {number}: expected '<id> "
                      f"<name>', got {line.strip()!r}.")
    out.append((parts[0], parts[1].strip()))
  if not out:
    raise DataError(f"{NAME}: {path!r} is empty.")
  return out


def _class_lists(classes_text: str, images_text: str, classes_path: str,
                 images_path: str) -> Dict[str, Dict[str, List[str]]]:
  """`{split: {class: [relative image paths, sorted]}}` by Chen et al.'s rule.

  Raises:
    DataError: malformed lines, an image outside the classes of
      `classes.txt`, a class without images.
  """
  names = [name for _, name in sorted(_id_lines(classes_text, classes_path),
                                      key=lambda kv: int(kv[0]))]
  if len(set(names)) != len(names):
    raise DataError(f"{NAME}: {classes_path!r} names a class twice.")
  splits.ordered_classes(names, splits.CUB_CLASSES, f"{NAME} ({classes_path})")
  files: Dict[str, List[str]] = {n: [] for n in names}
  for _, rel in _id_lines(images_text, images_path):
    folder = rel.split("/", 1)[0]
    if "/" not in rel or folder not in files:
      raise DataError(f"{NAME}: {images_path!r} lists {rel!r}, which is not "
                      f"in a class folder named in {classes_path!r}.")
    files[folder].append(rel)
  empty = [n for n, f in files.items() if not f]
  if empty:
    raise DataError(f"{NAME}: {images_path!r} lists no image of "
                    f"{len(empty)} classes of {classes_path!r} (first: "
                    f"{empty[0]!r}).")
  splits.check_total(sum(len(f) for f in files.values()), splits.CUB_NUM_IMAGES,
                     NAME, "images")
  return {split: {c: sorted(files[c]) for c in classes}
          for split, classes in splits.cub_split(names).items()}


def _build(lists: Dict[str, Dict[str, List[str]]], decode,
           image_size: int) -> Dict[str, base.ClassSplit]:
  """Every split: `decode(list of relative paths, image_size)` per split."""
  out = {}
  for split, per_class in lists.items():
    classes = tuple(per_class)
    rels = [r for c in classes for r in per_class[c]]
    counts = [len(per_class[c]) for c in classes]
    out[split] = base.ClassSplit(
        images=decode(rels, image_size),
        labels=np.repeat(np.arange(len(classes), dtype=np.int32), counts),
        class_names=classes, name=_split_name(split))
  return out


# --- 1. the extracted folder -------------------------------------------------------


def _read_text(path: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except FileNotFoundError as e:
    raise DataError(f"{NAME}: {path!r} does not exist; the CUB_200_2011 "
                    f"folder holds images/, images.txt and classes.txt.") from e
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{NAME}: cannot read {path!r} ({base.reason(e)}).") from e


def _read_folder(source: str, split: str, image_size: int,
                 dataset: str) -> Dict[str, base.ClassSplit]:
  del split, dataset
  classes_path = os.path.join(source, "classes.txt")
  images_path = os.path.join(source, "images.txt")
  lists = _class_lists(_read_text(classes_path), _read_text(images_path),
                       classes_path, images_path)
  image_dir = os.path.join(source, "images")
  wanted = [os.path.join(image_dir, *r.split("/")) for per_class in
            lists.values() for rels in per_class.values() for r in rels]
  missing = [f for f in wanted if not os.path.isfile(f)]
  if missing:
    raise DataError(f"{NAME}: {len(missing)} of the {len(wanted)} image files "
                    f"listed in {images_path!r} do not exist, e.g. "
                    f"{missing[0]!r}.")

  def decode(rels, size):
    return image_folder.read_image_files(
        [os.path.join(image_dir, *r.split("/")) for r in rels], size)
  return _build(lists, decode, image_size)


def _folder_probe(root: str, split: str) -> Optional[str]:
  del split
  for folder in (root, os.path.join(root, FOLDER)):
    if (os.path.isdir(os.path.join(folder, "images")) and
        os.path.isfile(os.path.join(folder, "images.txt"))):
      return folder
  return None


# --- 2. the tgz ------------------------------------------------------------------------


def _read_tgz(source: str, split: str, image_size: int,
              dataset: str) -> Dict[str, base.ClassSplit]:
  """One pass over `CUB_200_2011.tgz`: the two lists and every JPEG's bytes."""
  del split, dataset
  texts: Dict[str, str] = {}
  jpegs: Dict[str, bytes] = {}
  try:
    tar = tarfile.open(source, "r:*")
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise DataError(f"{NAME}: cannot open {source!r} as a tar archive "
                    f"({base.reason(e)}); download it again.") from e
  with tar:
    try:
      for member in tar:
        if not member.isfile():
          continue
        parts = member.name.split("/")
        if parts[0] != FOLDER or len(parts) < 2:
          continue
        if len(parts) == 2 and parts[1] in ("classes.txt", "images.txt"):
          texts[parts[1]] = tar.extractfile(member).read().decode("utf-8")
        elif len(parts) == 4 and parts[1] == "images":
          jpegs[f"{parts[2]}/{parts[3]}"] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error,
            UnicodeDecodeError) as e:
      raise DataError(f"{NAME}: {source!r} is truncated or corrupt "
                      f"({base.reason(e)}); download it again.") from e
  for text in ("classes.txt", "images.txt"):
    if text not in texts:
      raise DataError(f"{NAME}: {source!r} has no member {FOLDER}/{text} (it "
                      f"must hold {FOLDER}/images/, images.txt and "
                      f"classes.txt).")
  lists = _class_lists(texts["classes.txt"], texts["images.txt"],
                       f"{source}::{FOLDER}/classes.txt",
                       f"{source}::{FOLDER}/images.txt")
  wanted = [r for per_class in lists.values() for rels in per_class.values()
            for r in rels]
  missing = [r for r in wanted if r not in jpegs]
  if missing:
    raise DataError(f"{NAME}: {len(missing)} of the {len(wanted)} images "
                    f"listed in {FOLDER}/images.txt are not in {source!r}, "
                    f"e.g. {FOLDER}/images/{missing[0]}.")

  def decode(rels, size):
    return image_folder.read_image_bytes([jpegs[r] for r in rels], size,
                                         f"{source!r}::{FOLDER}/images")
  return _build(lists, decode, image_size)


# --- 3. torchmeta's HDF5 of JPEG bytes ---------------------------------------------


def _torchmeta_probe(root: str, split: str) -> Optional[str]:
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  return hdf5.torchmeta_split_folder(root, split, TORCHMETA_FOLDER)


def _read_torchmeta(source: str, split: str, image_size: int,
                    dataset: str) -> Dict[str, base.ClassSplit]:
  del dataset
  from advmeta_jax.datasets import hdf5  # pylint: disable=g-import-not-at-top
  name = _split_name(split)
  labels_path = os.path.join(source, TORCHMETA_LABELS.format(split=split))
  found = hdf5.read_json_list(labels_path, name, "class names")
  if not all(isinstance(n, str) and n for n in found):
    raise DataError(f"{name}: {labels_path!r} must list class folder names.")
  classes = splits.ordered_classes(found, splits.CUB_SPLITS[split],
                                   f"{name} ({labels_path})")
  images, counts = hdf5.read_encoded_datasets(
      os.path.join(source, TORCHMETA_DATA.format(split=split)),
      [f"datasets/{c}" for c in classes], image_size, name)
  return {split: base.ClassSplit(
      images=images,
      labels=np.repeat(np.arange(len(classes), dtype=np.int32), counts),
      class_names=tuple(classes), name=name)}


LAYOUTS = (
    sources.Layout("cub_folder", "CUB_200_2011/images/<class>/*.jpg with "
                   "images.txt and classes.txt", _folder_probe, _read_folder,
                   cached=True),
    sources.Layout("cub_tgz", TGZ,
                   lambda root, split: sources.is_file(root, TGZ), _read_tgz,
                   cached=True),
    sources.Layout("torchmeta", "cub/{split}_data.hdf5 with "
                   "cub/{split}_labels.json", _torchmeta_probe,
                   _read_torchmeta, cached=True),
)


@base.register(NAME, default_image_size=84, channels=3, needs_data_dir=True,
               caches=True,
               description="CUB-200-2011 from a local --data_dir (the "
               "CUB_200_2011 folder or .tgz, or torchmeta's HDF5), Chen et "
               "al.'s 100/50/50 class split, 84x84 RGB.")
def load_cub(split: str, *, data_dir: Optional[str] = None,
             image_size: int = 84,
             cache_dir: Optional[str] = None) -> base.ClassSplit:
  """Loads a CUB class split from a local directory.

  Args:
    split: "train", "val" or "test".
    data_dir: directory holding one of the layouts of the module docstring.
    image_size: side of the square images returned.
    cache_dir: where the prepared cache is kept; `None`: next to the data.

  Returns:
    The split; class ids follow the sorted class names.

  Raises:
    DataError: missing directory or files, malformed or corrupt files, a
      cache that does not match its manifest.
  """
  if not data_dir:
    raise DataError("cub is read from a local directory: pass --data_dir.")
  found = sources.find(data_dir, split, LAYOUTS, NAME)
  return sources.load(found, split, dataset=NAME, image_size=image_size,
                      cache_dir=cache_dir)
