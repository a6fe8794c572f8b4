"""R2-D2's closed-form ridge-regression classifier and its model.

R2-D2 (Bertinetto, Henriques, Torr & Vedaldi, "Meta-learning with
differentiable closed-form solvers", arXiv:1805.08136) fits, for each task, a
linear map W from the support embeddings X (`[S, D]`, S = N·K) to their
one-hot labels Y (`[S, N]`) by ridge regression, in closed form:

    W = argmin_W ‖XW − Y‖² + λ‖W‖² = (XᵀX + λI_D)⁻¹XᵀY        (primal, D×D)
      = Xᵀ(XXᵀ + λI_S)⁻¹Y                                       (Woodbury, S×S)

The two are equal (push-through identity); the Woodbury form solves an S×S
system, S = N·K (25 for 5-way 5-shot), much smaller than D (800 for conv4 on
84×84 images), so it is the one used. Two heads are built on it
(`--r2d2_head`, `HEADS`), each as its reference code runs it:

  metaoptnet  (the default) MetaOptNet's `R2D2Head` inside its
              `ClassificationHead` (Lee et al., "Meta-Learning with
              Differentiable Convex Optimization", arXiv:1904.03758; the head
              "Adversarially Robust Few-Shot Learning: A Meta-Learning
              Approach", arXiv:1910.00982, trains as R2-D2):
                  W = Xᵀ(XXᵀ + 50·I)⁻¹Y,   logits(x) = s·f(x)W,
              λ fixed at 50, no bias column, a learned scale s from 1.
  bertinetto  Bertinetto et al.'s own code (`RRNet` and `AdjustLayer`): a
              ones column is appended to X, X and Y are divided by √S, λ is
              fixed at 50:
                  X̃ = [X, 1]/√S,  Ỹ = Y/√S,  [w; b] = X̃ᵀ(X̃X̃ᵀ + 50·I)⁻¹Ỹ,
                  logits(x) = s·(f(x)w + b) + c,
              the query is not divided; s (the adjust layer's scale) starts
              at 1e-4 on MiniImageNet and at 10 elsewhere (their CIFAR-100 and
              Omniglot runs), c (its bias) at 0, both learned.

λ is a constant of the head, not a parameter. The offset c adds the same
number to every class's logit, so the softmax cross-entropy does not depend
on it (its gradient is 0); it is kept as that code has it.

The solve is differentiable (`jnp.linalg.solve`): the meta-gradient flows
through W into the support embeddings. A query attack differentiates through
f(x) with W fixed by the support; a support attack (adaptations.py,
`initial_logits`) scores the perturbed support under the W built from the
clean support, so it differentiates through f(x') only, not through the solve.

The model (`R2D2`) is the backbone's embedding (`--backbone`, conv4 by
default; R2-D2's own network is `conv4_wide`) plus the head's learned
scalars:

    params = {"embedding": {conv0, bn0, ..., bn3} (conv4's),
              "ridge": {"scale"} (metaoptnet) or {"scale", "bias"} (bertinetto)}

Its `__call__` returns the embeddings (as conv4's embedding does for the
metric learners); `scalars(params)` reads s and c (0 without a bias).
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError

Array = jax.Array


class Head(NamedTuple):
  """A ridge-regression head as its reference code builds it.

  Attributes:
    name: the `--r2d2_head` value.
    lam: λ, fixed (not learned).
    init_scale: the learned scale s at initialization, or a function of the
      dataset's name (`init_scale_for`).
    bias: a learned offset c after the scale (starts at 0).
    ones_column: append a column of ones to the support embeddings (the
      solve's last row of W is a per-class bias b).
    normalize: divide X (with its ones column) and Y by √S before the solve.
  """
  name: str
  lam: float
  init_scale: object
  bias: bool
  ones_column: bool
  normalize: bool

  def init_scale_for(self, dataset: str) -> float:
    """s at initialization on `dataset`."""
    if callable(self.init_scale):
      return float(self.init_scale(dataset))
    return float(self.init_scale)


# Bertinetto et al.'s scripts/train/experiments.sh: --base_learner.init_adj_scale
# 1e-4 for miniimagenet, 1e1 for cifar100 and 10 for omniglot.
def _bertinetto_init_scale(dataset: str) -> float:
  return 1e-4 if dataset == "mini_imagenet" else 10.0


HEADS = {
    "metaoptnet": Head("metaoptnet", lam=50.0, init_scale=1.0, bias=False,
                       ones_column=False, normalize=False),
    "bertinetto": Head("bertinetto", lam=50.0,
                       init_scale=_bertinetto_init_scale, bias=True,
                       ones_column=True, normalize=True),
}
DEFAULT_HEAD = "metaoptnet"


def get_head(name: str) -> Head:
  """The head `name` of `HEADS`.

  Raises:
    ConfigError: an unknown name, with the known ones.
  """
  if name not in HEADS:
    raise ConfigError(f"unknown r2d2_head {name!r}; choose one of: "
                      f"{', '.join(HEADS)}.")
  return HEADS[name]


def ridge_weights(support_embeddings: Array, targets: Array,
                  lam: Array) -> Array:
  """W = Xᵀ(XXᵀ + λI)⁻¹Y, the ridge solution by the Woodbury identity.

  Args:
    support_embeddings: X, `[S, D]`.
    targets: Y, `[S, N]` (one-hot labels).
    lam: λ > 0, a scalar.

  Returns:
    W, `[D, N]`.
  """
  x = support_embeddings
  gram = x @ x.T + lam * jnp.eye(x.shape[0], dtype=x.dtype)   # [S, S]
  return x.T @ jnp.linalg.solve(gram, targets.astype(x.dtype))


def ridge_weights_primal(support_embeddings: Array, targets: Array,
                         lam: Array) -> Array:
  """W = (XᵀX + λI)⁻¹XᵀY, the same solution by the D×D normal equations
  (the reference the Woodbury form is tested against)."""
  x = support_embeddings
  normal = x.T @ x + lam * jnp.eye(x.shape[1], dtype=x.dtype)  # [D, D]
  return jnp.linalg.solve(normal, x.T @ targets.astype(x.dtype))


def head_weights(head: Head, support_embeddings: Array,
                 targets: Array) -> Array:
  """The head's ridge solution from X `[S, D]` and one-hot Y `[S, N]`:
  W `[D, N]`, or `[D + 1, N]` (its last row the bias b) with a ones column.
  """
  x = support_embeddings
  y = targets.astype(x.dtype)
  if head.ones_column:
    x = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
  if head.normalize:
    root = jnp.sqrt(jnp.asarray(x.shape[0], x.dtype))
    x, y = x / root, y / root
  return ridge_weights(x, y, head.lam)


def head_logits(head: Head, query_embeddings: Array, weights: Array,
                scale: Array, bias: Array) -> Array:
  """s·f(x)W (metaoptnet) or s·(f(x)w + b) + c (bertinetto), `[Q, N]`."""
  if head.ones_column:
    scores = query_embeddings @ weights[:-1] + weights[-1]
  else:
    scores = query_embeddings @ weights
  return scale * scores + bias


def scalars(params) -> Tuple[Array, Array]:
  """(s, c) of R2-D2's parameters: the scale and the offset (0 for a head
  without a bias)."""
  ridge = params["ridge"]
  scale = ridge["scale"]
  return scale, ridge.get("bias", jnp.zeros((), scale.dtype))


class RidgeScalars(nn.Module):
  """The head's learned scalars: the scale s, and the offset c if it has one."""
  init_scale: float
  bias: bool

  @nn.compact
  def __call__(self):
    const = lambda v: nn.initializers.constant(v, jnp.float32)
    self.param("scale", const(self.init_scale), (), jnp.float32)
    if self.bias:
      self.param("bias", const(0.0), (), jnp.float32)


