"""Learners: how a support set becomes a classifier (adaptations), and the
meta-loss of a task (objectives), registered by name.

    maml.py         MAML's inner loop (`adapt`)
    heads.py        Prototypical and Matching Networks' classifiers
    fce.py          Matching Networks' full context embeddings
    r2d2.py         R2-D2's ridge-regression head and model
    svm.py          MetaOptNet's Crammer–Singer SVM head (its dual QP)
    adaptations.py  the adaptation kinds, each building its own model
    objectives.py   clean, MAML-AD, ADML, AQ, TAFL outer losses
    trades.py       R-MAML's TRADES objective
    gaussian.py     Gaussian noise on the query (randomized smoothing)
    registry.py     learner = adaptation × objective, by name
"""

from advmeta_jax.learners import adaptations
from advmeta_jax.learners import fce
from advmeta_jax.learners import heads
from advmeta_jax.learners import maml
from advmeta_jax.learners import objectives
from advmeta_jax.learners import r2d2
from advmeta_jax.learners import svm
from advmeta_jax.learners import registry
from advmeta_jax.learners import gaussian  # pylint: disable=g-bad-import-order  (after trades: registration order)
from advmeta_jax.learners import trades
from advmeta_jax.learners.registry import Bound
from advmeta_jax.learners.registry import get
from advmeta_jax.learners.registry import Learner
from advmeta_jax.learners.registry import names
from advmeta_jax.learners.registry import Pieces
from advmeta_jax.learners.registry import check_batchnorm
from advmeta_jax.learners.registry import register
from advmeta_jax.learners.registry import robust_learners
from advmeta_jax.learners.registry import ROBUST_LOSSES
from advmeta_jax.learners.objectives import ADVERSARIAL_IMAGES
from advmeta_jax.learners.objectives import TAFL_REDUCTIONS
from advmeta_jax.learners.objectives import TAFL_WEIGHTINGS
from advmeta_jax.learners.objectives import tafl_weights
from advmeta_jax.learners.adaptations import Adaptation
from advmeta_jax.learners.adaptations import gradient_adaptation
from advmeta_jax.learners.adaptations import matching_adaptation
from advmeta_jax.learners.adaptations import prototype_adaptation

from advmeta_jax import config as _config  # pylint: disable=g-bad-import-order
_config.register_choices("learner", names)
_config.register_choices("robust", lambda: ROBUST_LOSSES)
_config.register_choices("tafl_reduction", lambda: TAFL_REDUCTIONS)
_config.register_choices("tafl_weighting", lambda: TAFL_WEIGHTINGS)
_config.register_choices("fce", lambda: fce.FCE_VARIANTS)
_config.register_choices("trades_kl_on", lambda: trades.KL_SETS)
_config.register_choices("r2d2_head", lambda: tuple(r2d2.HEADS))
_config.register_check("learner", get)
_config.register_check("batchnorm", check_batchnorm)
