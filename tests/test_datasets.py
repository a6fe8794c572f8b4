"""Tests of the dataset sources cifar_fs, omniglot, mini_imagenet, image_folder.

The tfds sources are tested two ways, both without TensorFlow:
  * under `tfds.testing.mock_data` (random examples; structural checks);
  * on tiny datasets really prepared in the array_record format in a temporary
    directory (builders subclassing tfds' own, fed PIL images or PNG bytes), so
    that the class mapping by name and the image conversion are checked on
    known data through the same code path as real data.
"""

import io
import json
import os
import pickle

import numpy as np
from PIL import Image
import pytest

from advmeta_jax import datasets
from advmeta_jax.datasets import mini_imagenet
from advmeta_jax.datasets import tfds_sources
from advmeta_jax.errors import DataError

tfds = pytest.importorskip("tensorflow_datasets")


def _mock_tfds(num_examples):
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE)


def _check_split(split, *, num_classes, image_size, channels):
  assert split.images.dtype == np.uint8
  assert split.images.shape[1:] == (image_size, image_size, channels)
  assert split.labels.dtype == np.int32
  assert split.num_classes == num_classes
  assert split.labels.min() == 0 and split.labels.max() == num_classes - 1
  assert np.all(split.class_counts() > 0)


# --- registry ---------------------------------------------------------------


def test_registry_lists_the_new_datasets():
  assert set(datasets.names()) >= {"digits", "cifar_fs", "omniglot",
                                   "mini_imagenet", "image_folder"}
  assert (datasets.info("cifar_fs").default_image_size,
          datasets.info("cifar_fs").channels) == (32, 3)
  assert (datasets.info("omniglot").default_image_size,
          datasets.info("omniglot").channels) == (28, 1)
  for name in ("mini_imagenet", "image_folder"):
    info = datasets.info(name)
    assert (info.default_image_size, info.channels,
            info.needs_data_dir) == (84, 3, True)
    with pytest.raises(DataError, match="--data_dir"):
      datasets.load(name, "train")


# --- CIFAR-FS ---------------------------------------------------------------


def test_cifar_fs_class_table():
  train = tfds_sources.CIFAR_FS_TRAIN_CLASSES
  val = tfds_sources.CIFAR_FS_VAL_CLASSES
  test = tfds_sources.CIFAR_FS_TEST_CLASSES
  assert (len(train), len(val), len(test)) == (64, 16, 20)
  assert len(set(train + val + test)) == 100
  assert len(tfds_sources.CIFAR100_FINE_LABELS) == 100
  # Spot checks of CIFAR-100's label-id order and of the split.
  assert tfds_sources.CIFAR100_FINE_LABELS[:3] == ("apple", "aquarium_fish",
                                                   "baby")
  assert tfds_sources.CIFAR100_FINE_LABELS[-1] == "worm"
  assert {"baby", "whale", "rocket"} <= set(test)
  assert {"beaver", "tractor"} <= set(val)


def test_cifar_fs_under_mock_data():
  with _mock_tfds(1500):  # random labels: 1500 examples cover all 100
    splits = {s: datasets.load("cifar_fs", s) for s in datasets.SPLITS}
    small = datasets.load("cifar_fs", "val", image_size=16)
  for s, n in (("train", 64), ("val", 16), ("test", 20)):
    _check_split(splits[s], num_classes=n, image_size=32, channels=3)
  assert splits["train"].class_names == tfds_sources.CIFAR_FS_TRAIN_CLASSES
  names = [set(splits[s].class_names) for s in datasets.SPLITS]
  assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
  # tfds train and test are pooled: every image of the 100 classes is used.
  assert sum(len(splits[s].labels) for s in datasets.SPLITS) == 2 * 1500
  _check_split(small, num_classes=16, image_size=16, channels=3)
  assert len(small.labels) == len(splits["val"].labels)


