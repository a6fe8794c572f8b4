"""`digits`: the offline default dataset, shipped inside scikit-learn.

scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits"
test set: 1,797 greyscale 8×8 images of the digits 0-9 written by 43 people
(about 180 per class), stored in the `scikit-learn` wheel itself, so loading
needs no network. It is the quickstart's and the tests' dataset.

Class split (fixed, by digit; no class is shared between splits):
  train: 0 1 2 3 4 (5 classes, 901 images)
  val:   none     (the dataset has only 10 classes; `val` is an empty split)
  test:  5 6 7 8 9 (5 classes, 896 images)

With five meta-train classes, every 5-way meta-training task draws the same five
digits with labels permuted per task, so the learner must adapt from the
support set to name them; meta-test tasks hold five digits never seen in
meta-training. Images are upsampled (bilinear) from 8×8 to 16×16 by default so
that conv4's four 2×2 max-pools leave a 1×1 map (8×8 would pool to nothing).
Pixel values 0-16 are scaled to 0-255.
"""

import gzip
import importlib.util
import os

import numpy as np

from advmeta_jax.datasets import base

TRAIN_CLASSES = (0, 1, 2, 3, 4)
VAL_CLASSES = ()
TEST_CLASSES = (5, 6, 7, 8, 9)
_SPLIT_CLASSES = {"train": TRAIN_CLASSES, "val": VAL_CLASSES,
                  "test": TEST_CLASSES}


def _sklearn_digits():
  """`(images, target)` as `sklearn.datasets.load_digits()` gives them
  (`[1797, 8, 8]` float64 in 0-16, int labels), read from the wheel's
  `digits.csv.gz` as that function reads it, without importing scikit-learn
  (about a second of a launch's start); through scikit-learn where the
  file is not there."""
  spec = importlib.util.find_spec("sklearn")
  path = (os.path.join(os.path.dirname(spec.origin), "datasets", "data",
                       "digits.csv.gz")
          if spec is not None and spec.origin else None)
  if path is None or not os.path.isfile(path):
    from sklearn.datasets import load_digits as sk_load_digits  # pylint: disable=g-import-not-at-top
    raw = sk_load_digits()
    return raw.images, raw.target
  with gzip.open(path, mode="rt", encoding="utf-8") as f:
    data = np.loadtxt(f, delimiter=",")
  return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


@base.register("digits", default_image_size=16, channels=1,
               description="scikit-learn's handwritten digits, shipped in the "
               "wheel (offline): train digits 0-4, test digits 5-9, 16x16.")
def load_digits(split, *, data_dir=None, image_size=16):
  """Loads a class split of scikit-learn's digits. `data_dir` is not used."""
  del data_dir
  raw_images, target = _sklearn_digits()
  images = np.rint(raw_images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  images = base.resize_uint8(images, image_size)
  classes = _SPLIT_CLASSES[split]
  name = f"digits/{split}"
  if not classes:
    return base.ClassSplit(images=images[:0], labels=np.zeros((0,), np.int32),
                           class_names=(), name=name)
  return base.from_class_lists(images, target, classes, name)
