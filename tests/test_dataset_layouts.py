"""Writers of small (or full-size) datasets in the exact layouts of the real files.

Used by the dataset tests (tiny data, fake pixels, the real file names, keys
and byte layouts) and, as a script, to write full-size synthetic data for the
load-time and peak-memory figures of docs/datasets.md:

    python tests/test_dataset_layouts.py --out=/tmp/synth --full

The writers follow the formats' own descriptions (the CIFAR-100 page, the
loaders of torchmeta, learn2learn, MetaOptNet, TADAM, few-shot-ssl, the
Omniglot and CUB-200-2011 archives), not advmeta's readers. This file holds no tests of its own beyond the writers'
self-checks below.
"""

import argparse
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
from PIL import Image

from advmeta_jax.datasets import splits

# --- Python 2 pickles ---------------------------------------------------------


class Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes pickles as Python 2's cPickle did (protocol 2, `str` as BINSTRING).

  CIFAR-100's python archive and MetaOptNet's files are Python 2 pickles: their
  keys, names and array bytes are py2 `str` (opcodes SHORT_BINSTRING and
  BINSTRING) and NumPy's functions are named `numpy.core.multiarray`.
  """
  dispatch = pickle._Pickler.dispatch.copy()  # pylint: disable=protected-access

  def save_py2_str(self, obj):
    data = obj.encode("latin1") if isinstance(obj, str) else obj
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
    self.memoize(obj)

  dispatch[str] = save_py2_str
  dispatch[bytes] = save_py2_str

  def save_global(self, obj, name=None):
    module = getattr(obj, "__module__", "")
    if module.startswith("numpy._core"):
      module = "numpy.core" + module[len("numpy._core"):]
      name = name or obj.__name__
      self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
      self.memoize(obj)
      return
    super().save_global(obj, name)

  dispatch[type(np.ndarray)] = save_global
  dispatch[type(len)] = save_global


def py2_pickle(obj, path):
  with open(path, "wb") as f:
    Py2Pickler(f, protocol=2).dump(obj)


def py2_pickle_bytes(obj) -> bytes:
  buffer = io.BytesIO()
  Py2Pickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue()


# --- CIFAR-100 and CIFAR-FS -----------------------------------------------------


def fake_cifar100(n_train=2, n_test=1, seed=0):
  """CIFAR-100's two parts with `n_train`/`n_test` random images per class.

  Returns:
    {"train": (images uint8 [N,32,32,3], fine ids [N], coarse ids [N]),
     "test": ...}; classes interleaved as in the real archives.
  """
  rng = np.random.default_rng(seed)
  fine_names = splits.CIFAR100_FINE_LABELS
  coarse_id = {c: i for i, c in enumerate(splits.CIFAR100_COARSE_LABELS)}
  parts = {}
  for part, n in (("train", n_train), ("test", n_test)):
    fine = np.tile(np.arange(100), n)
    rng.shuffle(fine)
    coarse = np.array([coarse_id[splits.CIFAR100_COARSE_OF[fine_names[f]]]
                       for f in fine])
    images = rng.integers(0, 256, (len(fine), 32, 32, 3), dtype=np.uint8)
    parts[part] = (images, fine, coarse)
  return parts


def cifar_fs_expected(parts, split):
  """The images of a CIFAR-FS split, class by class (table order)."""
  out = []
  for name in splits.CIFAR_FS_SPLITS[split]:
    fid = splits.CIFAR100_FINE_LABELS.index(name)
    out.extend(images[fine == fid] for images, fine, _ in
               (parts["train"], parts["test"]))
  return np.concatenate(out)


def _planes(images):
  return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def _add_bytes(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def cifar100_binary_files(parts):
  """{member name: bytes} of `cifar-100-binary/`."""
  files = {}
  for part in ("train", "test"):
    images, fine, coarse = parts[part]
    records = np.concatenate(
        [coarse[:, None].astype(np.uint8), fine[:, None].astype(np.uint8),
         _planes(images)], axis=1)
    files[f"{part}.bin"] = records.tobytes()
  files["fine_label_names.txt"] = (
      "\n".join(splits.CIFAR100_FINE_LABELS) + "\n").encode()
  files["coarse_label_names.txt"] = (
      "\n".join(splits.CIFAR100_COARSE_LABELS) + "\n").encode()
  return files


def cifar100_python_files(parts):
  """{member name: bytes} of `cifar-100-python/` (Python 2 pickles)."""
  files = {}
  for part in ("train", "test"):
    images, fine, coarse = parts[part]
    files[part] = py2_pickle_bytes({
        "filenames": [f"image_{i}.png" for i in range(len(fine))],
        "batch_label": f"{part}ing batch 1 of 1",
        "fine_labels": [int(f) for f in fine],
        "coarse_labels": [int(c) for c in coarse],
        "data": _planes(images)})
  files["meta"] = py2_pickle_bytes({
      "fine_label_names": list(splits.CIFAR100_FINE_LABELS),
      "coarse_label_names": list(splits.CIFAR100_COARSE_LABELS)})
  return files


def _write_archive(root, folder, files, tar):
  if tar:
    with tarfile.open(os.path.join(root, f"{folder}.tar.gz"), "w:gz") as t:
      for name, data in files.items():
        _add_bytes(t, f"{folder}/{name}", data)
    return os.path.join(root, f"{folder}.tar.gz")
  os.makedirs(os.path.join(root, folder), exist_ok=True)
  for name, data in files.items():
    with open(os.path.join(root, folder, name), "wb") as f:
      f.write(data)
  return os.path.join(root, folder)


def write_cifar100_binary(root, parts, tar=False):
  return _write_archive(root, "cifar-100-binary", cifar100_binary_files(parts),
                        tar)


def write_cifar100_python(root, parts, tar=False):
  return _write_archive(root, "cifar-100-python", cifar100_python_files(parts),
                        tar)


def write_bertinetto(root, parts):
  """`cifar100/data/<class>/*.png` + `cifar100/splits/bertinetto/*.txt`."""
  base = os.path.join(root, "cifar100")
  for name in splits.CIFAR100_FINE_LABELS:
    fid = splits.CIFAR100_FINE_LABELS.index(name)
    folder = os.path.join(base, "data", name)
    os.makedirs(folder, exist_ok=True)
    k = 0
    for part in ("train", "test"):
      images, fine, _ = parts[part]
      for image in images[fine == fid]:
        Image.fromarray(image).save(os.path.join(folder, f"{name}_{k:05d}.png"))
        k += 1
  os.makedirs(os.path.join(base, "splits", "bertinetto"), exist_ok=True)
  for split, classes in splits.CIFAR_FS_SPLITS.items():
    with open(os.path.join(base, "splits", "bertinetto", f"{split}.txt"),
              "w") as f:
      f.write("\n".join(classes) + "\n")
  return base


def write_metaoptnet_cifar(root, parts):
  """`CIFAR_FS_{train,val,test}.pickle`: `data` [N,32,32,3], `labels`."""
  for split, classes in splits.CIFAR_FS_SPLITS.items():
    ids = {splits.CIFAR100_FINE_LABELS.index(c) for c in classes}
    images = np.concatenate([parts[p][0][np.isin(parts[p][1], list(ids))]
                             for p in ("train", "test")])
    labels = np.concatenate([parts[p][1][np.isin(parts[p][1], list(ids))]
                             for p in ("train", "test")])
    py2_pickle({"data": images, "labels": [int(l) for l in labels]},
               os.path.join(root, f"CIFAR_FS_{split}.pickle"))


def write_torchmeta_cifar(root, parts):
  """torchmeta's `cifar100/data.hdf5`, `fine_names.json`, `cifar-fs/*.json`."""
  import h5py  # pylint: disable=g-import-not-at-top
  base = os.path.join(root, "cifar100")
  os.makedirs(os.path.join(base, "cifar-fs"), exist_ok=True)
  images = np.concatenate([parts["train"][0], parts["test"][0]])
  fine = np.concatenate([parts["train"][1], parts["test"][1]])
  names = {}
  with h5py.File(os.path.join(base, "data.hdf5"), "w") as f:
    for coarse in splits.CIFAR100_COARSE_LABELS:
      group = f.create_group(coarse)
      for name in splits.CIFAR100_SUPERCLASSES[coarse]:
        fid = splits.CIFAR100_FINE_LABELS.index(name)
        group.create_dataset(name, data=images[fine == fid])
      names[coarse] = list(splits.CIFAR100_SUPERCLASSES[coarse])
  with open(os.path.join(base, "fine_names.json"), "w") as f:
    json.dump(names, f)
  for split, classes in splits.CIFAR_FS_SPLITS.items():
    with open(os.path.join(base, "cifar-fs", f"{split}_labels.json"), "w") as f:
      json.dump([[splits.CIFAR100_COARSE_OF[c], c] for c in classes], f)
  return base


