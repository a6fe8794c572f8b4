"""Errors of the local dataset layouts: one line that names the file and problem."""

import gzip
import os
import pickle
import zipfile

import numpy as np
import pytest

from advmeta_jax import datasets
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

import test_dataset_layouts as layouts  # pylint: disable=g-bad-import-order

CIFAR = layouts.fake_cifar100(n_train=1, n_test=1)


@pytest.fixture(autouse=True)
def warnings(monkeypatch):
  seen = []
  monkeypatch.setattr(splits.logging, "warning",
                      lambda msg, *args: seen.append(msg % args))
  return seen


def _load(name, split, root, **kw):
  return datasets.load(name, split, data_dir=str(root), **kw)


def _one_line(e):
  assert "\n" not in str(e.value)
  return str(e.value)


@pytest.mark.parametrize("name,expected", [
    ("cifar_fs", ["cifar-100-binary/{train,test}.bin", "cifar-100-python",
                  "cifar100/data.hdf5", "splits/bertinetto",
                  "CIFAR_FS_{train,val,test}.pickle", "tfds build cifar100"]),
    ("mini_imagenet", ["train.csv", "mini-imagenet-train.npz",
                       "miniimagenet/train_data.hdf5",
                       "mini-imagenet-cache-train.pkl",
                       "miniImageNet_category_split_"]),
    ("omniglot", ["images_background.zip", "images_background/<alphabet>",
                  "tfds build omniglot"]),
])
def test_no_known_layout_lists_what_was_looked_for(tmp_path, name, expected):
  (tmp_path / "notes.txt").write_text("hi")
  (tmp_path / "stuff").mkdir()
  with pytest.raises(DataError) as e:
    _load(name, "train", tmp_path)
  message = _one_line(e)
  assert "no known layout" in message and str(tmp_path) in message
  for looked_for in expected:
    assert looked_for in message
  assert "notes.txt, stuff/" in message  # what the folder holds


def test_missing_data_dir(tmp_path):
  for name in ("cifar_fs", "mini_imagenet", "omniglot"):
    with pytest.raises(DataError, match=f"{name}: data_dir .* is not a "
                       "directory"):
      _load(name, "train", tmp_path / "nope")


def test_truncated_bin(tmp_path):
  folder = layouts.write_cifar100_binary(str(tmp_path), CIFAR)
  path = os.path.join(folder, "train.bin")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 10)
  with pytest.raises(DataError) as e:
    _load("cifar_fs", "train", tmp_path)
  message = _one_line(e)
  assert path in message and "3,074-byte records" in message
  assert "truncated" in message


def test_truncated_tar_gz(tmp_path):
  path = layouts.write_cifar100_binary(str(tmp_path), CIFAR, tar=True)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(DataError) as e:
    _load("cifar_fs", "train", tmp_path)
  message = _one_line(e)
  assert path in message and "truncated or corrupt" in message


def test_not_a_gzip(tmp_path):
  (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"not a tar")
  with pytest.raises(DataError, match="cannot open .*cifar-100-python.tar.gz' "
                     "as a tar archive") as e:
    _load("cifar_fs", "val", tmp_path)
  _one_line(e)


def test_bad_pickle(tmp_path):
  folder = layouts.write_cifar100_python(str(tmp_path), CIFAR)
  path = os.path.join(folder, "test")
  with open(path, "r+b") as f:
    f.truncate(200)
  with pytest.raises(DataError) as e:
    _load("cifar_fs", "test", tmp_path)
  message = _one_line(e)
  assert f"cannot unpickle {path!r}" in message and "truncated" in message


def test_pickle_with_code_is_refused(tmp_path):
  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))
  with open(tmp_path / "CIFAR_FS_val.pickle", "wb") as f:
    pickle.dump({"data": Evil(), "labels": []}, f)
  with pytest.raises(DataError) as e:
    _load("cifar_fs", "val", tmp_path)
  message = _one_line(e)
  assert "refusing" in message and "system" in message


def test_pickle_with_wrong_keys(tmp_path):
  layouts.py2_pickle({"images": np.zeros((2, 32, 32, 3), np.uint8)},
                     str(tmp_path / "CIFAR_FS_test.pickle"))
  with pytest.raises(DataError, match="must hold a dict with 'data'.*"
                     r"keys \['images'\]"):
    _load("cifar_fs", "test", tmp_path)


