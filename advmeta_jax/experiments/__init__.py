"""The papers' experiments as configs, and the drivers that run them.

    tables.py        one `ExperimentConfig` per paper table, the papers' numbers
    reproduction.py  train, meta-test and report: one call each
"""

from advmeta_jax.experiments import reproduction
from advmeta_jax.experiments import tables
from advmeta_jax.experiments.tables import ADML_RESULTS
from advmeta_jax.experiments.tables import ExperimentConfig
from advmeta_jax.experiments.tables import EXPERIMENTS
from advmeta_jax.experiments.tables import get
from advmeta_jax.experiments.tables import names
from advmeta_jax.experiments.tables import PaperResult
from advmeta_jax.experiments.tables import SHRINK_PROTOCOL
from advmeta_jax.experiments.tables import SHRINK_TRAIN
from advmeta_jax.experiments.tables import TAFL_RESULTS