class _TinyCifar100(tfds.image_classification.Cifar100,
                    skip_registration=True):
  """CIFAR-100 with 3 train + 1 test images per class, shuffled label names.

  Every pixel of an image holds the CIFAR-100 label id of its class name, so a
  test can check that images end up in the right class.
  """
  name = "cifar100"
  NAMES = tuple(np.random.default_rng(0).permutation(
      tfds_sources.CIFAR100_FINE_LABELS))

  def _split_generators(self, dl_manager):
    del dl_manager
    self.info.features["label"].names = list(self.NAMES)
    self.info.features["coarse_label"].names = [str(i) for i in range(20)]
    return {"train": self._generate(3, "train"),
            "test": self._generate(1, "test")}

  def _generate(self, per_class, prefix):  # pylint: disable=arguments-renamed
    for label, class_name in enumerate(self.NAMES):
      value = tfds_sources.CIFAR100_FINE_LABELS.index(class_name)
      for i in range(per_class):
        key = f"{prefix}_{label}_{i}"
        image = Image.fromarray(np.full((32, 32, 3), value, np.uint8))
        yield key, {"id": key, "image": image, "label": label,
                    "coarse_label": label % 20}


class _TinyOmniglot(tfds.image_classification.Omniglot,
                    skip_registration=True):
  """Omniglot with 110 background and 5 evaluation characters, 1-bit PNGs."""
  name = "omniglot"
  NUM_BACKGROUND, NUM_EVALUATION = 110, 5

  def _split_generators(self, dl_manager):
    del dl_manager
    self.info.features["label"].names = [f"alpha_{i}" for i in range(1623)]
    self.info.features["alphabet"].names = [f"alpha_{i}" for i in range(50)]
    return {"train": self._generate(range(self.NUM_BACKGROUND)),
            "test": self._generate(range(
                self.NUM_BACKGROUND,
                self.NUM_BACKGROUND + self.NUM_EVALUATION))}

  def _generate(self, labels):  # pylint: disable=arguments-differ
    # White paper (1) with a black (0) square stroke in the middle, saved as
    # a 1-bit PNG like the original Omniglot files.
    page = np.full((105, 105), 255, np.uint8)
    page[40:65, 40:65] = 0
    buffer = io.BytesIO()
    Image.fromarray(page).convert("1").save(buffer, format="PNG")
    for label in labels:
      for i in range(2):
        yield f"{label}_{i}", {"image": buffer.getvalue(), "alphabet": 0,
                               "alphabet_char_id": label, "label": label}


def _prepare(builder_cls, data_dir):
  builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  _prepare(_TinyCifar100, data_dir)
  _prepare(_TinyOmniglot, data_dir)
  return str(data_dir)


def test_cifar_fs_maps_classes_by_name(tiny_tfds_dir):
  for split, classes in (("train", tfds_sources.CIFAR_FS_TRAIN_CLASSES),
                         ("val", tfds_sources.CIFAR_FS_VAL_CLASSES),
                         ("test", tfds_sources.CIFAR_FS_TEST_CLASSES)):
    data = datasets.load("cifar_fs", split, data_dir=tiny_tfds_dir)
    _check_split(data, num_classes=len(classes), image_size=32, channels=3)
    assert data.class_names == classes
    assert np.all(data.class_counts() == 4)  # 3 tfds train + 1 tfds test
    pixel = data.images[:, 0, 0, 0]
    assert [tfds_sources.CIFAR100_FINE_LABELS[v] for v in pixel] == [
        data.class_names[l] for l in data.labels]


def test_omniglot_under_mock_data():
  with _mock_tfds(300):
    splits = {s: datasets.load("omniglot", s) for s in datasets.SPLITS}
    small = datasets.load("omniglot", "test", image_size=14)
  assert splits["val"].num_classes == tfds_sources.OMNIGLOT_NUM_VAL_CLASSES
  for s in datasets.SPLITS:
    _check_split(splits[s], num_classes=splits[s].num_classes, image_size=28,
                 channels=1)
  assert not set(splits["train"].class_names) & set(splits["val"].class_names)
  # Every background image goes to exactly one of train and val.
  assert len(splits["train"].labels) + len(splits["val"].labels) == 300
  _check_split(small, num_classes=splits["test"].num_classes, image_size=14,
               channels=1)


