"""Learners beyond the seeds: R2-D2 (ridge), ANIL (head) and TRADES.

R2-D2's ridge solution against NumPy (primal and Woodbury forms) and its
gradients against finite differences; ANIL's inner loop against MAML's
restricted to the head; TRADES at λ = 0 against the clean loss, its loss by
hand, and its KL attack; each learner trained end to end on the offline
digits, with its train iteration compiled once.
"""

import json
import os

import chex
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

from advmeta_jax.core import losses
from advmeta_jax.learners import adaptations
from advmeta_jax import attacks
from advmeta_jax import experiments
from advmeta_jax import learners
from advmeta_jax.learners import maml
from advmeta_jax.core import models
from advmeta_jax.learners import r2d2
from advmeta_jax.learners import trades
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.core.episodes import Task
from advmeta_jax.errors import ConfigError
from tests.conftest import tiny_config

N_WAY = 3
PGD = attacks.make_attack("pgd", {"eps": 0.1, "step_size": 0.04,
                                  "num_steps": 3})


def one_hot(labels, n=N_WAY):
  return np.eye(n)[np.asarray(labels)]


def head_apply(params, images):
  """A smooth two-layer model whose last layer is named "head" (conv4's
  convention), so ANIL's split applies: tanh body, linear head."""
  flat = images.reshape(images.shape[0], -1)
  h = jnp.tanh(flat @ params["body"]["w"] + params["body"]["b"])
  return h @ params["head"]["kernel"] + params["head"]["bias"]


def tanh_embed(params, images):
  flat = images.reshape(images.shape[0], -1)
  return jnp.tanh(flat @ params["w"] + params["b"])


def problem(seed=0, dtype=jnp.float64):
  """Parameters of `head_apply` and of `tanh_embed` (with R2-D2's scalars),
  and one N_WAY-way 2-shot task with images in [0, 1]."""
  k = jax.random.split(jax.random.key(seed), 8)
  params = {"body": {"w": jax.random.normal(k[0], (12, 5), dtype),
                     "b": 0.1 * jax.random.normal(k[1], (5,), dtype)},
            "head": {"kernel": jax.random.normal(k[2], (5, N_WAY), dtype),
                     "bias": jnp.zeros((N_WAY,), dtype)}}
  embed_params = {"w": jax.random.normal(k[3], (12, 8), dtype),
                  "b": 0.1 * jax.random.normal(k[4], (8,), dtype),
                  "ridge": {"scale": jnp.asarray(3.0, dtype)}}
  ys = jax.random.permutation(k[5], jnp.repeat(jnp.arange(N_WAY), 2))
  task = Task(jax.random.uniform(k[6], (6, 2, 2, 3), dtype), ys,
              jax.random.uniform(k[7], (9, 2, 2, 3), dtype),
              jnp.array([0, 1, 2] * 3))
  return params, embed_params, task


def bound(name, robust="none", apply_fn=head_apply, *, attack=PGD,
          **overrides):
  base = dict(n_way=N_WAY, inner_lr=0.3, inner_steps=2, learner=name,
              robust=robust)
  base.update(overrides)
  return learners.get(name, robust).bind(apply_fn, attack,
                                         Config.make(**base))


# --- R2-D2 --------------------------------------------------------------------

@pytest.mark.parametrize("s, d", [(6, 10), (12, 4)])
def test_ridge_weights_match_numpy_in_primal_and_woodbury_forms(s, d):
  rng = np.random.default_rng(s)
  x = rng.normal(size=(s, d))
  y = one_hot(rng.integers(0, N_WAY, size=s))
  lam = 0.7
  primal = np.linalg.solve(x.T @ x + lam * np.eye(d), x.T @ y)
  woodbury = x.T @ np.linalg.solve(x @ x.T + lam * np.eye(s), y)
  np.testing.assert_allclose(primal, woodbury, rtol=1e-9, atol=1e-12)
  with jax.enable_x64(True):
    w = r2d2.ridge_weights(jnp.asarray(x), jnp.asarray(y), lam)
    w_primal = r2d2.ridge_weights_primal(jnp.asarray(x), jnp.asarray(y), lam)
    np.testing.assert_allclose(w, primal, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w_primal, primal, rtol=1e-9, atol=1e-12)
    # W minimizes ‖XW − Y‖² + λ‖W‖²: its gradient there is 0.
    grad = jax.grad(lambda v: jnp.sum((x @ v - y) ** 2)
                    + lam * jnp.sum(v ** 2))(w)
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)


