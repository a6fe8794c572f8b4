"""The losses and metrics every learner and attack scores with."""

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Mean softmax cross-entropy over a batch with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: Array, labels: Array) -> Array:
  """Top-1 accuracy in [0, 1]."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
