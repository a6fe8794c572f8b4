"""A run's directory: checkpoints (orbax), its config and its metrics.

    workdir/
      config.json      the run's `config.Config` (nested sections)
      metrics.jsonl    one JSON line of training metrics per logged step
      checkpoints/<step>/
        state/         the `TrainState` (params, optimizer state, step)
        config/        the config the state was trained with (JSON)

The orbax `CheckpointManager` owns the save interval
(`loop.checkpoint_every`) and the retention (`loop.keep_checkpoints`);
orbax writes each checkpoint to a temporary directory and renames it when
complete, so a checkpoint on disk is whole.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import jax

from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError, DataError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def manager(workdir: str, *, save_interval_steps: int = 1,
            max_to_keep: Optional[int] = 3):
  """The orbax `CheckpointManager` of `workdir/checkpoints`.

  Args:
    workdir: the run's directory.
    save_interval_steps: `should_save(step)` is true every this many steps
      (and when JAX's preemption sync point says the job is preempted).
    max_to_keep: checkpoints kept (the newest); None keeps all.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  policies = ocp.checkpoint_managers
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
      options=ocp.CheckpointManagerOptions(
          # Every `save_interval_steps` steps, and at a preemption notice
          # (all hosts agree on the step); not at the first step.
          save_decision_policy=policies.AnySavePolicy([
              policies.FixedIntervalPolicy(save_interval_steps),
              policies.PreemptionCheckpointingPolicy()]),
          max_to_keep=max_to_keep, create=True))


def for_config(workdir: str, config: Config):
  """The manager with the save interval and retention of `config.loop`."""
  return manager(workdir, save_interval_steps=config.loop.checkpoint_every,
                 max_to_keep=config.loop.keep_checkpoints)


def save(mgr, state, config: Optional[Config] = None) -> None:
  """Saves `state` at its step (and the config beside it), waiting until the
  checkpoint is complete on disk. A step already saved is skipped."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = int(state.step)
  if mgr.latest_step() == step:
    return
  items = {"state": ocp.args.StandardSave(state)}
  if config is not None:
    items["config"] = ocp.args.JsonSave(config.to_dict())
  mgr.save(step, args=ocp.args.Composite(**items), force=True)
  mgr.wait_until_finished()


def restore(mgr, target, step: Optional[int] = None):
  """The state of the checkpoint at `step` (default: latest) in the shapes,
  dtypes and shardings of `target`, or None when there is none."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = mgr.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]


def restore_config(mgr, step: int) -> Config:
  """The config saved with the checkpoint at `step`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  restored = mgr.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore()))
  return Config.from_dict(restored["config"])


# --- config.json and metrics.jsonl -----------------------------------------

def load_config(workdir: str) -> Config:
  """The config of the run in `workdir` (its config.json)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ConfigError(f"no {CONFIG_FILE} in workdir {workdir!r}: is it the "
                      "--workdir of a training run?")
  with open(path) as f:
    return Config.from_dict(json.load(f))


def write_config(workdir: str, config: Config) -> None:
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)


def check_resumable(workdir: str, config: Config) -> None:
  """Refuses to resume the run in `workdir` with a config that changes its
  results (anything outside the loop and eval sections)."""
  diffs = config.resume_differences(load_config(workdir))
  if diffs:
    raise ConfigError(
        f"workdir {workdir!r} holds a run with a different config ("
        + "; ".join(diffs) + "). Resume with the same flags, or use a new "
        "--workdir.")


def load_metrics(workdir: str) -> List[Dict[str, float]]:
  """The logged training metrics of a run, one dict per logged step.

  Raises:
    DataError: `workdir` has no metrics file (not a training workdir, or no
      step was logged yet).
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise DataError(f"no training metrics in {workdir!r} (expected "
                    f"{METRICS_FILE}; is it the workdir of a training run?).")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, last_step: int) -> None:
  """Drops metric lines past `last_step` (written before an interruption)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l)["step"] <= last_step]
  with open(path, "w") as f:
    f.writelines(lines)

