"""Meta-training: what a config builds, the train step, the loop, and the
run directory.

    builders.py     config → model + bound learner (+ the training attack)
    step.py         TrainState, the pure train step, the jitted iteration
    loop.py         `train`: resume, step, log, checkpoint, stop
    rundir.py       opening a run's directory, SIGTERM, `restore_run`
    checkpoints.py  config.json, metrics.jsonl, orbax checkpoints
    sharding.py     the device mesh over the task batch
    summaries.py    TensorBoard summaries (WORKDIR/tb) beside metrics.jsonl
"""

from advmeta_jax.training import builders
from advmeta_jax.training import checkpoints
from advmeta_jax.training import loop
from advmeta_jax.training import rundir
from advmeta_jax.training import sharding
from advmeta_jax.training import step
from advmeta_jax.training import summaries
from advmeta_jax.training.loop import train
from advmeta_jax.training.step import batch_outer_loss
from advmeta_jax.training.step import batch_value_and_grad
from advmeta_jax.training.step import combine_ignores_aux_gradient
from advmeta_jax.training.step import init_state
from advmeta_jax.training.step import jit_train_iteration
from advmeta_jax.training.step import jitted_train_iteration
from advmeta_jax.training.step import config_optimizer
from advmeta_jax.training.step import make_optimizer
from advmeta_jax.training.step import make_train_iteration
from advmeta_jax.training.step import make_train_step
from advmeta_jax.training.step import map_over_tasks
from advmeta_jax.training.step import run_keys
from advmeta_jax.training.step import TrainState
from advmeta_jax.training.builders import build
from advmeta_jax.training.builders import Built
from advmeta_jax.training.builders import check_disjoint
from advmeta_jax.training.builders import image_shape
from advmeta_jax.training.builders import load_split
from advmeta_jax.training.builders import make_train_attack
from advmeta_jax.training.rundir import open_run
from advmeta_jax.training.rundir import restore_run
from advmeta_jax.training.rundir import StopSignal
from advmeta_jax.training.summaries import read_scalars
from advmeta_jax.training.summaries import SummaryWriter
from advmeta_jax.training.checkpoints import CHECKPOINT_DIR
from advmeta_jax.training.checkpoints import CONFIG_FILE
from advmeta_jax.training.checkpoints import METRICS_FILE
from advmeta_jax.training.checkpoints import load_config
from advmeta_jax.training.checkpoints import load_metrics
from advmeta_jax.training.sharding import check_task_batch
from advmeta_jax.training.sharding import make_mesh
from advmeta_jax.config import Config
