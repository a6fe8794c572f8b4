"""N-way K-shot episodes (tasks), sampled on the accelerator from an explicit key.

A `ClassSplit` is moved to the device once (`EpisodeSource`, images as uint8)
and every batch of tasks is sampled by a jitted function of a key, so the input
pipeline is a few gathers on the device and never starves it.

A task: N classes drawn without replacement from the split, in random order
(so labels 0..N-1 are permuted per task); for each class K + Q distinct images,
the first K forming the support and the next Q the query, so support and query
never share an image. Images are ordered by label, class-major:
  support `[N*K, H, W, C]`, labels `[0]*K + [1]*K + ...`
  query   `[N*Q, H, W, C]`, labels `[0]*Q + [1]*Q + ...`
A batch of tasks adds a leading task axis: `[B, N*K, H, W, C]`.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.datasets.base import ClassSplit
from advmeta_jax.errors import ConfigError, DataError

Array = jax.Array


class Task(NamedTuple):
  """One task, or a batch of tasks with a leading task axis.

  Attributes:
    support_images: float32 `[N*K, H, W, C]` in [0, 1].
    support_labels: int32 `[N*K]`.
    query_images: float32 `[N*Q, H, W, C]` in [0, 1].
    query_labels: int32 `[N*Q]`.
  """
  support_images: Array
  support_labels: Array
  query_images: Array
  query_labels: Array


class EpisodeIndices(NamedTuple):
  """Which images of the split form a task (indices into `EpisodeSource.images`)."""
  classes: Array        # [N]      split class ids, label i is classes[i]
  support: Array        # [N, K]
  query: Array          # [N, Q]


class EpisodeSource(NamedTuple):
  """A class split on the device, arranged for sampling.

  Attributes:
    images: uint8 `[num_images, H, W, C]`.
    class_index: int32 `[num_classes, max_count]`: the image indices of each
      class, padded with 0 beyond `class_counts`.
    class_counts: int32 `[num_classes]`.
  """
  images: Array
  class_index: Array
  class_counts: Array

  @property
  def num_classes(self) -> int:
    return self.class_index.shape[0]

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.images.shape[1:])


def check_episode_shape(split: ClassSplit, *, n_way: int, k_shot: int,
                        q_query: int) -> None:
  """Raises a clear error when `split` cannot give N-way K-shot Q-query tasks."""
  for name, value, low in (("n_way", n_way, 2), ("k_shot", k_shot, 1),
                           ("q_query", q_query, 1)):
    if int(value) != value or value < low:
      raise ConfigError(f"{name} must be an integer >= {low}, got {value}.")
  if split.num_classes < n_way:
    raise DataError(
        f"n_way={n_way} is larger than the {split.num_classes} classes of "
        f"{split.name or 'this split'}; use n_way <= {split.num_classes}.")
  counts = split.class_counts()
  need = k_shot + q_query
  short = np.flatnonzero(counts < need)
  if short.size:
    c = short[0]
    raise DataError(
        f"{split.name or 'this split'}: class {split.class_names[c]!r} has "
        f"{counts[c]} images, fewer than k_shot + q_query = {need} "
        f"({short.size} classes are short; the smallest has {counts.min()}). "
        f"Lower k_shot or q_query to at most {counts.min()} images in all.")


def make_source(split: ClassSplit, device=None) -> EpisodeSource:
  """Moves `split` to the device in the layout the sampler reads."""
  counts = split.class_counts()
  max_count = int(counts.max()) if counts.size else 0
  class_index = np.zeros((split.num_classes, max_count), np.int32)
  order = np.argsort(split.labels, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  for c in range(split.num_classes):
    class_index[c, :counts[c]] = order[starts[c]:starts[c] + counts[c]]
  put = lambda a: jax.device_put(a, device)
  return EpisodeSource(images=put(split.images), class_index=put(class_index),
                       class_counts=put(counts.astype(np.int32)))


def sample_indices(key: Array, source: EpisodeSource, *, n_way: int,
                   k_shot: int, q_query: int) -> EpisodeIndices:
  """Draws which images form one task. Pure; jit- and vmap-able."""
  class_key, image_key = jax.random.split(key)
  classes = jax.random.permutation(class_key, source.num_classes)[:n_way]
  counts = source.class_counts[classes]                       # [N]
  max_count = source.class_index.shape[1]
  # A uniformly random subset of K+Q distinct images per class: the top K+Q of
  # i.i.d. uniform scores over the class's valid positions.
  scores = jax.random.uniform(image_key, (n_way, max_count))
  scores = jnp.where(jnp.arange(max_count)[None, :] < counts[:, None], scores,
                     -1.0)
  _, positions = jax.lax.top_k(scores, k_shot + q_query)      # [N, K+Q]
  picked = jnp.take_along_axis(source.class_index[classes], positions, axis=1)
  return EpisodeIndices(classes=classes, support=picked[:, :k_shot],
                        query=picked[:, k_shot:])


def gather_task(source: EpisodeSource, indices: EpisodeIndices) -> Task:
  """The images and labels of a task, float32 in [0, 1]."""
  n_way, k_shot = indices.support.shape
  q_query = indices.query.shape[1]

  def images(idx):
    x = source.images[idx.reshape(-1)]
    return x.astype(jnp.float32) / 255.0

  labels = lambda per_class: jnp.repeat(jnp.arange(n_way, dtype=jnp.int32),
                                        per_class)
  return Task(support_images=images(indices.support),
              support_labels=labels(k_shot),
              query_images=images(indices.query),
              query_labels=labels(q_query))


def sample_task(key: Array, source: EpisodeSource, *, n_way: int, k_shot: int,
                q_query: int) -> Task:
  """Samples one N-way K-shot Q-query task. Pure; jit- and vmap-able."""
  return gather_task(source, sample_indices(key, source, n_way=n_way,
                                            k_shot=k_shot, q_query=q_query))


def sample_tasks(key: Array, source: EpisodeSource, *, batch_size: int,
                 n_way: int, k_shot: int, q_query: int) -> Task:
  """Samples a batch of `batch_size` independent tasks (leading task axis)."""
  keys = jax.random.split(key, batch_size)
  return jax.vmap(lambda k: sample_task(k, source, n_way=n_way, k_shot=k_shot,
                                        q_query=q_query))(keys)


def make_sampler(source: EpisodeSource, *, batch_size: int, n_way: int,
                 k_shot: int, q_query: int, out_sharding=None):
  """A jitted `key -> Task` batch sampler bound to `source`.

  The source arrays are passed as arguments, not baked into the program as
  constants, so large datasets do not bloat compilation.
  """
  fn = jax.jit(
      lambda key, src: sample_tasks(key, src, batch_size=batch_size,
                                    n_way=n_way, k_shot=k_shot,
                                    q_query=q_query),
      out_shardings=out_sharding)
  return lambda key: fn(key, source)
