"""FC100, tieredImageNet and CUB, read end to end from each exact layout.

Small files are written in each real layout (`test_dataset_layouts`: fake
pixels, the real names, keys and byte layouts; no network) and every split is
loaded through `datasets.load(name, split, data_dir=...)`: the published class
split (FC100 60/20/20 with no superclass in two splits, tieredImageNet
351/97/160, CUB 100/50/50), uint8 [N, H, W, 3], the same images whichever
layout they came from, and one clear line for broken files.
"""

import os
import pickle

import numpy as np
import pytest

from advmeta_jax import datasets
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

import test_dataset_layouts as layouts  # pylint: disable=g-bad-import-order

SPLITS = datasets.SPLITS


@pytest.fixture(autouse=True)
def warnings(monkeypatch):
  """Collects absl warnings (small fake data warns about its counts)."""
  seen = []
  monkeypatch.setattr(splits.logging, "warning",
                      lambda msg, *args: seen.append(msg % args))
  return seen


def _one_line(e):
  assert "\n" not in str(e.value)
  return str(e.value)


# --- FC100 ------------------------------------------------------------------------

CIFAR = layouts.fake_cifar100(n_train=1, n_test=1)

FC100_WRITERS = {
    "cifar100_binary": layouts.write_cifar100_binary,
    "cifar100_binary_tgz": lambda r, p: layouts.write_cifar100_binary(
        r, p, tar=True),
    "cifar100_python": layouts.write_cifar100_python,
    "cifar100_python_tgz": lambda r, p: layouts.write_cifar100_python(
        r, p, tar=True),
    "torchmeta": layouts.write_torchmeta_fc100,
    "tadam_npz": layouts.write_tadam_npz,
}


@pytest.fixture(scope="module")
def fc100_dirs(tmp_path_factory):
  dirs = {}
  for name, write in FC100_WRITERS.items():
    root = tmp_path_factory.mktemp(name)
    write(str(root), CIFAR)
    dirs[name] = str(root)
  return dirs


def test_fc100_split_is_tadams_by_superclass():
  coarse = splits.FC100_SUPERCLASSES
  assert [len(coarse[s]) for s in SPLITS] == [12, 4, 4]
  assert len(set(coarse["train"] + coarse["val"] + coarse["test"])) == 20
  ids = {s: {splits.CIFAR100_COARSE_LABELS.index(c) for c in coarse[s]}
         for s in SPLITS}
  assert ids == layouts.TADAM_CLASS_SPLIT
  assert [len(splits.FC100_SPLITS[s]) for s in SPLITS] == [60, 20, 20]


def _by_class(images, per_class=2):
  """The images of each class (runs of `per_class`) in byte order."""
  groups = images.reshape(-1, per_class, *images.shape[1:])
  return np.stack([g[np.lexsort(g.reshape(per_class, -1).T[::-1])]
                   for g in groups])


@pytest.mark.parametrize("layout", sorted(FC100_WRITERS))
def test_fc100_every_layout(fc100_dirs, layout, warnings):
  superclasses = {}
  for split in SPLITS:
    data = datasets.load("fc100", split, data_dir=fc100_dirs[layout])
    assert data.class_names == splits.FC100_SPLITS[split]
    assert data.images.dtype == np.uint8
    assert data.images.shape == (2 * data.num_classes, 32, 32, 3)
    assert list(data.class_counts()) == [2] * data.num_classes
    expected = layouts.fc100_expected(CIFAR, split)
    if layout == "tadam_npz":   # TADAM shuffles a split's images
      data_images, expected = _by_class(data.images), _by_class(expected)
    else:
      data_images = data.images
    assert np.array_equal(data_images, expected)
    superclasses[split] = {splits.CIFAR100_COARSE_OF[c]
                           for c in data.class_names}
  assert [len(superclasses[s]) for s in SPLITS] == [12, 4, 4]
  for a in SPLITS:   # no superclass in two splits
    for b in SPLITS:
      assert a == b or not superclasses[a] & superclasses[b]
  assert not [w for w in warnings if "class list differs" in w]
  assert any("600 images" in w for w in warnings)  # small fake data


