"""Meta-learners as outer losses, and their registry.

A learner is one pure function

    outer_loss(params, task, key, config) -> (loss, aux)

of the meta-parameters θ, ONE task (`episodes.Task` without the task axis), a
PRNG key and a static `LearnerConfig`. `aux` is a dict of scalars (metrics).
The train step (`training.make_train_step`) batches it over tasks with
`jax.vmap` and averages. A new learner is one function plus one `register`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

import jax

from advmeta_jax import maml
from advmeta_jax.episodes import Task
from advmeta_jax.errors import ConfigError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
  """Static hyperparameters of a learner (hashable: safe as a jit constant).

  Attributes:
    apply_fn: the model, `(params, images) -> logits`.
    inner_lr: α, the inner-loop step size.
    inner_steps: inner steps in meta-training.
    first_order: FOMAML (no gradient through inner gradients).
  """
  apply_fn: Callable[[dict, Array], Array]
  inner_lr: float = 0.01
  inner_steps: int = 5
  first_order: bool = False

  def __post_init__(self):
    if not self.inner_lr > 0:
      raise ConfigError(f"inner_lr must be > 0, got {self.inner_lr}.")
    if int(self.inner_steps) != self.inner_steps or self.inner_steps < 1:
      raise ConfigError(
          f"inner_steps must be an integer >= 1, got {self.inner_steps}.")


OuterLoss = Callable[[dict, Task, Array, LearnerConfig],
                     Tuple[Array, Dict[str, Array]]]
_REGISTRY: Dict[str, OuterLoss] = {}


def register(name: str):
  """Decorator registering an outer loss under `name` (the --learner value)."""
  def wrap(fn: OuterLoss) -> OuterLoss:
    _REGISTRY[name] = fn
    return fn
  return wrap


def names() -> Tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def get(name: str) -> OuterLoss:
  """The outer loss registered as `name`; a clear error for unknown names."""
  if name not in _REGISTRY:
    raise ConfigError(
        f"unknown learner {name!r}; choose one of: {', '.join(names())}.")
  return _REGISTRY[name]


def adapt_to_support(params, task: Task, config: LearnerConfig,
                     num_steps: int = None):
  """θ' from the task's clean support set (the shared first half of MAML)."""
  return maml.adapt(config.apply_fn, params, task.support_images,
                    task.support_labels, inner_lr=config.inner_lr,
                    num_steps=config.inner_steps if num_steps is None
                    else num_steps,
                    first_order=config.first_order)


@register("maml")
def maml_loss(params, task: Task, key: Array, config: LearnerConfig):
  """MAML (Finn et al. 2017): L(θ', Q_clean) with θ' adapted on the clean support.

  Returns:
    `(query cross-entropy, {"query_accuracy", "support_loss"})`.
  """
  del key  # MAML draws no randomness.
  adapted, inner = adapt_to_support(params, task, config)
  logits = config.apply_fn(adapted, task.query_images)
  loss = maml.cross_entropy(logits, task.query_labels)
  return loss, {"query_accuracy": maml.accuracy(logits, task.query_labels),
                "support_loss": inner["support_loss"][0]}
