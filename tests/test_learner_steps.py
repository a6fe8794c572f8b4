"""Every learner's loss and meta-gradient, as the train step computes them.

One jitted `batch_value_and_grad` per learner on tiny random tasks (3-way,
16x16 images, 4 filters): the loss is finite, every parameter the learner
trains gets a finite meta-gradient, and the meta-gradient is not zero. This is
the unit tier's check that each learner builds, binds and differentiates;
training end to end is in the integration tier.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax import learners
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.core import models
from tests.conftest import random_tasks

# (learner, extra settings): every registered learner, plus the robust
# objectives on a metric learner, FCE, TRADES and the Gaussian query.
CASES = [(name, {}) for name in learners.names()] + [
    ("protonet", dict(robust="tafl")),
    ("matchingnet", dict(robust="aq", fce="adml")),
    ("maml", dict(robust="trades", train_attack="pgd")),
    ("maml", dict(robust="gaussian")),
]


def _config(learner, **extra):
  return Config.make(
      learner=learner, dataset="cifar_fs", image_size=16, n_way=3, k_shot=1,
      q_query=2, filters=4, task_batch_size=2, inner_steps=1, inner_lr=0.1,
      train_attack_steps=1, conv_impl="xla", parallel_tasks=0, remat=False,
      **extra)


@pytest.mark.parametrize("learner,extra", CASES,
                         ids=[f"{n}-{'-'.join(map(str, e.values())) or 'plain'}"
                              for n, e in CASES])
def test_loss_and_meta_gradient_are_finite_and_not_zero(learner, extra):
  exp = training.build(_config(learner, **extra))
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  fn = training.batch_value_and_grad(exp.learner, parallel_tasks=0)
  (loss, _), grads = jax.jit(fn)(params, random_tasks(), jax.random.key(2))
  assert np.isfinite(float(loss)), loss
  leaves = jax.tree_util.tree_leaves(grads)
  assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0
