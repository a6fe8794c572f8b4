"""The prepared cache of slow formats: round trip, refusals, prepare_data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from advmeta_jax import datasets
from advmeta_jax.datasets import cache
from advmeta_jax.datasets import splits
from advmeta_jax.errors import DataError

import test_dataset_layouts as layouts  # pylint: disable=g-bad-import-order

CIFAR = layouts.fake_cifar100(n_train=2, n_test=1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def warnings(monkeypatch):
  seen = []
  monkeypatch.setattr(splits.logging, "warning",
                      lambda msg, *args: seen.append(msg % args))
  return seen


def _cache_folder(root, fmt="cifar100_python_tgz", size=32):
  return os.path.join(root, "advmeta_cache", f"cifar_fs-{fmt}-{size}px")


@pytest.fixture
def python_tgz(tmp_path):
  layouts.write_cifar100_python(str(tmp_path), CIFAR, tar=True)
  return str(tmp_path)


def test_round_trip(python_tgz, warnings):
  first = datasets.load("cifar_fs", "val", data_dir=python_tgz)
  assert sum("pickle" in w for w in warnings) == 1  # one archive, one warning
  folder = _cache_folder(python_tgz)
  with open(os.path.join(folder, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["format"] == "cifar100_python_tgz"
  assert manifest["image_size"] == 32
  # One pass over the archive cached all three splits.
  assert set(manifest["splits"]) == {"train", "val", "test"}
  val = manifest["splits"]["val"]
  assert val["classes"] == list(splits.CIFAR_FS_VAL_CLASSES)
  assert val["num_images"] == 48 and val["class_counts"] == [3] * 16
  assert val["image_shape"] == [32, 32, 3]
  assert set(val["files"]) == {"val_images.npy", "val_labels.npy"}
  assert all(len(f["sha256"]) == 64 for f in val["files"].values())
  warnings.clear()
  second = datasets.load("cifar_fs", "val", data_dir=python_tgz)
  assert not [w for w in warnings if "pickle" in w]  # the cache, not pickle
  assert isinstance(second.images, np.memmap)
  assert not second.images.flags.writeable
  assert np.array_equal(first.images, second.images)
  assert np.array_equal(first.labels, second.labels)
  assert first.class_names == second.class_names
  assert np.array_equal(second.images, layouts.cifar_fs_expected(CIFAR, "val"))


def test_cache_per_image_size(python_tgz):
  small = datasets.load("cifar_fs", "test", data_dir=python_tgz, image_size=8)
  assert small.images.shape == (60, 8, 8, 3)
  assert os.path.isdir(_cache_folder(python_tgz, size=8))


def test_cache_dir(python_tgz, tmp_path_factory):
  elsewhere = str(tmp_path_factory.mktemp("caches"))
  datasets.load("cifar_fs", "train", data_dir=python_tgz, cache_dir=elsewhere)
  assert not os.path.exists(os.path.join(python_tgz, "advmeta_cache"))
  (folder,) = os.listdir(elsewhere)
  assert folder.startswith("cifar_fs-cifar100_python_tgz-32px-")
  again = datasets.load("cifar_fs", "train", data_dir=python_tgz,
                        cache_dir=elsewhere)
  assert isinstance(again.images, np.memmap)


@pytest.mark.parametrize("damage,match", [
    ("truncate", "truncated or replaced"),
    ("edit", "sha256 of val_images.npy differs"),
    ("manifest", "cannot be read"),
    ("delete", "val_labels.npy is missing"),
    ("swap_names", "class names were edited"),
    ("drop_name", "names 15 classes for 16 labelled ones"),
])
def test_corrupted_cache_is_refused(python_tgz, damage, match):
  datasets.load("cifar_fs", "val", data_dir=python_tgz)
  folder = _cache_folder(python_tgz)
  images = os.path.join(folder, "val_images.npy")
  if damage == "truncate":
    with open(images, "r+b") as f:
      f.truncate(os.path.getsize(images) - 100)
  elif damage == "edit":
    with open(images, "r+b") as f:
      f.seek(-1, os.SEEK_END)
      last = f.read(1)
      f.seek(-1, os.SEEK_END)
      f.write(bytes([last[0] ^ 1]))
  elif damage == "manifest":
    with open(os.path.join(folder, "manifest.json"), "w") as f:
      f.write("{not json")
  elif damage in ("swap_names", "drop_name"):
    path = os.path.join(folder, "manifest.json")
    with open(path) as f:
      manifest = json.load(f)
    names = manifest["splits"]["val"]["classes"]
    if damage == "swap_names":
      names[0], names[1] = names[1], names[0]
    else:
      del names[-1]
    with open(path, "w") as f:
      json.dump(manifest, f)
  else:
    os.remove(os.path.join(folder, "val_labels.npy"))
  with pytest.raises(DataError, match=match) as e:
    datasets.load("cifar_fs", "val", data_dir=python_tgz)
  message = str(e.value)
  assert folder in message and "launch.prepare_data" in message
  assert "--rebuild" in message


def test_unwritable_cache_location_warns_and_loads(python_tgz, warnings):
  # A file where the cache folder would go: the cache cannot be written.
  with open(os.path.join(python_tgz, "advmeta_cache"), "w") as f:
    f.write("in the way")
  data = datasets.load("cifar_fs", "test", data_dir=python_tgz)
  assert np.array_equal(data.images, layouts.cifar_fs_expected(CIFAR, "test"))
  assert any("cannot write the cache" in w and "--cache_dir" in w
             for w in warnings)


def test_prepare_builds_then_verifies_and_rebuilds(python_tgz):
  reports = datasets.prepare("cifar_fs", data_dir=python_tgz)
  assert [r.split for r in reports] == ["train", "val", "test"]
  assert [r.built for r in reports] == [True, False, False]
  assert [r.num_classes for r in reports] == [64, 16, 20]
  assert reports[0].per_class == (3, 3)
  again = datasets.prepare("cifar_fs", data_dir=python_tgz)
  assert not any(r.built for r in again)
  # A damaged cache is refused; --rebuild replaces it.
  with open(os.path.join(_cache_folder(python_tgz), "train_images.npy"),
            "ab") as f:
    f.write(b"x")
  with pytest.raises(DataError, match="does not match its manifest"):
    datasets.prepare("cifar_fs", data_dir=python_tgz)
  rebuilt = datasets.prepare("cifar_fs", data_dir=python_tgz, rebuild=True)
  assert rebuilt[0].built


def test_fast_formats_are_not_cached(tmp_path):
  layouts.write_cifar100_binary(str(tmp_path), CIFAR)
  (report, *_) = datasets.prepare("cifar_fs", data_dir=str(tmp_path))
  assert report.cache is None and not report.built
  assert not os.path.exists(tmp_path / "advmeta_cache")


def test_remove_refuses_a_folder_that_is_not_a_cache(tmp_path):
  (tmp_path / "mine.txt").write_text("keep")
  with pytest.raises(DataError, match="not an advmeta cache"):
    cache.remove(str(tmp_path))
  # What an interrupted first run leaves (arrays, no manifest) is removed.
  partial = tmp_path / "partial"
  partial.mkdir()
  (partial / "train_images.npy").write_bytes(b"x")
  (partial / ".tmp-abc.npy").write_bytes(b"x")
  assert cache.remove(str(partial)) and not partial.exists()


def test_interrupted_build_is_rebuilt(python_tgz):
  folder = _cache_folder(python_tgz)
  os.makedirs(folder)
  with open(os.path.join(folder, "train_images.npy"), "wb") as f:
    f.write(b"half written")
  data = datasets.load("cifar_fs", "train", data_dir=python_tgz)
  assert np.array_equal(data.images,
                        layouts.cifar_fs_expected(CIFAR, "train"))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "launch.prepare_data", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def test_prepare_data_command(python_tgz, tmp_path_factory):
  result = _run("--dataset=cifar_fs", f"--data_dir={python_tgz}")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 3
  assert lines[0].startswith("cifar_fs/train: cifar100_python_tgz at ")
  assert "64 classes, 192 images (3 per class), 32x32x3 uint8" in lines[0]
  assert "cache built" in lines[0] and "cache verified" in lines[1]
  empty = str(tmp_path_factory.mktemp("empty"))
  result = _run("--dataset=cifar_fs", f"--data_dir={empty}")
  assert result.returncode == 2
  (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert "no known layout" in line and "cifar-100-binary" in line
  assert "Traceback" not in result.stderr
