"""The papers' experiments as configs, and the drivers that run them.

    base.py          `ExperimentConfig`, `PaperResult`, the registry
    adml.py          ADML Tables 1-4 (arXiv:1806.03316)
    tafl.py          TAFL Table 1 (ICPR 2020)
    digits.py        this project's offline digits tables
    reproduction.py  train, meta-test and report: one call each

Every module of this package other than base.py and reproduction.py is a
module of tables and is imported here, so a new table is one new module.
"""

import importlib
import pkgutil

from advmeta_jax.experiments.base import EXPERIMENTS
from advmeta_jax.experiments.base import ExperimentConfig
from advmeta_jax.experiments.base import get
from advmeta_jax.experiments.base import names
from advmeta_jax.experiments.base import PaperResult
from advmeta_jax.experiments.base import register
from advmeta_jax.experiments.base import SHRINK_PROTOCOL
from advmeta_jax.experiments.base import SHRINK_TRAIN

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
  if _module not in ("base", "reproduction"):
    importlib.import_module(f"{__name__}.{_module}")

from advmeta_jax.experiments import reproduction  # pylint: disable=g-import-not-at-top,wrong-import-position
from advmeta_jax.experiments.adml import ADML_RESULTS  # pylint: disable=g-import-not-at-top,wrong-import-position
from advmeta_jax.experiments.tafl import TAFL_RESULTS  # pylint: disable=g-import-not-at-top,wrong-import-position