def test_fc100_reads_the_folder_cifar_fs_reads(fc100_dirs):
  root = fc100_dirs["cifar100_binary"]
  fc100 = datasets.load("fc100", "test", data_dir=root)
  cifar_fs = datasets.load("cifar_fs", "test", data_dir=root)
  assert fc100.num_classes == 20 and cifar_fs.num_classes == 20
  assert set(fc100.class_names) != set(cifar_fs.class_names)


def test_fc100_archive_errors_name_fc100(tmp_path):
  folder = layouts.write_cifar100_binary(str(tmp_path), CIFAR)
  path = os.path.join(folder, "train.bin")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 10)
  with pytest.raises(DataError) as e:
    datasets.load("fc100", "train", data_dir=str(tmp_path))
  message = _one_line(e)
  assert message.startswith("fc100: ") and path in message
  assert "truncated" in message


def test_fc100_needs_a_data_dir():
  with pytest.raises(DataError, match="'fc100' is read from a local "
                     "directory: pass --data_dir"):
    datasets.load("fc100", "train")


# --- tieredImageNet -------------------------------------------------------------------

TIERED = layouts.fake_tiered(per_class=1)

TIERED_WRITERS = {
    "png_pkl": layouts.write_tiered_png_pkl,
    "npz": layouts.write_tiered_npz,
    "torchmeta": layouts.write_tiered_torchmeta,
}


@pytest.fixture(scope="module")
def tiered_dirs(tmp_path_factory):
  dirs = {}
  for name, write in TIERED_WRITERS.items():
    root = tmp_path_factory.mktemp(f"tiered_{name}")
    write(str(root), TIERED)
    dirs[name] = str(root)
  return dirs


@pytest.mark.parametrize("layout", sorted(TIERED_WRITERS))
def test_tiered_imagenet_every_layout(tiered_dirs, layout, warnings):
  for split in SPLITS:
    data = datasets.load("tiered_imagenet", split, data_dir=tiered_dirs[layout])
    images, ids, _, names, _ = TIERED[split]
    assert data.num_classes == {"train": 351, "val": 97, "test": 160}[split]
    assert data.class_names == tuple(names)
    assert data.images.dtype == np.uint8 and data.images.shape[1:] == (84, 84,
                                                                       3)
    assert np.array_equal(data.labels, ids)
    # The same RGB pixels from the PNGs, the BGR npz and the HDF5.
    assert np.array_equal(data.images, images)
  assert not [w for w in warnings if "classes, not the" in w]
  assert not [w for w in warnings if "categories, not the" in w]
  assert any("images, not the published 448695" in w for w in warnings)


def test_tiered_imagenet_png_pickle_is_cached(tiered_dirs):
  root = tiered_dirs["png_pkl"]
  first = datasets.load("tiered_imagenet", "val", data_dir=root)
  cache = os.path.join(root, "tiered-imagenet", "advmeta_cache",
                       "tiered_imagenet-png_pkl-84px")
  assert os.path.isfile(os.path.join(cache, "manifest.json"))
  assert os.path.isfile(os.path.join(cache, "val_images.npy"))
  again = datasets.load("tiered_imagenet", "val", data_dir=root)
  assert isinstance(again.images, np.memmap) or not again.images.flags.owndata
  assert np.array_equal(first.images, again.images)


def test_tiered_imagenet_groups_images_by_class(tmp_path):
  # Files whose images are not grouped by class still load grouped.
  images, ids, general, names, categories = TIERED["val"]
  order = np.random.default_rng(0).permutation(len(ids))
  data = {"val": (images[order], ids[order], general[order], names,
                  categories)}
  layouts.write_tiered_png_pkl(str(tmp_path), data)
  split = datasets.load("tiered_imagenet", "val", data_dir=str(tmp_path))
  assert np.array_equal(split.labels, ids)
  assert np.array_equal(split.images, images)