# --- MiniImageNet ------------------------------------------------------------------


def fake_mini(per_class=2, size=84, seed=1):
  """{split: (images [N,size,size,3], wnids [N])}, grouped by sorted wnid."""
  rng = np.random.default_rng(seed)
  out = {}
  for split, wnids in splits.MINI_IMAGENET_SPLITS.items():
    labels = np.repeat(np.asarray(sorted(wnids)), per_class)
    out[split] = (rng.integers(0, 256, (len(labels), size, size, 3),
                               dtype=np.uint8), labels)
  return out


def write_mini_csv(root, data, ext="png"):
  """Ravi & Larochelle's `{split}.csv` + `images/` (PNG: lossless)."""
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  for split, (images, wnids) in data.items():
    rows = ["filename,label"]
    for k, (image, wnid) in enumerate(zip(images, wnids)):
      name = f"{wnid}{k:08d}.{ext}"
      Image.fromarray(image).save(os.path.join(root, "images", name))
      rows.append(f"{name},{wnid}")
    with open(os.path.join(root, f"{split}.csv"), "w") as f:
      f.write("\n".join(rows) + "\n")


def write_mini_npz(root, data):
  for split, (images, wnids) in data.items():
    np.savez(os.path.join(root, f"mini-imagenet-{split}.npz"), images=images,
             labels=wnids)


