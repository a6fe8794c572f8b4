"""`omniglot`: Omniglot from its original archives, zipped or extracted.

Omniglot (Lake et al., "Human-level concept learning through probabilistic
program induction", Science 2015): 1,623 handwritten characters of 50
alphabets, 20 drawings each, 105x105 1-bit PNGs, in the authors' two archives

    images_background.zip   30 alphabets, 964 characters
    images_evaluation.zip   20 alphabets, 659 characters

each holding `<archive name>/<alphabet>/characterNN/<id>_<drawing>.png`, where
`<id>` numbers the 1,623 characters from 1. `--data_dir=DIR` may hold, in DIR
or one folder below it, in this order:

  1. omniglot_zip      images_background.zip, images_evaluation.zip; cached
  2. omniglot_folder   the same, extracted: images_background/,
                       images_evaluation/; cached
  3. tfds              a tensorflow-datasets data_dir with `omniglot/`
                       prepared as array_record (`tfds_sources`)

Without `--data_dir`, tfds' default data_dir is read (as before).

Class split (the same as the tfds path's, since tfds numbers the characters by
the same `<id>`):
  train: the background characters sorted by id, minus the last
         `splits.OMNIGLOT_NUM_VAL_CLASSES` = 100: 864 classes
  val:   those last 100 background characters
  test:  the evaluation characters, sorted by id: 659 classes
Class names are tfds' `<alphabet>_<character number - 1>`. Images are reduced
to one channel, inverted so that strokes are bright (255) on a dark (0)
background, and resized (bilinear, antialiased) to 28x28 by default; no
rotation augmentation. The first read writes the prepared cache
(`advmeta_jax.datasets.cache`); later reads memory-map it.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import zipfile
import zlib
from typing import Dict, List, Optional, Tuple

from absl import logging
import numpy as np

from advmeta_jax.datasets import base
from advmeta_jax.datasets import sources
from advmeta_jax.datasets import splits
from advmeta_jax.datasets import tfds_sources
from advmeta_jax.errors import DataError

NAME = "omniglot"
ARCHIVES = {"train": "images_background", "val": "images_background",
            "test": "images_evaluation"}
_FILE = re.compile(r"^(\d+)_(\d+)\.png$", re.IGNORECASE)
_CHUNK = 1024

# One drawing: (alphabet, character folder, file name, how to read its bytes).
Entry = Tuple[str, str, str, object]


def _split_name(split: str) -> str:
  return f"{NAME}/{split}"


def _zip_entries(path: str) -> Tuple[zipfile.ZipFile, List[Entry]]:
  """The drawings of an Omniglot zip, and the open archive."""
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise DataError(f"{NAME}: cannot open {path!r} as a zip archive "
                    f"({base.reason(e)}); download it again.") from e
  top = os.path.splitext(os.path.basename(path))[0]
  entries = []
  for info in archive.infolist():
    parts = [p for p in info.filename.split("/") if p]
    if info.is_dir() or not parts or parts[0].startswith(("__MACOSX", ".")):
      continue
    if parts[0] == top:
      parts = parts[1:]
    if len(parts) == 3 and parts[2].lower().endswith(".png"):
      entries.append((parts[0], parts[1], parts[2], info))
  return archive, entries


def _folder_entries(folder: str) -> List[Entry]:
  """The drawings of an extracted Omniglot archive."""
  entries = []
  for alphabet in sorted(os.listdir(folder)):
    a_dir = os.path.join(folder, alphabet)
    if alphabet.startswith(".") or not os.path.isdir(a_dir):
      continue
    for character in sorted(os.listdir(a_dir)):
      c_dir = os.path.join(a_dir, character)
      if not os.path.isdir(c_dir):
        continue
      entries.extend((alphabet, character, f, os.path.join(c_dir, f))
                     for f in sorted(os.listdir(c_dir))
                     if f.lower().endswith(".png"))
  return entries


def character_table(entries: List[Entry], source: str):
  """Groups drawings by character, in the order of the characters' ids.

  Args:
    entries: the drawings of one archive.
    source: the archive, for messages.

  Returns:
    `[(class name, [entries])]`, sorted by the character id of the file names.

  Raises:
    DataError: a file name is not `<id>_<drawing>.png`, a folder not
      `characterNN`, or one character's files carry two ids.
  """
  chars: Dict[Tuple[str, str], Tuple[int, list]] = {}
  for entry in sorted(entries, key=lambda e: e[:3]):
    alphabet, character, file = entry[:3]
    match = _FILE.match(file)
    where = f"{source!r}: {alphabet}/{character}/{file}"
    if not match or not character.startswith("character"):
      raise DataError(
          f"{NAME}: {where}: expected <alphabet>/characterNN/<id>_<nn>.png "
          f"as in the Omniglot archives.")
    char_id = int(match.group(1)) - 1
    key = (alphabet, character)
    known = chars.setdefault(key, (char_id, []))
    if known[0] != char_id:
      raise DataError(f"{NAME}: {where}: character id {char_id + 1} differs "
                      f"from the id {known[0] + 1} of the other drawings in "
                      f"its folder.")
    known[1].append(entry)
  if not chars:
    raise DataError(f"{NAME}: {source!r} holds no drawings "
                    f"<alphabet>/characterNN/<id>_<nn>.png.")
  table = sorted(chars.items(), key=lambda kv: kv[1][0])
  return [(f"{alphabet}_{_char_number(character, source) - 1}", files)
          for (alphabet, character), (_, files) in table]


def _char_number(character: str, source: str) -> int:
  try:
    return int(character[len("character"):])
  except ValueError as e:
    raise DataError(f"{NAME}: {source!r}: folder {character!r} is not "
                    f"characterNN.") from e


def _decode(data: bytes, what: str) -> np.ndarray:
  """PNG bytes -> uint8 `[H, W, 1]`, strokes bright (as the tfds path)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as image:
      array = np.asarray(image.convert("L"))
  except Exception as e:  # Pillow raises several types for a corrupt file
    raise DataError(f"{NAME}: cannot decode {what} ({base.reason(e)}).") from e
  return tfds_sources.omniglot_image(array, what)  # pylint: disable=protected-access