def test_omniglot_split_and_stroke_polarity(tiny_tfds_dir):
  train = datasets.load("omniglot", "train", data_dir=tiny_tfds_dir)
  val = datasets.load("omniglot", "val", data_dir=tiny_tfds_dir)
  test = datasets.load("omniglot", "test", data_dir=tiny_tfds_dir)
  assert train.class_names == tuple(f"alpha_{i}" for i in range(10))
  assert val.class_names == tuple(f"alpha_{i}" for i in range(10, 110))
  assert test.class_names == tuple(f"alpha_{i}" for i in range(110, 115))
  for data in (train, val, test):
    _check_split(data, num_classes=data.num_classes, image_size=28, channels=1)
    assert np.all(data.class_counts() == 2)
    # Strokes bright on a dark background.
    assert np.all(data.images[:, 14, 14, 0] == 255)
    assert np.all(data.images[:, 0, 0, 0] == 0)


def test_tfds_not_prepared(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(DataError, match="cifar_fs: data_dir .*nowhere.* is not "
                     "a directory"):
    datasets.load("cifar_fs", "train", data_dir=missing)
  with pytest.raises(DataError) as e:
    datasets.load("omniglot", "test", data_dir=str(tmp_path))
  message = str(e.value)
  assert "no known layout" in message and str(tmp_path) in message
  assert "tfds build omniglot" in message and "array_record" in message
  assert "images_evaluation.zip" in message


# --- MiniImageNet -------------------------------------------------------------

WNIDS = {"train": ("n01", "n02", "n03"), "val": ("n11", "n12", "n13"),
         "test": ("n21", "n22", "n23")}
PER_CLASS = 4


def _images(split, size=10, channels=3):
  """`[12, size, size, channels]` uint8; pixel value = 10 * class + 3 + image.

  (The offset of 3 keeps `value // 10 == class` through JPEG rounding.)
  """
  values = [10 * c + 3 + i for c in range(3) for i in range(PER_CLASS)]
  shape = (size, size) + ((channels,) if channels else ())
  del split
  return np.stack([np.full(shape, v, np.uint8) for v in values])


def _labels(split):
  return [w for w in WNIDS[split] for _ in range(PER_CLASS)]


def _write_csv_format(root):
  os.makedirs(root / "images", exist_ok=True)
  for split in datasets.SPLITS:
    rows = ["filename,label"]
    for k, (image, wnid) in enumerate(zip(_images(split, 20), _labels(split))):
      name = f"{wnid}_{k:04d}.jpg" if k % 2 else f"{wnid}_{k:04d}.png"
      mode = ("L", "RGBA", "RGB")[k % 3]
      if name.endswith(".jpg") and mode == "RGBA":  # JPEG has no alpha
        mode = "RGB"
      Image.fromarray(image).convert(mode).save(root / "images" / name)
      rows.append(f"{name},{wnid}")
    (root / f"{split}.csv").write_text("\n".join(rows) + "\n")


def _write_npz_format(root, image_key="images", label_key="labels"):
  for split in datasets.SPLITS:
    np.savez(root / f"mini-imagenet-{split}.npz",
             **{image_key: _images(split), label_key: np.array(_labels(split))})


def _write_pickle_format(root):
  for split in datasets.SPLITS:
    class_dict = {w: list(range(c * PER_CLASS, (c + 1) * PER_CLASS))
                  for c, w in enumerate(WNIDS[split])}
    with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
      pickle.dump({"image_data": _images(split), "class_dict": class_dict}, f)


def _check_mini(data, split, image_size):
  _check_split(data, num_classes=3, image_size=image_size, channels=3)
  assert data.class_names == WNIDS[split]
  assert np.all(data.class_counts() == PER_CLASS)
  # Pixel value 10 * class + image: class ids follow the WordNet ids.
  assert np.array_equal(data.images[:, 0, 0, 0] // 10, data.labels)


@pytest.fixture
def pickle_warnings(monkeypatch):
  """The warnings that a pickle is read (other warnings are not collected)."""
  seen = []
  def warning(msg, *args):
    if "pickle" in msg:
      seen.append(msg % args)
  monkeypatch.setattr(mini_imagenet.logging, "warning", warning)
  return seen


def test_mini_imagenet_csv(tmp_path, pickle_warnings):
  _write_csv_format(tmp_path)
  for split in datasets.SPLITS:
    _check_mini(datasets.load("mini_imagenet", split, data_dir=str(tmp_path),
                              image_size=8), split, 8)
  # Default size: 84.
  data = datasets.load("mini_imagenet", "val", data_dir=str(tmp_path))
  assert data.images.shape == (12, 84, 84, 3)
  assert not pickle_warnings


@pytest.mark.parametrize("image_key,label_key",
                         [("images", "labels"), ("image_data", "targets"),
                          ("features", "labels")])
def test_mini_imagenet_npz(tmp_path, image_key, label_key, pickle_warnings):
  _write_npz_format(tmp_path, image_key, label_key)
  for split in datasets.SPLITS:
    data = datasets.load("mini_imagenet", split, data_dir=str(tmp_path),
                         image_size=10)
    _check_mini(data, split, 10)
    assert np.array_equal(data.images, _images(split))  # no resize at 10
  assert not pickle_warnings


def test_mini_imagenet_npz_int_and_greyscale(tmp_path):
  np.savez(tmp_path / "mini-imagenet-test.npz",
           images=_images("test", channels=None),
           labels=np.repeat([7, 3, 12], PER_CLASS))
  data = datasets.load("mini_imagenet", "test", data_dir=str(tmp_path),
                       image_size=10)
  assert data.images.shape == (12, 10, 10, 3)
  assert data.class_names == ("3", "7", "12")
  assert list(data.class_counts()) == [PER_CLASS] * 3
  assert np.array_equal(data.images[..., 0], data.images[..., 2])


def test_mini_imagenet_pickle_warns(tmp_path, pickle_warnings):
  _write_pickle_format(tmp_path)
  data = datasets.load("mini_imagenet", "train", data_dir=str(tmp_path),
                       image_size=10)
  _check_mini(data, "train", 10)
  assert len(pickle_warnings) == 1
  assert "arbitrary code" in pickle_warnings[0]
  assert "safer" in pickle_warnings[0]


def test_mini_imagenet_prefers_npz_over_pickle(tmp_path, pickle_warnings):
  _write_pickle_format(tmp_path)
  np.savez(tmp_path / "mini-imagenet-train.npz", images=_images("train") + 1,
           labels=np.array(_labels("train")))
  data = datasets.load("mini_imagenet", "train", data_dir=str(tmp_path),
                       image_size=10)
  assert np.array_equal(data.images, _images("train") + 1)
  assert not pickle_warnings


def test_mini_imagenet_missing_dir_and_no_format(tmp_path):
  with pytest.raises(DataError, match="is not a directory"):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path / "nope"))
  (tmp_path / "readme.txt").write_text("hi")
  with pytest.raises(DataError) as e:
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))
  for expected in ("train.csv", "mini-imagenet-train.npz",
                   "mini-imagenet-cache-train.pkl", "readme.txt"):
    assert expected in str(e.value)


