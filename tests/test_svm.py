"""MetaOptNet's Crammer–Singer SVM head (svm.py): its QP as MetaOptNet's
code builds it, the solution against scipy's SLSQP and the QP's optimality
conditions, the meta-gradient against finite differences (float64), and the
metaoptnet learner on a task batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax import learners
from advmeta_jax.learners import svm

C = svm.C_REG
SOLVE = jax.jit(svm.crammer_singer_dual, static_argnums=2)


def _metaoptnet_qp(x, y, n):
  """MetaOptNetHead_SVM_CS's G, e, C, h, A, b (kjunelee/MetaOptNet,
  models/classification_heads.py) for one task, in numpy: the block kernel
  `batched_kronecker(K, I_N)` + I, e = −onehot, z ≤ C_reg·onehot, and
  `batched_kronecker(I_S, 1_{1×N})` z = 0."""
  s = len(y)
  k = x @ x.T
  block = np.einsum("ij,mn->imjn", k, np.eye(n)).reshape(s * n, s * n)
  onehot = np.eye(n)[y].reshape(-1)
  a = np.einsum("ij,n->ijn", np.eye(s), np.ones(n)).reshape(s, s * n)
  return block + np.eye(s * n), -onehot, C * onehot, a


def _slsqp(x, y, n):
  g, e, h, a = _metaoptnet_qp(x, y, n)
  import scipy.optimize  # pylint: disable=g-import-not-at-top
  result = scipy.optimize.minimize(
      lambda z: 0.5 * z @ g @ z + e @ z, np.zeros(len(e)),
      jac=lambda z: g @ z + e, method="SLSQP",
      constraints=[dict(type="eq", fun=lambda z: a @ z, jac=lambda z: a),
                   dict(type="ineq", fun=lambda z: h - z,
                        jac=lambda z: -np.eye(len(z)))],
      options=dict(ftol=1e-15, maxiter=500))
  assert result.success, result.message
  return result.x.reshape(len(y), n)


def _natural_residual(alpha, x, y, n):
  """‖α − P(α − t∇f(α))‖∞ / ‖α‖∞ with t = 1/L and P the projection onto
  the feasible set, row by row: {a : Σa = 0, a ≤ C·e_y} = C·e_y − (the
  simplex of radius C). Zero exactly at the QP's solution."""
  m = x @ x.T + np.eye(len(y))
  grad = m @ alpha - np.eye(n)[y]
  v = alpha - grad / np.linalg.eigvalsh(m).max()
  upper = C * np.eye(n)[y]
  w = upper - v
  ordered = -np.sort(-w, axis=1)
  excess = np.cumsum(ordered, axis=1) - C
  rho = np.sum(ordered - excess / np.arange(1, n + 1) > 0, axis=1)
  tau = excess[np.arange(len(y)), rho - 1] / rho
  projected = upper - np.maximum(w - tau[:, None], 0)
  return np.abs(alpha - projected).max() / np.abs(alpha).max()


def _task(seed, n, k, d, scale):
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(n * k, d)) * 3 / np.sqrt(d) + rng.normal()) * scale
  return x, np.repeat(np.arange(n), k)


def test_the_qp_is_metaoptnets():
  x, y = _task(0, 3, 2, 4, 1.0)
  ours = svm.crammer_singer_qp(jnp.asarray(x @ x.T), jnp.asarray(y), 3, C)
  for mine, theirs in zip(ours, _metaoptnet_qp(x, y, 3)):
    np.testing.assert_allclose(np.asarray(mine), theirs, rtol=1e-6)


SHAPES = [(5, 1, 20), (5, 5, 50)]   # (N, K, D); shared to compile once