def test_tiered_imagenet_corrupt_png(tmp_path):
  base = layouts.write_tiered_png_pkl(str(tmp_path), {"test": TIERED["test"]})
  path = os.path.join(base, "test_images_png.pkl")
  with open(path, "rb") as f:
    pngs = pickle.load(f, encoding="latin1")
  pngs[7] = pngs[7][:40]
  layouts.py2_pickle(pngs, path)
  with pytest.raises(DataError) as e:
    datasets.load("tiered_imagenet", "test", data_dir=str(tmp_path))
  message = _one_line(e)
  assert path in message and "item 7" in message and "corrupt" in message


def test_tiered_imagenet_truncated_labels(tmp_path):
  base = layouts.write_tiered_png_pkl(str(tmp_path), {"val": TIERED["val"]})
  path = os.path.join(base, "val_labels.pkl")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(DataError) as e:
    datasets.load("tiered_imagenet", "val", data_dir=str(tmp_path))
  message = _one_line(e)
  assert "cannot unpickle" in message and path in message


def test_tiered_imagenet_labels_and_images_disagree(tmp_path):
  images, ids, general, names, categories = TIERED["val"]
  base = layouts.write_tiered_png_pkl(str(tmp_path), {"val": TIERED["val"]})
  layouts.py2_pickle(
      [np.frombuffer(layouts._png(im), np.uint8) for im in images[:-1]],  # pylint: disable=protected-access
      os.path.join(base, "val_images_png.pkl"))
  with pytest.raises(DataError) as e:
    datasets.load("tiered_imagenet", "val", data_dir=str(tmp_path))
  assert f"holds {len(ids) - 1} images" in _one_line(e)
  del general, names, categories


def test_tiered_imagenet_missing_labels_file(tmp_path):
  base = layouts.write_tiered_png_pkl(str(tmp_path), {"train": TIERED["val"]})
  os.remove(os.path.join(base, "train_labels.pkl"))
  with pytest.raises(DataError) as e:
    datasets.load("tiered_imagenet", "train", data_dir=str(tmp_path))
  message = _one_line(e)
  assert "no known layout" in message
  assert "train_images_png.pkl with train_labels.pkl" in message


# --- CUB --------------------------------------------------------------------------------

CUB = layouts.fake_cub(per_class=1)

CUB_WRITERS = {
    "cub_folder": layouts.write_cub_folder,
    "cub_tgz": layouts.write_cub_tgz,
    "torchmeta": layouts.write_cub_torchmeta,
}


@pytest.fixture(scope="module")
def cub_dirs(tmp_path_factory):
  dirs = {}
  for name, write in CUB_WRITERS.items():
    root = tmp_path_factory.mktemp(f"cub_{name}")
    write(str(root), CUB)
    dirs[name] = str(root)
  return dirs


def test_cub_split_is_chen_et_als_rule():
  s = splits.CUB_SPLITS
  assert [len(s[x]) for x in SPLITS] == [100, 50, 50]
  assert len(set(s["train"] + s["val"] + s["test"])) == 200
  # The first and last classes of torchmeta's assets/cub/{split}.json.
  assert s["train"][:2] == ("001.Black_footed_Albatross", "003.Sooty_Albatross")
  assert s["val"][:2] == ("002.Laysan_Albatross", "006.Least_Auklet")
  assert s["test"][:2] == ("004.Groove_billed_Ani", "008.Rhinoceros_Auklet")
  assert (s["train"][-1], s["val"][-1], s["test"][-1]) == (
      "199.Winter_Wren", "198.Rock_Wren", "200.Common_Yellowthroat")


@pytest.fixture(scope="module")
def cub_loaded(cub_dirs):
  return {(layout, split): datasets.load("cub", split, data_dir=root)
          for layout, root in cub_dirs.items() for split in SPLITS}