def test_mini_imagenet_csv_errors(tmp_path):
  _write_csv_format(tmp_path)
  # An image named in the CSV is missing.
  os.remove(tmp_path / "images" / "n01_0001.jpg")
  with pytest.raises(DataError, match="1 of the 12 image files.*n01_0001.jpg"):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))
  # A corrupt image file.
  (tmp_path / "images" / "n11_0001.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(DataError, match="cannot decode image file.*n11_0001.jpg"):
    datasets.load("mini_imagenet", "val", data_dir=str(tmp_path))
  # A wrong header.
  (tmp_path / "test.csv").write_text("file,wnid\nn21_0000.png,n21\n")
  with pytest.raises(DataError, match="header 'filename,label'"):
    datasets.load("mini_imagenet", "test", data_dir=str(tmp_path))


def test_mini_imagenet_csv_without_images_folder(tmp_path):
  (tmp_path / "train.csv").write_text("filename,label\na.jpg,n01\n")
  with pytest.raises(DataError, match="images"):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))


@pytest.mark.parametrize("images,match", [
    (np.zeros((12, 10, 10, 2), np.uint8), "shape"),
    (np.zeros((12, 10), np.uint8), "shape"),
    (np.zeros((12, 10, 10, 3), np.float32), "uint8"),
])
def test_mini_imagenet_npz_bad_images(tmp_path, images, match):
  np.savez(tmp_path / "mini-imagenet-train.npz", images=images,
           labels=np.array(_labels("train")))
  with pytest.raises(DataError, match=match):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))


