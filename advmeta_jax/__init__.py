"""advmeta_jax: adversarially robust meta-learning in JAX.

The library is layered; each folder imports only from the ones above it here:

    config/, errors.py   the settings of a run (import nothing of the library)
    datasets/            class splits read from the files users hold
    core/                conv4, losses, N-way K-shot episodes
    attacks/             FGSM, PGD, MI-FGSM, C&W, APGD, FAB, Square, AutoAttack
    learners/            adaptations × objectives (MAML, ADML, AQ, TAFL, ...)
    training/            build, train step, loop, checkpoints, sharding
    evaluation/          meta-test, protocol, reports, plots
    experiments/         the papers' tables as configs, reproduction drivers
    benchmarks/          measurement tools (never imported by the library)

The pieces compose as pure functions:

    from advmeta_jax import datasets, episodes, models, maml, learners, training

    split = datasets.load("digits", "train")               # a ClassSplit
    source = episodes.make_source(split)                    # on the device
    tasks = episodes.sample_tasks(key, source, batch_size=4, n_way=5,
                                  k_shot=1, q_query=15)     # [B, N*K, H, W, C]
    model = models.make_conv4(num_classes=5, filters=32, image_size=16)
    apply_fn = models.make_apply_fn(model)                  # (params, x) -> logits
    adapted, metrics = maml.adapt(apply_fn, params, x_support, y_support,
                                  inner_lr=0.01, num_steps=5)
    config = advmeta_jax.Config.make(learner="tafl", k_shot=5)  # flat names
    built = training.build(config)          # model + bound learner
    step = training.make_train_step(built.learner, training.make_optimizer(1e-3))
"""

from advmeta_jax import errors
from advmeta_jax import config
from advmeta_jax import datasets
from advmeta_jax import core
from advmeta_jax import attacks
from advmeta_jax import learners
from advmeta_jax import training
from advmeta_jax import evaluation
from advmeta_jax import experiments
from advmeta_jax.core import episodes
from advmeta_jax.core import losses
from advmeta_jax.core import models
from advmeta_jax.learners import adaptations
from advmeta_jax.learners import maml
from advmeta_jax.learners import objectives
from advmeta_jax.training import builders
from advmeta_jax.training import checkpoints
from advmeta_jax.training import sharding
from advmeta_jax.evaluation import plots
from advmeta_jax.evaluation import protocol
from advmeta_jax.evaluation import reports
from advmeta_jax.experiments import reproduction
from advmeta_jax.config import Config
from advmeta_jax.config import MetaConfig
from advmeta_jax.core.episodes import Task
from advmeta_jax.core.models import Conv4
from advmeta_jax.core.models import make_conv4
from advmeta_jax.errors import AdvMetaError
from advmeta_jax.errors import ConfigError
from advmeta_jax.errors import DataError
from advmeta_jax.errors import NonFiniteLossError
from advmeta_jax.evaluation import confidence_interval_95
from advmeta_jax.evaluation import meta_test
from advmeta_jax.learners import tafl_weights
from advmeta_jax.learners.maml import adapt
from advmeta_jax.training import make_train_step
from advmeta_jax.training import TrainState

__version__ = "0.1.0"
