"""R2-D2's closed-form ridge-regression classifier and its model.

R2-D2 (Bertinetto, Henriques, Torr & Vedaldi, ICLR 2019, "Meta-learning with
differentiable closed-form solvers") fits, for each task, a linear map W from
the support embeddings X (`[S, D]`, S = N·K) to their one-hot labels Y
(`[S, N]`) by ridge regression, in closed form:

    W = argmin_W ‖XW − Y‖² + λ‖W‖² = (XᵀX + λI_D)⁻¹XᵀY        (primal, D×D)
      = Xᵀ(XXᵀ + λI_S)⁻¹Y                                       (Woodbury, S×S)

The two are equal (push-through identity); the Woodbury form solves an S×S
system, S = N·K (25 for 5-way 5-shot), much smaller than D (800 for conv4 on
84×84 images), so it is the one used. A query x is classified by

    logits(x) = α·f(x)W + β

with learned scalars α (scale), β (offset) and λ > 0 (λ = exp(log λ)): the
meta-parameters of the solver, learned with the embedding f. β adds the same
number to every class's logit, so the softmax cross-entropy does not depend on
it (its gradient is 0); it is kept as the paper writes the calibration.

The solve is differentiable (`jnp.linalg.solve`): the meta-gradient flows
through W into the support embeddings and the solver's λ, and an attack on
the support differentiates through the solve too.

The model (`R2D2`) is conv4's embedding plus the three scalars:

    params = {"embedding": {conv0, bn0, ..., bn3}, "ridge": {"alpha", "beta",
              "log_lambda"}}

Its `__call__` returns the embeddings (as conv4's embedding does for the
metric learners); `scalars(params)` reads α, β, λ.
"""

from __future__ import annotations

import math
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from advmeta_jax.core import models

Array = jax.Array
# The scalars at initialization. α = 1 leaves f(x)W on its own scale (≈ the
# one-hot targets for a support image); λ = 1 is small next to XXᵀ's
# diagonal (‖f(x)‖² ≈ D for conv4's BatchNormed features).
INIT_ALPHA = 10.0
INIT_BETA = 0.0
INIT_LAMBDA = 1.0


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


def ridge_logits(query_embeddings: Array, weights: Array, alpha: Array,
                 beta: Array) -> Array:
  """α·f(x)W + β, `[Q, N]`."""
  return alpha * (query_embeddings @ weights) + beta


def scalars(params) -> Tuple[Array, Array, Array]:
  """(α, β, λ) of R2-D2's parameters; λ = exp(log λ) > 0."""
  ridge = params["ridge"]
  return ridge["alpha"], ridge["beta"], jnp.exp(ridge["log_lambda"])


class RidgeScalars(nn.Module):
  """The solver's meta-parameters α, β and log λ (scalars)."""
  init_alpha: float = INIT_ALPHA
  init_beta: float = INIT_BETA
  init_lambda: float = INIT_LAMBDA

  @nn.compact
  def __call__(self):
    const = lambda v: nn.initializers.constant(v, jnp.float32)
    return (self.param("alpha", const(self.init_alpha), (), jnp.float32),
            self.param("beta", const(self.init_beta), (), jnp.float32),
            self.param("log_lambda", const(math.log(self.init_lambda)), (),
                       jnp.float32))


class R2D2(nn.Module):
  """conv4's embedding and the ridge solver's scalars.

  `__call__` maps `[N, H, W, C]` images to `[N, D]` embeddings; the scalars
  are created with the parameters and read by `scalars(params)`.
  """
  embedding: models.Conv4

  @nn.compact
  def __call__(self, x):
    RidgeScalars(name="ridge")()
    return self.embedding(x)


def make_r2d2(*, filters: int = 32, conv_impl: str = "matmul",
              image_size: int = 84, compute_dtype: str = "float32") -> R2D2:
  """R2-D2's model on conv4's embedding (checked as `make_conv4_embedding`).

  Raises:
    ConfigError: a value that is not allowed, with what is allowed.
  """
  return R2D2(embedding=models.make_conv4_embedding(
      filters=filters, conv_impl=conv_impl, image_size=image_size,
      compute_dtype=compute_dtype))