def test_mini_imagenet_npz_bad_labels_and_keys(tmp_path):
  path = tmp_path / "mini-imagenet-train.npz"
  np.savez(path, images=_images("train"), labels=np.zeros(5, np.int64))
  with pytest.raises(DataError, match=r"shape \[12\]"):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))
  np.savez(path, pictures=_images("train"), labels=np.array(_labels("train")))
  with pytest.raises(DataError, match="pictures"):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))
  np.savez(path, images=_images("train"),
           labels=np.array(_labels("train"), dtype=object))
  with pytest.raises(DataError, match="Object arrays are not loaded"):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))
  path.write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(DataError, match="mini-imagenet-train.npz"):
    datasets.load("mini_imagenet", "train", data_dir=str(tmp_path))


def test_mini_imagenet_bad_pickle(tmp_path, pickle_warnings):
  path = tmp_path / "mini-imagenet-cache-val.pkl"
  path.write_bytes(b"\x80\x04garbage")
  with pytest.raises(DataError, match="cannot unpickle.*cache-val.pkl"):
    datasets.load("mini_imagenet", "val", data_dir=str(tmp_path))
  with open(path, "wb") as f:
    pickle.dump({"images": _images("val")}, f)
  with pytest.raises(DataError, match="'image_data'.*'class_dict'"):
    datasets.load("mini_imagenet", "val", data_dir=str(tmp_path))
  with open(path, "wb") as f:
    pickle.dump({"image_data": _images("val"),
                 "class_dict": {"n11": [0, 1, 99]}}, f)
  with pytest.raises(DataError, match="outside 0..11"):
    datasets.load("mini_imagenet", "val", data_dir=str(tmp_path))
  assert pickle_warnings  # warned before each attempt


# --- image_folder -------------------------------------------------------------


def _write_class(folder, n, value, mode="RGB", ext="png"):
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    image = Image.fromarray(np.full((9 + i, 7, 3), value, np.uint8))
    image.convert(mode).save(os.path.join(folder, f"img{i}.{ext}"))