@pytest.mark.parametrize("layout", sorted(CUB_WRITERS))
def test_cub_every_layout(cub_loaded, layout):
  seen = set()
  for split in SPLITS:
    data = cub_loaded[layout, split]
    assert data.class_names == splits.CUB_SPLITS[split]
    assert data.images.dtype == np.uint8
    assert data.images.shape == (data.num_classes, 84, 84, 3)
    assert not seen & set(data.class_names)
    seen |= set(data.class_names)
    # The same pixels whichever layout held the JPEGs.
    assert np.array_equal(data.images,
                          cub_loaded["cub_folder", split].images)
  assert len(seen) == 200


def test_cub_is_cached_once_for_all_splits(cub_dirs, cub_loaded):
  del cub_loaded
  cache = os.path.join(cub_dirs["cub_tgz"], "advmeta_cache", "cub-cub_tgz-84px")
  for split in SPLITS:
    assert os.path.isfile(os.path.join(cache, f"{split}_images.npy"))


def test_cub_image_size(cub_dirs):
  data = datasets.load("cub", "val", data_dir=cub_dirs["cub_folder"],
                       image_size=32)
  assert data.images.shape == (50, 32, 32, 3)


def test_cub_missing_image(tmp_path):
  base = layouts.write_cub_folder(str(tmp_path), CUB)
  gone = os.path.join(base, "images", "002.Laysan_Albatross")
  os.remove(os.path.join(gone, os.listdir(gone)[0]))
  with pytest.raises(DataError) as e:
    datasets.load("cub", "val", data_dir=str(tmp_path))
  message = _one_line(e)
  assert "1 of the 200 image files listed in" in message
  assert "002.Laysan_Albatross" in message


def test_cub_folder_without_classes_txt(tmp_path):
  base = layouts.write_cub_folder(str(tmp_path), CUB)
  os.remove(os.path.join(base, "classes.txt"))
  with pytest.raises(DataError) as e:
    datasets.load("cub", "train", data_dir=str(tmp_path))
  message = _one_line(e)
  assert "classes.txt" in message and "does not exist" in message


def test_cub_truncated_tgz(tmp_path):
  path = layouts.write_cub_tgz(str(tmp_path), CUB)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(DataError) as e:
    datasets.load("cub", "test", data_dir=str(tmp_path))
  message = _one_line(e)
  assert path in message and "truncated or corrupt" in message


def test_cub_corrupt_jpeg(tmp_path):
  base = layouts.write_cub_folder(str(tmp_path), CUB)
  folder = os.path.join(base, "images", "004.Groove_billed_Ani")
  path = os.path.join(folder, os.listdir(folder)[0])
  with open(path, "wb") as f:
    f.write(b"not a jpeg")
  with pytest.raises(DataError) as e:
    datasets.load("cub", "test", data_dir=str(tmp_path))
  message = _one_line(e)
  assert path in message and "cannot decode" in message


@pytest.mark.parametrize("name,expected", [
    ("fc100", ["cifar-100-binary/{train,test}.bin",
               "cifar100/fc100/train_labels.json", "few-shot-train.npz",
               "cifar-100-python.tar.gz"]),
    ("tiered_imagenet", ["train_images.npz with train_labels.pkl",
                         "train_images_png.pkl",
                         "tieredimagenet/train_data.hdf5"]),
    ("cub", ["CUB_200_2011/images/<class>/*.jpg", "CUB_200_2011.tgz",
             "cub/train_data.hdf5"]),
])
def test_no_known_layout_lists_what_was_looked_for(tmp_path, name, expected):
  (tmp_path / "notes.txt").write_text("hi")
  with pytest.raises(DataError) as e:
    datasets.load(name, "train", data_dir=str(tmp_path))
  message = _one_line(e)
  assert "no known layout" in message and "notes.txt" in message
  for looked_for in expected:
    assert looked_for in message


def test_the_registry_describes_them():
  for name, size in (("fc100", 32), ("tiered_imagenet", 84), ("cub", 84)):
    info = datasets.info(name)
    assert (info.default_image_size, info.channels, info.needs_data_dir,
            info.caches) == (size, 3, True, True)
