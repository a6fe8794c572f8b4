"""BatchNorm's running averages (`--batchnorm=running`), as pytrees.

The averages PyTorch's BatchNorm2d keeps and normalizes with in `eval()`
mode (MetaOptNet's meta-test): their names, their start (mean 0,
variance 1), PyTorch's momentum update, and the merge that puts them beside
each BatchNorm's scale and offset, where `models.TransductiveBatchNorm`
finds and uses them. The statistics they average come from
`models.make_batch_stats_fn`.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

# `--batchnorm`: what BatchNorm normalizes with at meta-test ("batch": the
# statistics of the batch in front of it, as in training; "running": the
# running averages of training, PyTorch's `eval()`).
BATCHNORM_MODES = ("batch", "running")
# The flax collection a training forward pass writes each BatchNorm's batch
# statistics to when it is mutable (`make_batch_stats_fn`), and the names of
# the running averages in a BatchNorm's parameters at meta-test
# (`with_running_stats`, PyTorch's buffer names).
BATCH_STATS = "batch_stats"
RUNNING_MEAN = "running_mean"
RUNNING_VAR = "running_var"
# PyTorch's BatchNorm momentum: running = (1 − m)·running + m·batch.
BATCHNORM_MOMENTUM = 0.1


def init_running_stats(stats_fn: Callable[[dict, Array], dict], params,
                       image_shape: Sequence[int]):
  """The running averages before training, as PyTorch's: mean 0 and
  variance 1 for every BatchNorm `stats_fn` (`make_batch_stats_fn`)
  reports."""
  shapes = jax.eval_shape(stats_fn, params,
                          jnp.zeros((2, *image_shape), jnp.float32))
  return jax.tree_util.tree_map_with_path(
      lambda path, s: (jnp.zeros if path[-1].key == "mean" else jnp.ones)(
          s.shape, s.dtype), shapes)


def update_running_stats(running, batch, momentum: float = BATCHNORM_MOMENTUM):
  """PyTorch's update of BatchNorm's running averages by one batch's
  statistics: (1 − momentum)·running + momentum·batch, leaf by leaf."""
  return jax.tree.map(lambda r, b: (1.0 - momentum) * r + momentum * b,
                      running, batch)


def with_running_stats(params, running):
  """`params` with each BatchNorm's running averages beside its scale and
  offset (`RUNNING_MEAN`, `RUNNING_VAR`), so that `apply(params, x)`
  normalizes with them (`TransductiveBatchNorm`); `params` itself when
  `running` is None."""
  if running is None:
    return params
  merged = dict(params)
  for name, value in running.items():
    if isinstance(value, dict):
      merged[name] = with_running_stats(params[name], value)
    else:
      merged[{"mean": RUNNING_MEAN, "var": RUNNING_VAR}[name]] = value
  return merged