# MetaOptNet's R2D2Head in ClassificationHead (kjunelee/MetaOptNet,
# models/classification_heads.py), written out in NumPy as that code computes
# it: the Gram matrix plus λI (λ = 50), its inverse, Xᵀ·inverse·one-hot
# labels, the query times that, times the learned scale.
def metaoptnet_reference(zs, labels, zq, scale, n_way, lam=50.0):
  y = np.eye(n_way)[np.asarray(labels)]
  inverse = np.linalg.inv(zs @ zs.T + lam * np.eye(zs.shape[0]))
  return scale * (zq @ (zs.T @ inverse @ y))


# Bertinetto et al.'s RRNet.loss and AdjustLayer (bertinetto/r2d2,
# fewshots/models/r2d2.py and adjust.py), written out in NumPy: a ones column
# appended to the support, support and one-hot labels divided by √S, λ = 50,
# the Woodbury solve, the last row of the solution as the bias, the
# (undivided) query times the rest plus it, then scale and bias.
def bertinetto_reference(zs, labels, zq, scale, bias, n_way, lam=50.0):
  s = zs.shape[0]
  y = np.eye(n_way)[np.asarray(labels)] / np.sqrt(s)
  x = np.concatenate([zs, np.ones((s, 1))], axis=1) / np.sqrt(s)
  wb = x.T @ np.linalg.inv(x @ x.T + lam * np.eye(s)) @ y
  w, b = wb[:-1], wb[-1:]
  return (zq @ w + b) * scale + bias