@pytest.mark.parametrize("n,k,d", [(5, 1, 20), (4, 2, 12)])
def test_solution_equals_scipys(n, k, d):
  with jax.enable_x64(True):
    for seed in range(2):
      x, y = _task(seed, n, k, d, 1.0)
      ours = np.asarray(SOLVE(jnp.asarray(x), jnp.asarray(y), n))
      np.testing.assert_allclose(ours, _slsqp(x, y, n), atol=1e-7)


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0, 300.0])
def test_solution_is_optimal_at_every_scale(scale):
  """Feature norms from ~1 to ~10⁴ (K up to ~10⁸; ResNet-12's 16,000
  features have norms ~10²): the optimality residual ~1e-11 in float64 and
  ~1e-6 in float32 (measured: ≤ 1e-11 and ≤ 5.3e-6 over 8 tasks each),
  and the solution feasible to float32 rounding."""
  for seed, (n, k, d) in enumerate(SHAPES):
    x, y = _task(seed, n, k, d, scale)
    with jax.enable_x64(True):
      alpha = np.asarray(SOLVE(jnp.asarray(x), jnp.asarray(y), n))
    assert _natural_residual(alpha, x, y, n) < 1e-9
    alpha32 = np.asarray(SOLVE(jnp.asarray(x, jnp.float32), jnp.asarray(y),
                               n), np.float64)
    assert _natural_residual(alpha32, x, y, n) < 3e-5
    assert np.abs(alpha32.sum(axis=1)).max() < 1e-5 * np.abs(alpha32).max()
    assert (alpha32 - C * np.eye(n)[y]).max() < 1e-5 * np.abs(alpha32).max()


def test_degenerate_supports_give_finite_feasible_solutions():
  y = jnp.repeat(jnp.arange(5), 2)
  for x in (jnp.zeros((10, 8)), jnp.ones((10, 8)),
            jnp.tile(jax.random.normal(jax.random.key(0), (1, 8)), (10, 1))):
    alpha = SOLVE(x, y, 5)
    assert bool(jnp.all(jnp.isfinite(alpha)))
    np.testing.assert_allclose(alpha.sum(axis=1), 0, atol=1e-6)
    assert float(jnp.max(alpha - C * jax.nn.one_hot(y, 5))) < 1e-6


def test_meta_gradient_equals_finite_differences():
  """d/dX of a loss of the query logits through α(X) (the KKT system on
  the active set), against central differences along random directions,
  in float64."""
  n, k = 5, 2
  with jax.enable_x64(True):
    x, y = _task(3, n, k, 6, 1.0)
    x = jnp.asarray(x)
    query = jax.random.normal(jax.random.key(1), (7, 6), jnp.float64)
    labels = jnp.arange(7) % n

    def loss(support):
      alpha = svm.crammer_singer_dual(support, jnp.asarray(y), n)
      logits = svm.svm_logits(query, support, alpha, 10.0)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                           labels[:, None], axis=1))

    grad = jax.jit(jax.grad(loss))(x)
    loss = jax.jit(loss)
    for seed in range(3):
      direction = jax.random.normal(jax.random.key(seed), x.shape,
                                    jnp.float64)
      eps = 1e-6
      numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (
          2 * eps)
      np.testing.assert_allclose(float(jnp.sum(grad * direction)),
                                 float(numeric), rtol=1e-5, atol=1e-9)


def test_metaoptnet_learner_is_the_svm_adaptation():
  learner = learners.get("metaoptnet", "aq")
  assert (learner.adaptation.name, learner.objective.name, learner.label) == (
      "svm", "aq", "metaoptnet+aq")
  assert learner.metric


def test_svm_adaptation_classifies_separable_supports():
  """Well-separated classes: the SVM built from the support labels its own
  support and nearby queries correctly."""
  embed = lambda params, images: images
  adaptation = learners.adaptations.svm_adaptation(embed, n_way=4)
  centers = 5.0 * jnp.eye(4, 6)
  support = jnp.repeat(centers, 2, axis=0) + 0.1 * jax.random.normal(
      jax.random.key(0), (8, 6))
  labels = jnp.repeat(jnp.arange(4), 2)
  query = centers + 0.2 * jax.random.normal(jax.random.key(1), (4, 6))

  @jax.jit
  def predict(images):
    state, _ = adaptation.adapt({"ridge": {"scale": jnp.ones(())}}, support,
                                labels, num_steps=1)
    return jnp.argmax(adaptation.logits(state, images), axis=-1)
  np.testing.assert_array_equal(predict(query), jnp.arange(4))
  np.testing.assert_array_equal(predict(support), labels)