def _read_bytes(entry: Entry, archive, source: str) -> Tuple[bytes, str]:
  what = f"{source!r} member {'/'.join(entry[:3])!r}"
  try:
    if archive is None:
      with open(entry[3], "rb") as f:
        return f.read(), what
    return archive.read(entry[3]), what
  except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
    raise DataError(f"{NAME}: {what} cannot be read ({base.reason(e)}): the "
                    f"archive is truncated or corrupt; download it again."
                    ) from e


def _read_images(entries: List[Entry], archive, source: str,
                 image_size: int) -> np.ndarray:
  """Decodes and resizes drawings, 1,024 at a time (threads decode)."""
  out = np.empty((len(entries), image_size, image_size, 1), np.uint8)
  with concurrent.futures.ThreadPoolExecutor(
      min(16, (os.cpu_count() or 1) + 2)) as pool:
    for start in range(0, len(entries), _CHUNK):
      raw = [_read_bytes(e, archive, source)
             for e in entries[start:start + _CHUNK]]
      images = list(pool.map(lambda r: _decode(*r), raw))
      out[start:start + len(images)] = base.resize_uint8(np.stack(images),
                                                         image_size)
  return out


def _split(table, image_size: int, entries_of, name: str) -> base.ClassSplit:
  files = [e for _, entries in table for e in entries]
  counts = [len(entries) for _, entries in table]
  return base.ClassSplit(
      images=entries_of(files, image_size),
      labels=np.repeat(np.arange(len(table), dtype=np.int32), counts),
      class_names=tuple(c for c, _ in table), name=name)