def test_metaoptnet_head_matches_its_code_on_three_support_points():
  """3 support points (3-way 1-shot), features large enough that λ = 50
  matters; the logits against the NumPy transcription above."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    zs = 6.0 * rng.normal(size=(3, 4))
    zq = 6.0 * rng.normal(size=(5, 4))
    labels = np.array([2, 0, 1])
    head = r2d2.HEADS["metaoptnet"]
    w = r2d2.head_weights(head, jnp.asarray(zs),
                          jax.nn.one_hot(jnp.asarray(labels), 3))
    ours = r2d2.head_logits(head, jnp.asarray(zq), w, 1.7, 0.0)
    np.testing.assert_allclose(
        ours, metaoptnet_reference(zs, labels, zq, 1.7, 3), rtol=1e-10)
    # λ = 50 is not negligible here: the λ → 0 interpolant differs.
    loose = 1.7 * zq @ (zs.T @ np.linalg.inv(zs @ zs.T) @ np.eye(3)[labels])
    assert np.abs(np.asarray(ours) - loose).max() > 1e-2
    assert (head.lam, head.init_scale, head.bias, head.ones_column,
            head.normalize) == (50.0, 1.0, False, False, False)


def test_bertinetto_head_matches_its_code():
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    zs = 3.0 * rng.normal(size=(6, 4))     # 3-way 2-shot
    zq = 3.0 * rng.normal(size=(5, 4))
    labels = np.array([0, 0, 1, 1, 2, 2])
    head = r2d2.HEADS["bertinetto"]
    w = r2d2.head_weights(head, jnp.asarray(zs),
                          jax.nn.one_hot(jnp.asarray(labels), 3))
    assert w.shape == (5, 3)    # D + 1 rows: the last is the bias
    ours = r2d2.head_logits(head, jnp.asarray(zq), w, 10.0, 0.3)
    np.testing.assert_allclose(
        ours, bertinetto_reference(zs, labels, zq, 10.0, 0.3, 3), rtol=1e-10)
    assert (head.lam, head.bias, head.ones_column, head.normalize) == (
        50.0, True, True, True)
    assert head.init_scale_for("mini_imagenet") == 1e-4
    assert head.init_scale_for("cifar_fs") == head.init_scale_for(
        "omniglot") == 10.0


@pytest.mark.parametrize("head", ["metaoptnet", "bertinetto"])
def test_ridge_adaptation_logits_by_hand(head):
  with jax.enable_x64(True):
    _, params, task = problem()
    if head == "bertinetto":
      params = {**params, "ridge": {"scale": jnp.asarray(3.0),
                                    "bias": jnp.asarray(0.2)}}
    adaptation = adaptations.ridge_adaptation(tanh_embed, n_way=N_WAY,
                                              head=head)
    state, curve = adaptation.adapt(params, task.support_images,
                                    task.support_labels, num_steps=7)
    assert curve == {}
    xs = np.asarray(tanh_embed(params, task.support_images))
    xq = np.asarray(tanh_embed(params, task.query_images))
    if head == "metaoptnet":
      expected = metaoptnet_reference(xs, task.support_labels, xq, 3.0, N_WAY)
    else:
      expected = bertinetto_reference(xs, task.support_labels, xq, 3.0, 0.2,
                                      N_WAY)
    np.testing.assert_allclose(adaptation.logits(state, task.query_images),
                               expected, rtol=1e-9)
    # Before adaptation (a support attack's target) is the same classifier.
    np.testing.assert_allclose(
        adaptation.initial_logits(params, task.support_images,
                                  task.support_labels, task.query_images),
        expected, rtol=1e-9)


@pytest.mark.parametrize("head", ["metaoptnet", "bertinetto"])
def test_ridge_gradients_match_finite_differences(head):
  """∂/∂(support embeddings, query embeddings, scale, offset) of the query
  cross-entropy, through the solve, against central differences."""
  spec = r2d2.HEADS[head]
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(6, 4)))
    xq = jnp.asarray(rng.normal(size=(5, 4)))
    ys = jnp.asarray(one_hot([0, 1, 2, 2, 1, 0]))
    yq = jnp.array([0, 1, 2, 0, 1])

    def loss(xs, xq, scale, bias):
      w = r2d2.head_weights(spec, xs, ys)
      return losses.cross_entropy(r2d2.head_logits(spec, xq, w, scale, bias),
                                  yq)

    args = (xs, xq, jnp.asarray(2.0), jnp.asarray(0.1))
    check_grads(loss, args, order=2, modes=["rev"], eps=1e-5)
    # The offset shifts every logit equally: the cross-entropy does not
    # depend on it.
    assert abs(float(jax.grad(loss, argnums=3)(*args))) < 1e-12


def test_the_meta_gradient_flows_through_the_solve_into_the_support():
  with jax.enable_x64(True):
    _, params, task = problem()
    adaptation = adaptations.ridge_adaptation(tanh_embed, n_way=N_WAY)
    query_loss = lambda xs: losses.cross_entropy(adaptation.logits(
        adaptation.adapt(params, xs, task.support_labels, num_steps=1)[0],
        task.query_images), task.query_labels)
    grad = jax.grad(query_loss)(task.support_images)
    assert float(jnp.abs(grad).max()) > 1e-6
    check_grads(query_loss, (task.support_images,), order=1,
                modes=["rev"], eps=1e-5)


def test_a_support_attack_scores_the_support_under_the_clean_supports_w():
  """The support attack's target (`initial_logits` with the clean support,
  as metatest.attack_support and the objectives call it) is s·f(x')W with W
  solved from the clean support: its gradient in x' does not pass through
  the solve."""
  with jax.enable_x64(True):
    _, params, task = problem()
    adaptation = adaptations.ridge_adaptation(tanh_embed, n_way=N_WAY)
    xs, ys = task.support_images, task.support_labels
    target = lambda x: adaptation.initial_logits(params, xs, ys, x)
    x_pert = jnp.clip(xs + 0.05 * jnp.sign(jax.random.normal(
        jax.random.key(2), xs.shape, xs.dtype)), 0.0, 1.0)
    w_clean = r2d2.head_weights(r2d2.HEADS["metaoptnet"],
                                tanh_embed(params, xs), one_hot(ys))
    fixed_w = lambda x: 3.0 * tanh_embed(params, x) @ w_clean
    np.testing.assert_allclose(target(x_pert), fixed_w(x_pert), rtol=1e-10)
    loss = lambda fn: lambda x: losses.cross_entropy(fn(x), ys)
    np.testing.assert_allclose(jax.grad(loss(target))(x_pert),
                               jax.grad(loss(fixed_w))(x_pert), rtol=1e-9,
                               atol=1e-14)


@pytest.mark.parametrize("head, dataset, scalars", [
    ("metaoptnet", "digits", {"scale": 1.0}),
    ("bertinetto", "digits", {"scale": 10.0, "bias": 0.0}),
    ("bertinetto", "mini_imagenet", {"scale": 1e-4, "bias": 0.0})])
def test_r2d2_model_is_the_conv4_embedding_with_the_heads_scalars(
    head, dataset, scalars):
  model = r2d2.make_r2d2(head=head, dataset=dataset, filters=8,
                         image_size=16, conv_impl="xla")
  params = models.init_params(model, jax.random.key(0), (16, 16, 1))
  assert set(params) == {"embedding", "ridge"} and "head" not in params
  assert models.num_params(params["embedding"]) == models.conv4_num_params(
      num_classes=None, filters=8, channels=1, image_size=16)
  assert {k: float(v) for k, v in params["ridge"].items()} == pytest.approx(
      scalars)


def test_r2d2_builds_metaoptnets_head_by_default_and_bertinettos_on_request():
  exp = training.build(tiny_config(learner="r2d2"))
  assert isinstance(exp.model, r2d2.R2D2)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  assert {k: float(v) for k, v in params["ridge"].items()} == {"scale": 1.0}
  emb = exp.apply_fn(params, jnp.zeros((4, *exp.image_shape)))
  assert emb.shape == (4, models.embedding_dim(8, 16))
  assert exp.learner.adaptation is adaptations.ridge_adaptation(
      exp.apply_fn, n_way=5, head="metaoptnet")
  other = training.build(tiny_config(learner="r2d2", r2d2_head="bertinetto"))
  assert other.learner.adaptation is adaptations.ridge_adaptation(
      other.apply_fn, n_way=5, head="bertinetto")
  assert set(models.init_params(other.model, jax.random.key(0),
                                other.image_shape)["ridge"]) == {"scale",
                                                                 "bias"}
  with pytest.raises(ConfigError, match="unknown r2d2_head 'ridge'"):
    tiny_config(learner="r2d2", r2d2_head="ridge").validate()


# --- ANIL ---------------------------------------------------------------------

def reference_head_steps(params, task, *, lr, steps, first_order):
  """MAML's inner loop restricted to the head, written out: SGD on the head
  only, the body held at θ."""
  head = params["head"]
  for _ in range(steps):
    grads = jax.grad(lambda h: losses.cross_entropy(
        head_apply({**params, "head": h}, task.support_images),
        task.support_labels))(head)
    if first_order:
      grads = jax.lax.stop_gradient(grads)
    head = jax.tree.map(lambda p, g: p - lr * g, head, grads)
  return {**params, "head": head}


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_adapts_the_head_only_and_matches_maml_restricted_to_it(
    first_order):
  with jax.enable_x64(True):
    params, _, task = problem()
    adaptation = adaptations.head_adaptation(head_apply, inner_lr=0.3,
                                             first_order=first_order)
    adapted, curve = adaptation.adapt(params, task.support_images,
                                      task.support_labels, num_steps=3)
    chex.assert_trees_all_equal(adapted["body"], params["body"])
    assert float(jnp.abs(adapted["head"]["kernel"]
                         - params["head"]["kernel"]).max()) > 1e-3
    assert curve["support_loss"].shape == (3,)
    reference = reference_head_steps(params, task, lr=0.3, steps=3,
                                     first_order=first_order)
    chex.assert_trees_all_close(adapted, reference, rtol=1e-10)

    # The meta-gradient (every parameter, the body included) is MAML's on
    # the head-only inner loop.
    def meta_loss(adapt_fn, p):
      return losses.cross_entropy(head_apply(adapt_fn(p), task.query_images),
                                task.query_labels)
    ours = jax.grad(lambda p: meta_loss(lambda q: adaptation.adapt(
        q, task.support_images, task.support_labels, num_steps=3)[0], p))(
            params)
    ref = jax.grad(lambda p: meta_loss(lambda q: reference_head_steps(
        q, task, lr=0.3, steps=3, first_order=first_order), p))(params)
    chex.assert_trees_all_close(ours, ref, rtol=1e-9, atol=1e-12)
    assert float(jnp.abs(ours["body"]["w"]).max()) > 1e-6


def test_anil_second_order_differs_from_first_order_in_the_body():
  with jax.enable_x64(True):
    params, _, task = problem()
    grads = {}
    for fo in (False, True):
      b = bound("anil", first_order=fo)
      grads[fo] = jax.grad(lambda p: b.loss(p, task, jax.random.key(0))[0])(
          params)
    assert float(jnp.abs(grads[False]["body"]["w"]
                         - grads[True]["body"]["w"]).max()) > 1e-6


def test_anil_on_conv4_keeps_the_body_and_tracks_full_parameters():
  model = models.make_conv4(num_classes=N_WAY, filters=4, image_size=16)
  params = models.init_params(model, jax.random.key(0), (16, 16, 1))
  apply_fn = models.make_apply_fn(model)
  adaptation = adaptations.head_adaptation(apply_fn, inner_lr=0.5)
  x = jax.random.uniform(jax.random.key(1), (6, 16, 16, 1))
  y = jnp.array([0, 1, 2, 0, 1, 2])
  track = lambda p: {"acc": losses.accuracy(apply_fn(p, x), y)}
  adapted, curve = jax.jit(lambda p: adaptation.adapt(
      p, x, y, num_steps=2, track_fn=track))(params)
  body = lambda p: {k: v for k, v in p.items() if k != "head"}
  chex.assert_trees_all_equal(body(adapted), body(params))
  assert curve["acc"].shape == (2,)
  assert learners.get("anil").adaptation.name == "head"


# --- TRADES -------------------------------------------------------------------

@pytest.mark.parametrize("name, apply_index", [("maml", 0), ("r2d2", 1)])
def test_trades_at_lambda_zero_is_the_clean_loss(name, apply_index):
  with jax.enable_x64(True):
    params, embed_params, task = problem()
    p = (params, embed_params)[apply_index]
    fn = (head_apply, tanh_embed)[apply_index]
    key = jax.random.key(3)
    clean = bound(name, apply_fn=fn)
    zero = bound(name, "trades", apply_fn=fn, trades_lambda=0.0)
    (l_clean, _), g_clean = jax.value_and_grad(
        lambda q: clean.loss(q, task, key), has_aux=True)(p)
    (l_zero, aux), g_zero = jax.value_and_grad(
        lambda q: zero.loss(q, task, key), has_aux=True)(p)
    np.testing.assert_allclose(l_zero, l_clean, rtol=1e-12)
    chex.assert_trees_all_close(g_zero, g_clean, rtol=1e-10, atol=1e-14)
    assert float(aux["trades_kl"]) > 0


def _log_softmax(z):
  z = np.asarray(z)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("kl_on", ["support_query", "query"])
def test_trades_loss_is_clean_ce_plus_lambda_kl_at_the_kl_attack(kl_on):
  """L(θ', Q) on the clean query alone, plus λ times the mean KL over the
  images `--trades_kl_on` names (support and query in one batch by
  default, as R-MAML's code), attacked at the adapted θ'."""
  with jax.enable_x64(True):
    params, _, task = problem()
    key = jax.random.key(5)
    loss, aux = bound("maml", "trades", trades_lambda=2.5,
                      trades_kl_on=kl_on).loss(params, task, key)
    adapted, _ = maml.adapt(head_apply, params, task.support_images,
                            task.support_labels, inner_lr=0.3, num_steps=2)
    logits_fn = lambda x: head_apply(adapted, x)
    images = (jnp.concatenate([task.support_images, task.query_images])
              if kl_on == "support_query" else task.query_images)
    x_adv = trades.kl_pgd(logits_fn, images, eps=0.1, step_size=0.04,
                          num_steps=3, key=key)
    log_p, log_q = _log_softmax(logits_fn(images)), _log_softmax(
        logits_fn(x_adv))
    kl = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1))
    assert log_p.shape[0] == (15 if kl_on == "support_query" else 9)
    ce = -np.mean(_log_softmax(logits_fn(task.query_images))[
        np.arange(9), np.asarray(task.query_labels)])
    np.testing.assert_allclose(loss, ce + 2.5 * kl, rtol=1e-9)
    np.testing.assert_allclose(aux["trades_kl"], kl, rtol=1e-9)


def rmaml_fast_kl_attack(weights, x, noise, eps):
  """R-MAML's attack (wangren09/MetaAdv, MetaFT.py, Meta.forward at the last
  inner step) on the linear model logits = x·weights, written out in NumPy:
  x_adv = clamp(x + noise, 0, 1); the gradient of Σ KL(softmax(clean) ‖
  softmax(logits(x_adv))) with respect to the noise, through the clamp (0
  where it clamps); noise ← clamp(noise + 1.25·ε·sign(gradient), −ε, ε);
  x_adv = clamp(x + noise, 0, 1)."""
  flat = lambda z: z.reshape(z.shape[0], -1)
  p = np.exp(_log_softmax(flat(x) @ weights))
  start = x + noise
  q = np.exp(_log_softmax(flat(np.clip(start, 0, 1)) @ weights))
  grad = ((q - p) @ weights.T).reshape(x.shape)   # ∂ΣKL/∂x_adv
  grad = np.where((start >= 0) & (start <= 1), grad, 0.0)
  noise = np.clip(noise + 1.25 * eps * np.sign(grad), -eps, eps)
  return np.clip(x + noise, 0, 1)


def test_trades_default_attack_is_rmamls_one_step_of_1_25_eps():
  """The default --robust=trades attack is R-MAML's: ε 2/255, one signed
  step of 1.25·ε from a uniform start, the clamp to [0, 1] stopping the
  gradient; against the NumPy transcription on a linear model, with pixels
  at 0 and 1 where the clamp acts."""
  exp = training.build(tiny_config(learner="maml", robust="trades"))
  attack = exp.learner.pieces.attack
  eps = 2 / 255
  assert attack.hparams == {"eps": pytest.approx(eps), "num_steps": 1,
                            "step_size": pytest.approx(1.25 * eps),
                            "random_start": True}
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(12, N_WAY))
    x = rng.uniform(size=(8, 2, 2, 3))
    x[:, 0, 0, :] = 0.0
    x[:, 1, 1, :] = 1.0
    key = jax.random.key(4)
    logits_fn = lambda z: z.reshape(z.shape[0], -1) @ weights
    attack_fn = trades.kl_attack(attack)
    ours = attack_fn(logits_fn, jnp.asarray(x), None, key=key)
    noise = eps * np.asarray(jax.random.uniform(key, x.shape, jnp.float64,
                                                -1.0, 1.0))
    np.testing.assert_allclose(ours, rmaml_fast_kl_attack(weights, x, noise,
                                                          eps), atol=1e-15)


def test_trades_defaults_are_rmamls():
  """λ = 3 (R-MAML's code's MiniImageNet `beta`), the KL over support and
  query; the other robust losses keep PGD-7 at 8/255 with steps of 2/255."""
  cfg = Config()
  assert (cfg.trades_lambda, cfg.trades_kl_on) == (3.0, "support_query")
  aq = training.build(tiny_config(learner="aq")).learner.pieces.attack
  assert aq.hparams == {"eps": pytest.approx(8 / 255), "num_steps": 7,
                        "step_size": pytest.approx(2 / 255),
                            "random_start": True}
  explicit = training.build(tiny_config(
      learner="maml", robust="trades", train_eps="8/255",
      train_attack_steps=7, train_step_size="2/255")).learner.pieces.attack
  assert explicit.hparams == aq.hparams
  scaled = training.build(tiny_config(learner="maml", robust="trades",
                                      train_eps="8/255")).learner.pieces.attack
  assert scaled.hparams == {"eps": pytest.approx(8 / 255), "num_steps": 1,
                            "step_size": pytest.approx(10 / 255),
                            "random_start": True}


def test_kl_attack_increases_the_kl_and_stays_in_the_ball():
  with jax.enable_x64(True):
    params, _, task = problem()
    logits_fn = lambda x: head_apply(params, x)
    x = task.query_images
    clean = logits_fn(x)
    kl = lambda z: float(trades.kl_per_example(clean, logits_fn(z)).mean())
    key = jax.random.key(0)
    start = trades.kl_pgd(logits_fn, x, eps=0.1, step_size=0.02,
                          num_steps=0, key=key)
    x_adv = trades.kl_pgd(logits_fn, x, eps=0.1, step_size=0.02,
                          num_steps=10, key=key)
    assert kl(x) == pytest.approx(0.0, abs=1e-12)
    assert kl(x_adv) > 2 * kl(start) > 0
    assert float(jnp.abs(x_adv - x).max()) <= 0.1 + 1e-12
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    # No gradient flows through the attack's result.
    g = jax.grad(lambda z: jnp.sum(trades.kl_pgd(
        logits_fn, z, eps=0.1, step_size=0.02, num_steps=2, key=key)))(x)
    assert float(jnp.abs(g).max()) == 0.0


def test_trades_needs_a_pgd_training_attack():
  with pytest.raises(ConfigError, match="training attack must be pgd"):
    training.build(tiny_config(learner="maml", robust="trades",
                               train_attack="fgsm"))
  with pytest.raises(ConfigError, match="trades_lambda"):
    tiny_config(robust="trades", trades_lambda=-1.0).validate()
  assert "trades" in learners.ROBUST_LOSSES
  assert {"r2d2", "anil"} <= set(learners.robust_learners())
  with pytest.raises(ConfigError, match="does not apply to learner 'aq'"):
    learners.get("aq", "trades")


# --- end to end -----------------------------------------------------------------

def _train_and_check(cfg, tmp_path, digits_train):
  state = training.train(cfg, str(tmp_path), train_split=digits_train,
                         progress=False)
  assert int(state.step) == 3
  with open(os.path.join(tmp_path, training.METRICS_FILE)) as f:
    lines = [json.loads(line) for line in f]
  assert [m["step"] for m in lines] == [1, 2, 3]
  for m in lines:
    assert np.isfinite(m["loss"]) and 0 <= m["query_accuracy"] <= 1
    if cfg.robust != "none":
      assert 0 <= m["adv_query_accuracy"] <= 1
    assert ("trades_kl" in m) == (cfg.robust == "trades")
  # Three steps, one compile of the train iteration.
  exp = training.build(cfg)
  # (train runs the config with its `auto` speed settings resolved.)
  step_fn = training.jitted_train_iteration(
      exp.learner, exp.config, training.make_mesh(cfg.num_devices))
  assert step_fn._cache_size() == 1   # pylint: disable=protected-access
  chex.assert_trees_all_equal(training.restore_run(str(tmp_path), cfg), state)
  return state


@pytest.mark.parametrize("learner, robust, extra", [
    ("r2d2", "none", {}), ("r2d2", "tafl", {}), ("anil", "none", {}),
    ("anil", "aq", {}), ("maml", "trades", {}), ("r2d2", "trades", {}),
    pytest.param("anil", "none", {"first_order": True},
                 marks=pytest.mark.slow),
    pytest.param("r2d2", "aq", {}, marks=pytest.mark.slow),
    pytest.param("anil", "trades", {}, marks=pytest.mark.slow)])
@pytest.mark.integration
def test_learner_trains_end_to_end_on_digits_and_compiles_once(
    learner, robust, extra, tmp_path, digits_train):
  cfg = tiny_config(learner=learner, robust=robust, num_steps=3,
                    eval_episodes=0, train_attack_steps=2, **extra)
  state = _train_and_check(cfg, tmp_path, digits_train)
  if learner == "r2d2":
    assert set(state.params) == {"embedding", "ridge"}
    assert set(state.params["ridge"]) == {"scale"}
  else:
    assert "head" in state.params


def test_digits_beyond_has_the_rows_of_the_learners_beyond_the_papers():
  """Its shrunk run end to end is
  tests/test_protocol.py::test_every_experiment_runs_end_to_end_shrunk."""
  experiment = experiments.get("digits_beyond")
  assert experiment.row_names == ("maml", "aq", "r2d2", "r2d2+aq",
                                  "r2d2+tafl", "anil", "anil+aq",
                                  "maml+trades")