class R2D2(nn.Module):
  """A backbone's embedding and the head's learned scalars.

  `__call__` maps `[N, H, W, C]` images to `[N, D]` embeddings; the scalars
  are created with the parameters and read by `scalars(params)`.
  """
  embedding: nn.Module   # a backbone without its head (models.py)
  init_scale: float = 1.0
  bias: bool = False

  @nn.compact
  def __call__(self, x):
    RidgeScalars(self.init_scale, self.bias, name="ridge")()
    return self.embedding(x)


def make_r2d2(*, head: str = DEFAULT_HEAD, dataset: str = "digits",
              filters: int = 32, conv_impl: str = "matmul",
              image_size: int = 84, compute_dtype: str = "float32",
              backbone: str = "conv4", width: float = 1.0) -> R2D2:
  """R2-D2's model on `backbone`'s embedding (checked as
  `make_conv4_embedding`) with the scalars of `head` (`HEADS`), its scale
  started for `dataset`.

  Raises:
    ConfigError: a value that is not allowed, with what is allowed.
  """
  spec = get_head(head)
  return R2D2(embedding=models.make_conv4_embedding(
      filters=filters, conv_impl=conv_impl, image_size=image_size,
      compute_dtype=compute_dtype, backbone=backbone, width=width),
      init_scale=spec.init_scale_for(dataset),
      bias=spec.bias)