def _read_archive(source: str, split: str, image_size: int,
                  dataset: str) -> Dict[str, base.ClassSplit]:
  """Reads one archive (zip or folder): train + val, or test."""
  del dataset
  archive = None
  if os.path.isdir(source):
    entries = _folder_entries(source)
  else:
    archive, entries = _zip_entries(source)
  try:
    table = character_table(entries, source)
    read = lambda files, size: _read_images(files, archive, source, size)
    if split == "test":
      return {"test": _split(table, image_size, read, _split_name("test"))}
    if len(table) <= splits.OMNIGLOT_NUM_VAL_CLASSES:
      raise DataError(
          f"{NAME}: {source!r} holds {len(table)} characters; meta-train and "
          f"meta-val need more than {splits.OMNIGLOT_NUM_VAL_CLASSES} (the "
          f"real background set has 964).")
    cut = len(table) - splits.OMNIGLOT_NUM_VAL_CLASSES
    return {"train": _split(table[:cut], image_size, read,
                            _split_name("train")),
            "val": _split(table[cut:], image_size, read, _split_name("val"))}
  finally:
    if archive is not None:
      archive.close()


def _probe(suffix: str, want_dir: bool):
  def probe(root: str, split: str) -> Optional[str]:
    path = os.path.join(root, ARCHIVES[split] + suffix)
    ok = os.path.isdir(path) if want_dir else os.path.isfile(path)
    return path if ok else None
  return probe


def _tfds_probe(root: str, split: str) -> Optional[str]:
  del split
  return root if tfds_sources.is_prepared(root, "omniglot") else None


def _read_tfds(source, split, image_size, dataset):
  del dataset
  return {split: tfds_sources.load_omniglot(split, data_dir=source,
                                            image_size=image_size)}


LAYOUTS = (
    sources.Layout("omniglot_zip",
                   "images_background.zip (train, val) and "
                   "images_evaluation.zip (test)",
                   _probe(".zip", False), _read_archive, cached=True),
    sources.Layout("omniglot_folder",
                   "images_background/<alphabet>/<character>/*.png (train, "
                   "val) and images_evaluation/... (test)",
                   _probe("", True), _read_archive, cached=True),
    sources.Layout("tfds", "a tensorflow-datasets data_dir with omniglot/"
                   "<version>/ prepared as array_record (`tfds build "
                   "omniglot --file_format=array_record`)",
                   _tfds_probe, _read_tfds, cached=False),
)


def _finish(data: base.ClassSplit, split: str) -> base.ClassSplit:
  expected = splits.OMNIGLOT_SPLIT_SIZES[split]
  if data.num_classes != expected:
    logging.warning("%s: %d characters, not the real archives' %d.",
                    data.name, data.num_classes, expected)
  splits.check_counts(data.class_counts(), data.class_names,
                      splits.OMNIGLOT_IMAGES_PER_CLASS, data.name)
  return data


@base.register(NAME, default_image_size=28, channels=1, caches=True,
               description="Omniglot from images_background.zip / "
               "images_evaluation.zip (zipped or extracted) or tfds: train "
               "864 background characters, val the last 100, test the 659 "
               "evaluation characters, 28x28 greyscale.")
def load_omniglot(split: str, *, data_dir: Optional[str] = None,
                  image_size: int = 28,
                  cache_dir: Optional[str] = None) -> base.ClassSplit:
  """Loads an Omniglot class split from the layout found in `data_dir`.

  Args:
    split: "train", "val" or "test".
    data_dir: a folder holding one of the layouts of the module docstring (in
      it or one level below); `None` reads tfds' default data_dir.
    image_size: side of the returned images (default 28, from 105).
    cache_dir: where the prepared cache is kept; `None`: next to the data.

  Returns:
    The split; class ids follow the characters' ids.

  Raises:
    DataError: no known layout, a corrupt archive or image, a cache that does
      not match its manifest.
  """
  if data_dir is None:
    return _finish(tfds_sources.load_omniglot(split, data_dir=None,
                                              image_size=image_size), split)
  found = sources.find(data_dir, split, LAYOUTS, NAME)
  return _finish(sources.load(found, split, dataset=NAME,
                              image_size=image_size, cache_dir=cache_dir),
                 split)
