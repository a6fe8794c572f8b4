"""Every on-disk layout of cifar_fs, mini_imagenet and omniglot, read end to end.

Small files are written in each exact layout (`test_dataset_layouts`: fake
pixels, the real names, keys and byte layouts; no network) and every split is
loaded through `datasets.load(name, split, data_dir=...)`: the right classes in
the right split, the right counts, uint8 [N, H, W, C], and the same images
whichever format they came from.
"""

import os

import numpy as np
import pytest

from advmeta_jax import datasets
from advmeta_jax.datasets import splits

import test_dataset_layouts as layouts  # pylint: disable=g-bad-import-order

SPLITS = datasets.SPLITS


@pytest.fixture(autouse=True)
def quiet_warnings(monkeypatch):
  """Collects absl warnings (small fake data warns about its counts)."""
  seen = []
  monkeypatch.setattr(splits.logging, "warning",
                      lambda msg, *args: seen.append(msg % args))
  return seen


# --- CIFAR-FS -------------------------------------------------------------------

CIFAR = layouts.fake_cifar100(n_train=2, n_test=1)

CIFAR_WRITERS = {
    "cifar100_binary": layouts.write_cifar100_binary,
    "cifar100_binary_tgz": lambda r, p: layouts.write_cifar100_binary(
        r, p, tar=True),
    "cifar100_python": layouts.write_cifar100_python,
    "cifar100_python_tgz": lambda r, p: layouts.write_cifar100_python(
        r, p, tar=True),
    "bertinetto": layouts.write_bertinetto,
    "metaoptnet": layouts.write_metaoptnet_cifar,
    "torchmeta": layouts.write_torchmeta_cifar,
}


@pytest.fixture(scope="module")
def cifar_dirs(tmp_path_factory):
  dirs = {}
  for name, write in CIFAR_WRITERS.items():
    root = tmp_path_factory.mktemp(name)
    write(str(root), CIFAR)
    dirs[name] = str(root)
  return dirs


@pytest.mark.parametrize("layout", sorted(CIFAR_WRITERS))
def test_cifar_fs_every_layout(cifar_dirs, layout, quiet_warnings):
  for split in SPLITS:
    data = datasets.load("cifar_fs", split, data_dir=cifar_dirs[layout])
    assert data.class_names == splits.CIFAR_FS_SPLITS[split]
    assert data.images.dtype == np.uint8
    assert data.images.shape == (3 * data.num_classes, 32, 32, 3)
    assert list(data.class_counts()) == [3] * data.num_classes
    # The same images, class by class, whichever format they came from.
    assert np.array_equal(data.images, layouts.cifar_fs_expected(CIFAR, split))
  assert not [w for w in quiet_warnings if "class list differs" in w]
  assert any("600 images" in w for w in quiet_warnings)  # small fake data


def test_cifar_fs_found_one_level_below(cifar_dirs, tmp_path):
  # DIR holding the format's folder (cifar-100-binary/) and the folder itself.
  parent = cifar_dirs["cifar100_binary"]
  inner = os.path.join(parent, "cifar-100-binary")
  a = datasets.load("cifar_fs", "val", data_dir=parent)
  b = datasets.load("cifar_fs", "val", data_dir=inner)
  assert np.array_equal(a.images, b.images)
  # learn2learn's root: DIR/cifarfs/cifar100/{data,splits}.
  layouts.write_bertinetto(str(tmp_path / "cifarfs"), CIFAR)
  c = datasets.load("cifar_fs", "val", data_dir=str(tmp_path))
  assert np.array_equal(a.images, c.images)


def test_cifar_fs_image_size(cifar_dirs):
  data = datasets.load("cifar_fs", "test", data_dir=cifar_dirs["torchmeta"],
                       image_size=16)
  assert data.images.shape == (60, 16, 16, 3)
  direct = datasets.load("cifar_fs", "test",
                         data_dir=cifar_dirs["cifar100_binary"], image_size=16)
  assert np.array_equal(data.images, direct.images)


def test_cifar_fs_preference_order(tmp_path, quiet_warnings):
  # The binary archive (no pickle) wins over the python archive beside it.
  layouts.write_cifar100_python(str(tmp_path), CIFAR)
  layouts.write_cifar100_binary(str(tmp_path), CIFAR)
  datasets.load("cifar_fs", "train", data_dir=str(tmp_path))
  assert not [w for w in quiet_warnings if "pickle" in w]
  assert not os.path.exists(tmp_path / "advmeta_cache")  # read directly


# --- MiniImageNet ----------------------------------------------------------------

MINI = layouts.fake_mini(per_class=2, size=84)

MINI_WRITERS = {
    "csv": layouts.write_mini_csv,
    "npz": layouts.write_mini_npz,
    "learn2learn": layouts.write_mini_l2l,
    "metaoptnet": layouts.write_mini_metaoptnet,
    "torchmeta": layouts.write_mini_torchmeta,
}


