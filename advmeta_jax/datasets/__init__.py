"""Few-shot datasets by name: `load(name, split, ...)` returns a `ClassSplit`.

Registered names (see each module's docstring for sources, class split and
the on-disk layouts it detects in `--data_dir`):
  digits         offline default, shipped in scikit-learn (no download)
  cifar_fs       CIFAR-FS (module `cifar_fs`): CIFAR-100 archives, Bertinetto's
                 PNGs, torchmeta, MetaOptNet or tfds; Bertinetto 64/16/20 split
  omniglot       Omniglot (module `omniglot`): the original zips, extracted
                 folders or tfds
  mini_imagenet  MiniImageNet (module `mini_imagenet`): CSV + images, npz,
                 torchmeta, learn2learn or MetaOptNet (Ravi-Larochelle split)
  fc100          FC100 (module `fc100`): CIFAR-100 archives, torchmeta or
                 TADAM's npz; split by superclass as Oreshkin et al. 60/20/20
  tiered_imagenet  tieredImageNet (module `tiered_imagenet`): Ren et al.'s
                 PNG pickles or npz, or torchmeta; 351/97/160 classes
  cub            CUB-200-2011 (module `cub`): the folder or tgz, or
                 torchmeta; Chen et al.'s 100/50/50 split
  image_folder   your own data: one folder per class

Slow formats are read once into a prepared cache (module `cache`);
`prepare(...)` (module `preparation`) does it ahead of time (`python -m launch.prepare_data`).
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
from advmeta_jax.datasets import cifar_fs  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import cub  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import digits  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import fc100  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import image_folder  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import mini_imagenet  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import omniglot  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import tfds_sources  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets import tiered_imagenet  # noqa: F401  pylint: disable=g-bad-import-order
from advmeta_jax.datasets.preparation import prepare  # pylint: disable=g-bad-import-order

from advmeta_jax import config as _config  # pylint: disable=g-bad-import-order
_config.register_choices("dataset", names,
                         describe=lambda name: info(name).description)