def write_mini_l2l(root, data):
  """learn2learn's `mini-imagenet-cache-{split}.pkl`."""
  for split, (images, wnids) in data.items():
    class_dict = {}
    for i, w in enumerate(wnids.tolist()):
      class_dict.setdefault(w, []).append(i)
    with open(os.path.join(root, f"mini-imagenet-cache-{split}.pkl"),
              "wb") as f:
      pickle.dump({"image_data": images, "class_dict": class_dict}, f,
                  protocol=4)


def write_mini_torchmeta(root, data):
  """torchmeta's `miniimagenet/{split}_data.hdf5` + `{split}_labels.json`."""
  import h5py  # pylint: disable=g-import-not-at-top
  base = os.path.join(root, "miniimagenet")
  os.makedirs(base, exist_ok=True)
  for split, (images, wnids) in data.items():
    with h5py.File(os.path.join(base, f"{split}_data.hdf5"), "w") as f:
      group = f.create_group("datasets")
      for w in sorted(set(wnids.tolist())):
        group.create_dataset(w, data=images[wnids == w])
    with open(os.path.join(base, f"{split}_labels.json"), "w") as f:
      json.dump(sorted(set(wnids.tolist())), f)
  return base


METAOPTNET_MINI = {"train": "train_phase_train", "val": "val", "test": "test"}


def write_mini_metaoptnet(root, data):
  """MetaOptNet's `miniImageNet_category_split_*.pickle` (Python 2)."""
  offset = 0
  for split in ("train", "val", "test"):
    images, wnids = data[split]
    classes = sorted(set(wnids.tolist()))
    catname2label = {w: offset + i for i, w in enumerate(classes)}
    offset += len(classes)
    py2_pickle({"data": images,
                "labels": [catname2label[w] for w in wnids.tolist()],
                "catname2label": catname2label},
               os.path.join(root, f"miniImageNet_category_split_"
                            f"{METAOPTNET_MINI[split]}.pickle"))


# --- Omniglot ----------------------------------------------------------------------


def fake_omniglot(n_background=105, n_evaluation=5, drawings=2, seed=2):
  """{archive: [(alphabet, character folder, file name, 1-bit PNG bytes,
  image with strokes 255 / paper 0)]}.

  Character ids run backwards through the alphabets (as in the real archives,
  where the first alphabet by name is not the first by id), so that sorting
  by id and by name differ.
  """
  rng = np.random.default_rng(seed)
  total = n_background + n_evaluation
  out = {"images_background": [], "images_evaluation": []}
  for k in range(total):
    archive = "images_background" if k < n_background else "images_evaluation"
    index = k if k < n_background else k - n_background
    alphabet = f"Alphabet_{index // 20:02d}"
    character = f"character{index % 20 + 1:02d}"
    char_id = total - k
    for d in range(drawings):
      paper = rng.random((105, 105)) > 0.1  # True = white paper
      buffer = io.BytesIO()
      Image.fromarray(paper).save(buffer, format="PNG")  # mode "1"
      strokes = np.where(paper, 0, 255).astype(np.uint8)[..., None]
      out[archive].append((alphabet, character, f"{char_id:04d}_{d + 1:02d}.png",
                           buffer.getvalue(), strokes))
  return out


