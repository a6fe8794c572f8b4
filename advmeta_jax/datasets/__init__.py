"""Few-shot datasets by name: `load(name, split, ...)` returns a `ClassSplit`.

Registered names (see each module's docstring for source, class split, format):
  digits         offline default, shipped in scikit-learn (no download)
  cifar_fs       CIFAR-100 via tensorflow-datasets, Bertinetto 64/16/20 split
  omniglot       Omniglot via tensorflow-datasets
  mini_imagenet  MiniImageNet from a local --data_dir (Ravi-Larochelle split)
  image_folder   your own data: one folder per class
"""

from advmeta_jax.datasets.base import ClassSplit
from advmeta_jax.datasets.base import DatasetInfo
from advmeta_jax.datasets.base import from_class_lists
from advmeta_jax.datasets.base import info
from advmeta_jax.datasets.base import load
from advmeta_jax.datasets.base import names
from advmeta_jax.datasets.base import register
from advmeta_jax.datasets.base import resize_uint8
from advmeta_jax.datasets.base import SPLITS

# Importing a source module registers it.
from advmeta_jax.datasets import digits  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import image_folder  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import mini_imagenet  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import tfds_sources  # noqa: F401  pylint: disable=g-bad-import-order