def test_image_folder_split_folders(tmp_path):
  _write_class(tmp_path / "train" / "cat", 3, 10, mode="L")
  _write_class(tmp_path / "train" / "ant", 2, 20, ext="jpg")
  _write_class(tmp_path / "test" / "dog", 2, 30, mode="RGBA")
  _write_class(tmp_path / "test" / "emu", 1, 40, ext="bmp")
  (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
  train = datasets.load("image_folder", "train", data_dir=str(tmp_path),
                        image_size=12)
  _check_split(train, num_classes=2, image_size=12, channels=3)
  assert train.class_names == ("ant", "cat")  # sorted folder names
  assert list(train.class_counts()) == [2, 3]
  cat = train.images[train.labels == 1]
  assert np.all(cat == 10)  # greyscale replicated to RGB
  test = datasets.load("image_folder", "test", data_dir=str(tmp_path))
  _check_split(test, num_classes=2, image_size=84, channels=3)
  val = datasets.load("image_folder", "val", data_dir=str(tmp_path),
                      image_size=12)
  assert val.num_classes == 0 and val.images.shape == (0, 12, 12, 3)


def test_image_folder_splits_json(tmp_path):
  for i, c in enumerate(["a", "b", "c", "d", "e"]):
    _write_class(tmp_path / c, 2, 10 * i, ext="gif" if c == "e" else "png")
  (tmp_path / "splits.json").write_text(json.dumps(
      {"train": ["b", "a"], "val": ["c"], "test": ["d", "e"]}))
  train = datasets.load("image_folder", "train", data_dir=str(tmp_path),
                        image_size=8)
  assert train.class_names == ("b", "a")  # the JSON order
  assert np.all(train.images[train.labels == 0] == 10)
  val = datasets.load("image_folder", "val", data_dir=str(tmp_path),
                      image_size=8)
  _check_split(val, num_classes=1, image_size=8, channels=3)
  test = datasets.load("image_folder", "test", data_dir=str(tmp_path),
                       image_size=8)
  _check_split(test, num_classes=2, image_size=8, channels=3)


def test_image_folder_class_in_two_splits(tmp_path):
  _write_class(tmp_path / "train" / "cat", 1, 0)
  _write_class(tmp_path / "test" / "cat", 1, 0)
  with pytest.raises(DataError, match="'cat' is in both the 'train' and"):
    datasets.load("image_folder", "test", data_dir=str(tmp_path))
  json_dir = tmp_path / "json"
  _write_class(json_dir / "cat", 1, 0)
  (json_dir / "splits.json").write_text(json.dumps(
      {"train": ["cat"], "test": ["cat"]}))
  with pytest.raises(DataError, match="'cat' is in both"):
    datasets.load("image_folder", "train", data_dir=str(json_dir))


def test_image_folder_errors(tmp_path):
  with pytest.raises(DataError, match="is not a directory"):
    datasets.load("image_folder", "train", data_dir=str(tmp_path / "nope"))
  _write_class(tmp_path / "train" / "cat", 1, 0)
  with pytest.raises(DataError, match="test.*does not exist.*splits.json"):
    datasets.load("image_folder", "train", data_dir=str(tmp_path))
  os.makedirs(tmp_path / "test" / "empty")
  with pytest.raises(DataError, match="holds no image files"):
    datasets.load("image_folder", "test", data_dir=str(tmp_path))
  (tmp_path / "test" / "empty" / "bad.png").write_bytes(b"\x89PNG broken")
  with pytest.raises(DataError, match="cannot decode image file.*bad.png"):
    datasets.load("image_folder", "test", data_dir=str(tmp_path))


def test_image_folder_splits_json_errors(tmp_path):
  _write_class(tmp_path / "cat", 1, 0)
  splits = tmp_path / "splits.json"
  splits.write_text(json.dumps({"train": ["cat"]}))
  with pytest.raises(DataError, match="no 'test' key"):
    datasets.load("image_folder", "train", data_dir=str(tmp_path))
  splits.write_text(json.dumps({"train": ["cat"], "test": ["dog"]}))
  with pytest.raises(DataError, match="class folder .*dog.* does not exist"):
    datasets.load("image_folder", "test", data_dir=str(tmp_path))
  splits.write_text(json.dumps({"train": ["cat"], "tset": ["dog"]}))
  with pytest.raises(DataError, match="unknown keys \\['tset'\\]"):
    datasets.load("image_folder", "train", data_dir=str(tmp_path))
  splits.write_text("{not json")
  with pytest.raises(DataError, match="cannot read .*splits.json"):
    datasets.load("image_folder", "train", data_dir=str(tmp_path))