@pytest.fixture(scope="module")
def mini_dirs(tmp_path_factory):
  dirs = {}
  for name, write in MINI_WRITERS.items():
    root = tmp_path_factory.mktemp(f"mini_{name}")
    write(str(root), MINI)
    dirs[name] = str(root)
  return dirs


@pytest.mark.parametrize("layout", sorted(MINI_WRITERS))
def test_mini_imagenet_every_layout(mini_dirs, layout, quiet_warnings):
  for split in SPLITS:
    data = datasets.load("mini_imagenet", split, data_dir=mini_dirs[layout])
    assert data.class_names == splits.MINI_IMAGENET_SPLITS[split]
    assert data.images.dtype == np.uint8
    assert data.images.shape == (2 * data.num_classes, 84, 84, 3)
    assert list(data.class_counts()) == [2] * data.num_classes
    images, _ = MINI[split]
    assert np.array_equal(data.images, images)
  assert not [w for w in quiet_warnings if "class list differs" in w]


def test_mini_imagenet_torchmeta_root_and_resize(mini_dirs):
  # torchmeta's root holds miniimagenet/; the folder itself works too.
  inner = os.path.join(mini_dirs["torchmeta"], "miniimagenet")
  a = datasets.load("mini_imagenet", "test", data_dir=inner, image_size=42)
  b = datasets.load("mini_imagenet", "test", data_dir=mini_dirs["npz"],
                    image_size=42)
  assert a.images.shape == (40, 42, 42, 3)
  assert np.array_equal(a.images, b.images)


def test_mini_imagenet_class_list_differs_warns(tmp_path, quiet_warnings):
  images, wnids = MINI["val"]
  wnids = wnids.copy()
  wnids[wnids == splits.MINI_IMAGENET_VAL_CLASSES[0]] = "n99999999"
  np.savez(tmp_path / "mini-imagenet-val.npz", images=images, labels=wnids)
  data = datasets.load("mini_imagenet", "val", data_dir=str(tmp_path))
  assert "n99999999" in data.class_names
  (warning,) = [w for w in quiet_warnings if "class list differs" in w]
  assert repr(splits.MINI_IMAGENET_VAL_CLASSES[0]) in warning
  assert "'n99999999'" in warning


# --- Omniglot --------------------------------------------------------------------

OMNI = layouts.fake_omniglot(n_background=105, n_evaluation=5, drawings=2)


def _omniglot_expected(archive):
  """(class names sorted by character id, images [N,105,105,1] in order)."""
  by_id = {}
  for alphabet, character, file, _, image in OMNI[archive]:
    char_id = int(file.split("_")[0])
    by_id.setdefault(char_id, (layouts.omniglot_class_name(alphabet,
                                                          character), []))
    by_id[char_id][1].append((file, image))
  ordered = [by_id[k] for k in sorted(by_id)]
  names = [n for n, _ in ordered]
  images = [im for _, files in ordered for _, im in sorted(files)]
  return names, np.stack(images)


@pytest.fixture(scope="module", params=["zip", "folder"])
def omniglot_dir(tmp_path_factory, request):
  root = tmp_path_factory.mktemp(f"omniglot_{request.param}")
  layouts.write_omniglot(str(root), OMNI, zipped=request.param == "zip")
  return str(root)


def test_omniglot_split_names_and_images(omniglot_dir):
  names, images = _omniglot_expected("images_background")
  train = datasets.load("omniglot", "train", data_dir=omniglot_dir,
                        image_size=105)
  val = datasets.load("omniglot", "val", data_dir=omniglot_dir,
                      image_size=105)
  test = datasets.load("omniglot", "test", data_dir=omniglot_dir,
                       image_size=105)
  # Background characters sorted by id; the last 100 are val.
  assert train.class_names == tuple(names[:5])
  assert val.class_names == tuple(names[5:])
  assert np.array_equal(train.images, images[:10])
  assert np.array_equal(val.images, images[10:])
  test_names, test_images = _omniglot_expected("images_evaluation")
  assert test.class_names == tuple(test_names)
  assert np.array_equal(test.images, test_images)  # strokes bright
  for data in (train, val, test):
    assert data.images.dtype == np.uint8 and data.images.shape[1:] == (105,
                                                                      105, 1)
    assert np.all(data.class_counts() == 2)


def test_omniglot_default_size_matches_the_tfds_conversion(omniglot_dir):
  data = datasets.load("omniglot", "test", data_dir=omniglot_dir)
  assert data.images.shape == (10, 28, 28, 1)
  _, images = _omniglot_expected("images_evaluation")
  assert np.array_equal(data.images, datasets.resize_uint8(images, 28))