def omniglot_class_name(alphabet, character):
  return f"{alphabet}_{int(character[len('character'):]) - 1}"


def write_omniglot(root, data, zipped=True):
  for archive, entries in data.items():
    if zipped:
      with zipfile.ZipFile(os.path.join(root, f"{archive}.zip"), "w",
                           zipfile.ZIP_DEFLATED) as z:
        for alphabet, character, file, png, _ in entries:
          z.writestr(f"{archive}/{alphabet}/{character}/{file}", png)
    else:
      for alphabet, character, file, png, _ in entries:
        folder = os.path.join(root, archive, alphabet, character)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, file), "wb") as f:
          f.write(png)


# --- FC100 (the CIFAR-100 archives above, split by superclass) ------------------


def fc100_expected(parts, split):
  """The images of an FC100 split, class by class (table order)."""
  out = []
  for name in splits.FC100_SPLITS[split]:
    fid = splits.CIFAR100_FINE_LABELS.index(name)
    out.extend(images[fine == fid] for images, fine, _ in
               (parts["train"], parts["test"]))
  return np.concatenate(out)


def write_torchmeta_fc100(root, parts):
  """torchmeta's `cifar100/data.hdf5` + `cifar100/fc100/{split}_labels.json`:
  [coarse, fine] pairs, superclass by superclass (torchmeta's FC100
  `download`: `for coarse_name in data for fine_name in fine_names[...]`)."""
  base = write_torchmeta_cifar(root, parts)
  with open(os.path.join(base, "fine_names.json")) as f:
    fine_names = json.load(f)
  os.makedirs(os.path.join(base, "fc100"), exist_ok=True)
  for split, coarses in splits.FC100_SUPERCLASSES.items():
    with open(os.path.join(base, "fc100", f"{split}_labels.json"), "w") as f:
      json.dump([[c, fine] for c in coarses for fine in fine_names[c]], f)
  return base


# TADAM's `class_split` of coarse label ids (datasets/create_dataset_cifar100.py).
TADAM_CLASS_SPLIT = {"train": {1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19},
                     "val": {8, 11, 13, 16}, "test": {0, 7, 12, 14}}


def write_tadam_npz(root, parts, seed=2017 + 5 + 17):
  """TADAM's `few-shot-{split}.npz`: `features` [N,32,32,3], `targets` fine
  ids, the split's images shuffled (as its script writes them)."""
  rng = np.random.RandomState(seed)
  images = np.concatenate([parts["train"][0], parts["test"][0]])
  fine = np.concatenate([parts["train"][1], parts["test"][1]])
  coarse = np.concatenate([parts["train"][2], parts["test"][2]])
  for split, ids in TADAM_CLASS_SPLIT.items():
    keep = np.flatnonzero(np.isin(coarse, sorted(ids)))
    keep = keep[rng.permutation(len(keep))]
    np.savez(os.path.join(root, f"few-shot-{split}.npz"),
             features=images[keep], targets=fine[keep])


# --- tieredImageNet ------------------------------------------------------------------