def test_bad_hdf5(tmp_path):
  base = layouts.write_torchmeta_cifar(str(tmp_path), CIFAR)
  path = os.path.join(base, "data.hdf5")
  with open(path, "r+b") as f:
    f.truncate(1000)
  with pytest.raises(DataError) as e:
    _load("cifar_fs", "train", tmp_path)
  message = _one_line(e)
  assert f"cannot open {path!r} as HDF5" in message


def test_hdf5_missing_class(tmp_path):
  import h5py  # pylint: disable=g-import-not-at-top
  mini = layouts.fake_mini(per_class=1, size=8)
  base = layouts.write_mini_torchmeta(str(tmp_path), mini)
  path = os.path.join(base, "val_data.hdf5")
  gone = splits.MINI_IMAGENET_VAL_CLASSES[3]
  with h5py.File(path, "r+") as f:
    del f[f"datasets/{gone}"]
  with pytest.raises(DataError, match=f"has no dataset 'datasets/{gone}'"):
    _load("mini_imagenet", "val", tmp_path, image_size=8)


def test_bad_zip_member(tmp_path):
  data = layouts.fake_omniglot(n_background=101, n_evaluation=1, drawings=1)
  layouts.write_omniglot(str(tmp_path), data, zipped=True)
  path = str(tmp_path / "images_evaluation.zip")
  # Corrupt the stored bytes of the one member (its CRC no longer matches).
  with zipfile.ZipFile(path) as z:
    (info,) = [i for i in z.infolist() if not i.is_dir()]
  with open(path, "r+b") as f:
    f.seek(info.header_offset + 30 + len(info.filename) + 5)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(DataError) as e:
    _load("omniglot", "test", tmp_path)
  message = _one_line(e)
  assert path in message and info.filename in message


def test_not_a_zip(tmp_path):
  (tmp_path / "images_background.zip").write_bytes(gzip.compress(b"x"))
  with pytest.raises(DataError, match="cannot open .*images_background.zip' "
                     "as a zip archive"):
    _load("omniglot", "train", tmp_path)


def test_omniglot_unexpected_file_name(tmp_path):
  folder = tmp_path / "images_evaluation" / "Alphabet" / "character01"
  folder.mkdir(parents=True)
  (folder / "drawing.png").write_bytes(b"")
  with pytest.raises(DataError, match="characterNN/<id>_<nn>.png"):
    _load("omniglot", "test", tmp_path)


def test_bertinetto_class_list_differs_warns(tmp_path, warnings):
  base = layouts.write_bertinetto(str(tmp_path), CIFAR)
  # Swap a val class into test and a test class into val.
  split_dir = os.path.join(base, "splits", "bertinetto")
  val = list(splits.CIFAR_FS_VAL_CLASSES)
  test = list(splits.CIFAR_FS_TEST_CLASSES)
  val[0], test[0] = test[0], val[0]
  for name, classes in (("val", val), ("test", test)):
    with open(os.path.join(split_dir, f"{name}.txt"), "w") as f:
      f.write("\n".join(classes) + "\n")
  data = _load("cifar_fs", "val", tmp_path)
  assert set(data.class_names) == set(val)
  (warning, *_) = [w for w in warnings if "class list differs" in w]
  assert "cifar_fs/val" in warning and "missing ['beaver']" in warning
  assert "unexpected ['whale']" in warning


def test_metaoptnet_class_missing_warns(tmp_path, warnings):
  layouts.write_metaoptnet_cifar(str(tmp_path), CIFAR)
  path = tmp_path / "CIFAR_FS_test.pickle"
  with open(path, "rb") as f:
    data = pickle.load(f, encoding="latin1")
  rose = splits.CIFAR100_FINE_LABELS.index("rose")
  keep = np.asarray(data["labels"]) != rose
  layouts.py2_pickle({"data": data["data"][keep],
                      "labels": list(np.asarray(data["labels"])[keep])},
                     str(path))
  test = _load("cifar_fs", "test", tmp_path)
  assert test.num_classes == 19 and "rose" not in test.class_names
  assert any("missing ['rose']" in w for w in warnings)


def test_cifar_binary_label_out_of_range(tmp_path):
  folder = layouts.write_cifar100_binary(str(tmp_path), CIFAR)
  path = os.path.join(folder, "test.bin")
  with open(path, "r+b") as f:
    f.seek(1)
    f.write(bytes([250]))
  with pytest.raises(DataError, match="fine label 250"):
    _load("cifar_fs", "test", tmp_path)
