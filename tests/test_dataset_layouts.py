"""Writers of small (or full-size) datasets in the exact layouts of the real files.

Used by the dataset tests (tiny data, fake pixels, the real file names, keys
and byte layouts) and, as a script, to write full-size synthetic data for the
load-time and peak-memory figures of docs/datasets.md:

    python tests/test_dataset_layouts.py --out=/tmp/synth --full

The writers follow the formats' own descriptions (the CIFAR-100 page, the
loaders of torchmeta, learn2learn, MetaOptNet and the Omniglot archives), not
advmeta's readers. This file holds no tests of its own beyond the writers'
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
    else:
      data = fake_cifar100(n_train=500 if args.full else 2,
                           n_test=100 if args.full else 1)
    FULL_WRITERS[layout](root, data)
    print(f"wrote {root}")


if __name__ == "__main__":
  main()