def fake_tiered(per_class=1, size=84, seed=3):
  """{split: (images RGB [N,size,size,3], class ids [N], category ids [N],
  class names, category names)}: the published 351/97/160 classes in
  20/6/8 categories, low-entropy pixels (small PNGs)."""
  rng = np.random.default_rng(seed)
  out = {}
  for split in ("train", "val", "test"):
    n_cls = splits.TIERED_IMAGENET_NUM_CLASSES[split]
    n_cat = splits.TIERED_IMAGENET_NUM_CATEGORIES[split]
    ids = np.repeat(np.arange(n_cls, dtype=np.int32), per_class)
    general = (ids * n_cat // n_cls).astype(np.int32)
    images = (rng.integers(0, 4, (len(ids), size, size, 3)) * 80).astype(
        np.uint8)
    names = [f"{split} class {c:03d}" for c in range(n_cls)]
    categories = {g: f"{split} category {g}" for g in range(n_cat)}
    out[split] = (images, ids, general, names, categories)
  return out


def _png(image) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def _tiered_labels(path, ids, general, names, categories):
  """few-shot-ssl's `{split}_labels.pkl` (a Python 2 pickle)."""
  py2_pickle({"label_specific": ids, "label_general": general,
              "label_specific_str": list(names),
              "label_general_str": dict(categories)}, path)


def write_tiered_png_pkl(root, data):
  """Ren et al.'s `tiered-imagenet/{split}_images_png.pkl`: a list of
  `cv2.imencode('.png', ...)[1]` arrays (uint8 [n, 1]), + `_labels.pkl`."""
  base = os.path.join(root, "tiered-imagenet")
  os.makedirs(base, exist_ok=True)
  for split, (images, ids, general, names, categories) in data.items():
    pngs = [np.frombuffer(_png(im), np.uint8).reshape(-1, 1) for im in images]
    py2_pickle(pngs, os.path.join(base, f"{split}_images_png.pkl"))
    _tiered_labels(os.path.join(base, f"{split}_labels.pkl"), ids, general,
                   names, categories)
  return base


def write_tiered_npz(root, data):
  """The decompressed form MetaOptNet reads: `{split}_images.npz`
  (`images`, BGR as OpenCV decodes) + `{split}_labels.pkl`."""
  for split, (images, ids, general, names, categories) in data.items():
    np.savez(os.path.join(root, f"{split}_images.npz"),
             images=np.ascontiguousarray(images[..., ::-1]))
    _tiered_labels(os.path.join(root, f"{split}_labels.pkl"), ids, general,
                   names, categories)


def write_tiered_torchmeta(root, data):
  """torchmeta's `tieredimagenet/{split}_data.hdf5` (vlen PNG bytes per
  class) + `{split}_labels.json`."""
  import h5py  # pylint: disable=g-import-not-at-top
  base = os.path.join(root, "tieredimagenet")
  os.makedirs(base, exist_ok=True)
  for split, (images, ids, general, names, categories) in data.items():
    with open(os.path.join(base, f"{split}_labels.json"), "w") as f:
      json.dump(list(names), f)
    with h5py.File(os.path.join(base, f"{split}_data.hdf5"), "w") as f:
      group = f.create_group("datasets")
      dtype = h5py.special_dtype(vlen=np.uint8)
      for i, label in enumerate(names):
        index = np.flatnonzero(ids == i)
        ds = group.create_dataset(label, (len(index),), dtype=dtype)
        ds.attrs["label_general"] = categories[int(general[index[0]])]
        for j, k in enumerate(index):
          ds[j] = np.frombuffer(_png(images[k]), np.uint8)
  return base


# --- CUB-200-2011 ------------------------------------------------------------------------


def fake_cub(per_class=1, seed=4):
  """{class folder: [(file name, JPEG bytes)]} for CUB's 200 classes, images of
  varied small sizes, a greyscale one among them."""
  rng = np.random.default_rng(seed)
  out = {}
  for c, name in enumerate(splits.CUB_CLASSES):
    files = []
    for k in range(per_class):
      h, w = 20 + (c + k) % 7, 24 + (c * 3 + k) % 5
      image = (rng.integers(0, 4, (h, w, 3)) * 80).astype(np.uint8)
      pil = Image.fromarray(image)
      if c == 5 and k == 0:
        pil = pil.convert("L")
      buffer = io.BytesIO()
      pil.save(buffer, format="JPEG", quality=90)
      files.append((f"{name.split('.', 1)[1]}_{1000 + k}.jpg",
                    buffer.getvalue()))
    out[name] = files
  return out


def cub_files(data):
  """{member path inside CUB_200_2011/: bytes}, as the archive holds them."""
  files, classes, images = {}, [], []
  image_id = 1
  for c, name in enumerate(sorted(data), start=1):
    classes.append(f"{c} {name}")
    for file, jpeg in data[name]:
      files[f"images/{name}/{file}"] = jpeg
      images.append(f"{image_id} {name}/{file}")
      image_id += 1
  files["classes.txt"] = ("\n".join(classes) + "\n").encode()
  files["images.txt"] = ("\n".join(images) + "\n").encode()
  files["README"] = b"CUB-200-2011 (fake)\n"
  return files


def write_cub_folder(root, data):
  base = os.path.join(root, "CUB_200_2011")
  for name, content in cub_files(data).items():
    path = os.path.join(base, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content)
  return base


def write_cub_tgz(root, data):
  path = os.path.join(root, "CUB_200_2011.tgz")
  with tarfile.open(path, "w:gz") as tar:
    _add_bytes(tar, "attributes.txt", b"1 has_bill_shape::curved\n")
    for name, content in cub_files(data).items():
      _add_bytes(tar, f"CUB_200_2011/{name}", content)
  return path


def write_cub_torchmeta(root, data):
  """torchmeta's `cub/{split}_data.hdf5` (vlen JPEG bytes, files sorted) +
  `cub/{split}_labels.json`."""
  import h5py  # pylint: disable=g-import-not-at-top
  base = os.path.join(root, "cub")
  os.makedirs(base, exist_ok=True)
  for split, classes in splits.CUB_SPLITS.items():
    with open(os.path.join(base, f"{split}_labels.json"), "w") as f:
      json.dump(list(classes), f)
    with h5py.File(os.path.join(base, f"{split}_data.hdf5"), "w") as f:
      group = f.create_group("datasets")
      dtype = h5py.special_dtype(vlen=np.uint8)
      for label in classes:
        files = sorted(data[label])
        ds = group.create_dataset(label, (len(files),), dtype=dtype)
        for j, (_, jpeg) in enumerate(files):
          ds[j] = np.frombuffer(jpeg, np.uint8)
  return base


def fake_cub_full(seed=5):
  """CUB-200-2011's sizes: 11,788 JPEGs (59 or 58 per class), 500x375,
  smooth random pictures (JPEGs of about a photograph's size)."""
  rng = np.random.default_rng(seed)
  out = {}
  for c, name in enumerate(splits.CUB_CLASSES):
    n = 59 if c < 188 else 58
    files = []
    for k in range(n):
      small = rng.integers(0, 256, (38, 50, 3), dtype=np.uint8)
      image = Image.fromarray(small).resize((500, 375), Image.BILINEAR)
      buffer = io.BytesIO()
      image.save(buffer, format="JPEG", quality=75)
      files.append((f"{name.split('.', 1)[1]}_{k:04d}.jpg", buffer.getvalue()))
    out[name] = files
  return out


# --- self-checks of the writers ------------------------------------------------------


def test_py2_pickle_is_python2_shaped():
  data = py2_pickle_bytes({"data": np.zeros((2, 3), np.uint8), "k": "v"})
  assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
  assert pickle.SHORT_BINSTRING + b"\x04data" in data
  loaded = pickle.loads(data, encoding="latin1")
  assert loaded["k"] == "v" and loaded["data"].shape == (2, 3)


def test_cifar_binary_record_layout():
  parts = fake_cifar100(1, 1)
  record = np.frombuffer(cifar100_binary_files(parts)["train.bin"],
                         np.uint8)[:3074]
  images, fine, coarse = parts["train"]
  assert record[0] == coarse[0] and record[1] == fine[0]
  assert np.array_equal(record[2:1026].reshape(32, 32), images[0, :, :, 0])
  assert np.array_equal(record[2050:].reshape(32, 32), images[0, :, :, 2])


# --- full-size synthetic data for the measurements --------------------------------------


FULL_WRITERS = {
    "cifar100_binary": lambda root, p: write_cifar100_binary(root, p),
    "cifar100_python_tgz": lambda root, p: write_cifar100_python(root, p,
                                                                 tar=True),
    "bertinetto": write_bertinetto,
    "torchmeta_cifar": write_torchmeta_cifar,
    "mini_npz": write_mini_npz,
    "mini_l2l": write_mini_l2l,
    "mini_metaoptnet": write_mini_metaoptnet,
    "mini_torchmeta": write_mini_torchmeta,
    "mini_csv": lambda root, d: write_mini_csv(root, d, ext="jpg"),
    "omniglot_zip": lambda root, d: write_omniglot(root, d, zipped=True),
    "tadam_npz": write_tadam_npz,
    "cub_tgz": write_cub_tgz,
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--full", action="store_true",
                      help="the real sizes: 600 images per class, 1,623 "
                      "Omniglot characters of 20 drawings")
  parser.add_argument("--layouts", default=",".join(FULL_WRITERS))
  args = parser.parse_args()
  n = 600 if args.full else 2
  for layout in args.layouts.split(","):
    root = os.path.join(args.out, layout)
    os.makedirs(root, exist_ok=True)
    if layout.startswith("mini"):
      data = fake_mini(per_class=n)
    elif layout.startswith("omniglot"):
      data = (fake_omniglot(964, 659, 20) if args.full else fake_omniglot())
    elif layout.startswith("cub"):
      data = fake_cub_full() if args.full else fake_cub()
    else:
      data = fake_cifar100(n_train=500 if args.full else 2,
                           n_test=100 if args.full else 1)
    FULL_WRITERS[layout](root, data)
    print(f"wrote {root}")


if __name__ == "__main__":
  main()
