"""The robust learners: who is attacked, stop_gradient, TAFL weights, e2e."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advmeta_jax.core import losses
from advmeta_jax import attacks
from advmeta_jax import learners
from advmeta_jax.learners import maml
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.core.episodes import Task
from advmeta_jax.errors import ConfigError
from tests.conftest import tiny_config
from tests.test_maml import mlp_apply

LR = 0.5
STEPS = 2
FGSM = attacks.make_attack("fgsm", {"eps": 0.2})


def problem(seed=0, dtype=jnp.float64):
  """Tiny MLP parameters and one task with images in [0, 1]."""
  k = jax.random.split(jax.random.key(seed), 6)
  params = {"w1": 2.0 * jax.random.normal(k[0], (4, 6), dtype),
            "b1": 0.1 * jax.random.normal(k[1], (6,), dtype),
            "w2": 2.0 * jax.random.normal(k[2], (6, 3), dtype),
            "b2": jnp.zeros((3,), dtype)}
  task = Task(jax.random.uniform(k[3], (6, 2, 2, 1), dtype),
              jnp.array([0, 1, 2, 0, 1, 2]),
              jax.random.uniform(k[4], (9, 2, 2, 1), dtype),
              jnp.array([0, 1, 2] * 3))
  return params, task


def config(**overrides):
  """The run config of these tests (flat field names)."""
  base = dict(inner_lr=LR, inner_steps=STEPS)
  base.update(overrides)
  return Config.make(**base)


def bound(name, robust="none", *, attack=FGSM, **overrides):
  """Learner `name` (under `robust`) bound to mlp_apply, `attack` and
  `config(**overrides)`."""
  return learners.get(name, robust).bind(
      mlp_apply, attack, config(learner=name, robust=robust, **overrides))


def adapt(params, x, y, lr=LR):
  return maml.adapt(mlp_apply, params, x, y, inner_lr=lr, num_steps=STEPS)[0]


def ce(params, x, y):
  return losses.cross_entropy(mlp_apply(params, x), y)


def fgsm_against(params, x, y):
  return FGSM(lambda z: mlp_apply(params, z), x, y)


def assert_trees_close(a, b, rtol=1e-9, atol=1e-12):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def differs(a, b):
  return float(jnp.max(jnp.abs(a - b))) > 1e-6


# --- TAFL weights -----------------------------------------------------------

def numpy_tafl_weights(adv, clean, gamma, k, delta):
  l_ar = np.maximum(np.asarray(adv, np.float64) - np.asarray(clean, np.float64),
                    delta)
  m = (1.0 - np.exp(-k * l_ar)) ** gamma
  return len(m) * m / m.sum()


def test_tafl_weights_match_numpy_with_delta_floor_and_mean_one():
  adv = jnp.array([2.0, 1.0, 0.5, 0.3])
  clean = jnp.array([0.5, 0.9, 0.7, 0.3])   # tasks 2 and 3 hit the δ floor
  for gamma, k in ((2.0, 1.0), (1.0, 3.0), (0.5, 0.2)):
    w = learners.tafl_weights(adv, clean, gamma=gamma, k=k, delta=1e-3)
    np.testing.assert_allclose(w, numpy_tafl_weights(adv, clean, gamma, k,
                                                     1e-3), rtol=1e-5)
    np.testing.assert_allclose(float(w.mean()), 1.0, rtol=1e-6)
  w = learners.tafl_weights(adv, clean, gamma=2.0, k=1.0, delta=1e-3)
  assert float(w[2]) == pytest.approx(float(w[3]))   # both floored at δ
  assert float(w[0]) > float(w[1]) > float(w[2])
  uniform = learners.tafl_weights(adv, clean, gamma=0.0, k=1.0, delta=1e-3)
  np.testing.assert_allclose(uniform, np.ones(4), rtol=1e-6)


def test_tafl_meta_gradient_has_no_gradient_through_the_weights():
  with jax.enable_x64(True):
    params, _ = problem()
    tasks = [problem(seed)[1] for seed in (1, 2, 3)]
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
    loss_fn = training.batch_outer_loss(bound("tafl", tafl_gamma=2.0,
                                              tafl_k=2.0))
    grad = jax.jit(jax.grad(
        lambda p: loss_fn(p, batch, jax.random.key(0))[0]))(params)

    # Reference: adversarial queries as constants, weights from the values.
    @jax.jit
    def reference(p, t):
      adapted = adapt(p, t.support_images, t.support_labels)
      xq_adv = fgsm_against(adapted, t.query_images, t.query_labels)
      loss_t = lambda q: ce(adapt(q, t.support_images, t.support_labels),
                            xq_adv, t.query_labels)
      adv_loss, g = jax.value_and_grad(loss_t)(p)
      return adv_loss, ce(adapted, t.query_images, t.query_labels), g

    adv, clean, grads = zip(*[reference(params, t) for t in tasks])
    w = numpy_tafl_weights(adv, clean, 2.0, 2.0, 1e-3)
    assert np.ptp(w) > 1e-3, "the test needs unequal weights"
    expected = jax.tree.map(lambda *g: sum(wi * gi for wi, gi in zip(w, g))
                            / len(w), *grads)
    assert_trees_close(grad, expected)


def test_tafl_sum_reduction_sums_the_query_losses():
  with jax.enable_x64(True):
    params, task = problem()
    mean_loss, _ = bound("tafl").loss(params, task, jax.random.key(0))
    sum_loss, aux = bound("tafl", tafl_reduction="sum").loss(
        params, task, jax.random.key(0))
    np.testing.assert_allclose(sum_loss, 9 * mean_loss, rtol=1e-9)
    assert float(aux["clean_query_loss"]) > 0


def numpy_code_tafl_weight(adv_logits, labels):
  """The TAFL authors' code (`--adv-train AdvQ-rew`, maml/metalearner.py)
  line by line: softmax of the adversarial predictions, one-hot labels,
  weight = one_hot·(1 − p) + (1 − one_hot)·p, squared (gamma = 2.0), mean."""
  z = np.asarray(adv_logits, np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  one_hot = np.eye(z.shape[-1])[np.asarray(labels)]
  weight = one_hot * (1 - p) + (1 - one_hot) * p
  return np.mean(weight ** 2.0)


def test_tafl_code_weighting_is_the_authors_codes_unnormalized_weight():
  """`--tafl_weighting=code`: each task's adversarial query loss times the
  code's weight of its attacked queries, not normalized over the batch."""
  logits = jax.random.normal(jax.random.key(0), (9, 3))
  labels = jnp.array([0, 1, 2] * 3)
  np.testing.assert_allclose(
      learners.objectives.code_tafl_weight(logits, labels),
      numpy_code_tafl_weight(logits, labels), rtol=1e-6)
  with jax.enable_x64(True):
    params, _ = problem()
    tasks = [problem(seed)[1] for seed in (1, 2, 3)]
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
    loss_fn = training.batch_outer_loss(bound("tafl", tafl_weighting="code"))
    loss = jax.jit(lambda p: loss_fn(p, batch, jax.random.key(0))[0])(params)
    expected = []
    for t in tasks:
      adapted = adapt(params, t.support_images, t.support_labels)
      xq_adv = fgsm_against(adapted, t.query_images, t.query_labels)
      weight = numpy_code_tafl_weight(mlp_apply(adapted, xq_adv),
                                      t.query_labels)
      expected.append(weight * float(ce(adapted, xq_adv, t.query_labels)))
    np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-7)


# --- who is attacked, stop_gradient -------------------------------------------

@pytest.mark.parametrize("name", ["aq", "tafl"])
def test_query_attack_targets_the_adapted_parameters(name):
  with jax.enable_x64(True):
    params, task = problem()
    loss, aux = bound(name).loss(params, task, jax.random.key(0))
    adapted = adapt(params, task.support_images, task.support_labels)
    xq, yq = task.query_images, task.query_labels
    vs_adapted = fgsm_against(adapted, xq, yq)
    vs_init = fgsm_against(params, xq, yq)
    assert differs(vs_adapted, vs_init), "θ and θ' must give other attacks"
    np.testing.assert_allclose(loss, ce(adapted, vs_adapted, yq), rtol=1e-9)
    assert abs(float(loss - ce(adapted, vs_init, yq))) > 1e-6
    np.testing.assert_allclose(
        aux["adv_query_accuracy"],
        losses.accuracy(mlp_apply(adapted, vs_adapted), yq))
    np.testing.assert_allclose(aux["query_accuracy"],
                               losses.accuracy(mlp_apply(adapted, xq), yq))


def test_aq_gradient_treats_the_perturbation_as_a_constant():
  with jax.enable_x64(True):
    params, task = problem()
    aq = bound("aq")
    grad = jax.jit(jax.grad(lambda p: aq.loss(
        p, task, jax.random.key(0))[0]))(params)
    adapted = adapt(params, task.support_images, task.support_labels)
    xq_adv = fgsm_against(adapted, task.query_images, task.query_labels)
    expected = jax.jit(jax.grad(lambda p: ce(
        adapt(p, task.support_images, task.support_labels), xq_adv,
        task.query_labels)))(params)
    assert_trees_close(grad, expected)


def adml_reference(params, task, *, beta_clean, beta_adv, lr_adv, lr_clean,
                   xs_adv, xq_adv):
  """Algorithm 1, lines 7 and 11 as one summed loss, attacks as constants."""
  s, ys, q, yq = task
  adapted_adv = adapt(params, xs_adv, ys, lr=lr_adv)
  adapted_clean = adapt(params, s, ys, lr=lr_clean)
  return (beta_clean * ce(adapted_adv, q, yq)
          + beta_adv * ce(adapted_clean, xq_adv, yq))


def test_adml_summed_loss_and_gradient_match_the_reference():
  with jax.enable_x64(True):
    params, task = problem()
    adml = bound("adml", adml_inner_lr_adv=0.3, adml_beta_clean=0.7,
                 adml_beta_adv=1.3)
    s, ys, q, yq = task
    xs_adv = fgsm_against(params, s, ys)            # support attack vs θ
    adapted_clean = adapt(params, s, ys)
    xq_adv = fgsm_against(adapted_clean, q, yq)     # query attack vs θ'_c
    assert differs(xs_adv, fgsm_against(adapted_clean, s, ys))
    ref = lambda p, xs=xs_adv: adml_reference(
        p, task, beta_clean=0.7, beta_adv=1.3, lr_adv=0.3, lr_clean=LR,
        xs_adv=xs, xq_adv=xq_adv)
    outer = lambda p: adml.loss(p, task, jax.random.key(0))
    (loss, aux), grad = jax.jit(jax.value_and_grad(outer, has_aux=True))(
        params)
    np.testing.assert_allclose(loss, ref(params), rtol=1e-9)
    # The support attack against θ'_c instead of θ gives another loss.
    wrong = ref(params, fgsm_against(adapted_clean, s, ys))
    assert abs(float(loss - wrong)) > 1e-6
    ref_grad = jax.jit(jax.grad(ref))(params)
    assert_trees_close(grad, ref_grad)
    np.testing.assert_allclose(
        aux["adv_query_accuracy"],
        losses.accuracy(mlp_apply(adapted_clean, xq_adv), yq))
    # One Adam step on the sum equals one Adam step on the reference.
    opt = optax.adam(1e-3)
    step = lambda g: optax.apply_updates(
        params, opt.update(g, opt.init(params), params)[0])
    assert_trees_close(step(grad), step(ref_grad))


def test_adml_sequential_takes_two_adam_steps_as_line_11_is_written():
  with jax.enable_x64(True):
    params, _ = problem()
    tasks = [problem(seed)[1] for seed in (1, 2)]
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
    adml = bound("adml", adml_sequential=True, adml_beta_clean=0.7,
                 adml_beta_adv=1.3)
    optimizer = optax.adam(1e-2)
    step = jax.jit(training.make_train_step(adml, optimizer))
    state, metrics = step(training.init_state(params, optimizer), batch,
                          jax.random.key(0))

    @jax.jit
    def clean_query_term(p0):   # β1·mean_τ L(θ'_adv, Q_clean), S_adv vs p0
      def term(p, t):
        xs_adv = fgsm_against(p0, t.support_images, t.support_labels)
        return ce(adapt(p, xs_adv, t.support_labels, lr=0.01),
                  t.query_images, t.query_labels)
      return jax.value_and_grad(
          lambda p: 0.7 * sum(term(p, t) for t in tasks) / 2)(p0)

    @jax.jit
    def adv_query_term(p1):     # β2·mean_τ L(θ'_c, Q_adv), Q_adv vs θ'_c(p1)
      def term(p, t):
        s, ys, q, yq = t
        xq_adv = fgsm_against(adapt(p1, s, ys), q, yq)
        return ce(adapt(p, s, ys), xq_adv, yq)
      return jax.value_and_grad(
          lambda p: 1.3 * sum(term(p, t) for t in tasks) / 2)(p1)

    opt_state = optimizer.init(params)
    loss1, g1 = clean_query_term(params)
    updates, opt_state = optimizer.update(g1, opt_state, params)
    p1 = optax.apply_updates(params, updates)
    loss2, g2 = adv_query_term(p1)
    updates, opt_state = optimizer.update(g2, opt_state, p1)
    p2 = optax.apply_updates(p1, updates)
    assert_trees_close(state.params, p2)
    np.testing.assert_allclose(metrics["loss"], loss1 + loss2, rtol=1e-9)
    # ... and differs from the default one step on the weighted sum.
    one = jax.jit(training.make_train_step(
        bound("adml", adml_beta_clean=0.7, adml_beta_adv=1.3),
        optimizer))(training.init_state(params, optimizer), batch,
                    jax.random.key(0))[0]
    assert differs(one.params["w1"], state.params["w1"])


def test_maml_ad_mixes_clean_and_adversarial_copies():
  with jax.enable_x64(True):
    params, task = problem()
    s, ys, q, yq = task
    xs_adv = fgsm_against(params, s, ys)
    adapted = adapt(params, jnp.concatenate([s, xs_adv]),
                    jnp.concatenate([ys, ys]))
    xq_adv = fgsm_against(adapted, q, yq)

    def ref(p):
      a = adapt(p, jnp.concatenate([s, xs_adv]), jnp.concatenate([ys, ys]))
      return ce(a, jnp.concatenate([q, xq_adv]), jnp.concatenate([yq, yq]))

    maml_ad = bound("maml_ad")
    outer = lambda p: maml_ad.loss(p, task, jax.random.key(0))
    (loss, _), grad = jax.jit(jax.value_and_grad(outer, has_aux=True))(
        params)
    np.testing.assert_allclose(loss, ref(params), rtol=1e-9)
    assert_trees_close(grad, jax.jit(jax.grad(ref))(params))
    # A fraction appends adversarial copies of a random subset only.
    half, aux = bound("maml_ad", adv_fraction=0.5).loss(
        params, task, jax.random.key(0))
    assert np.isfinite(float(half)) and 0 <= float(aux["adv_query_accuracy"])


# --- config -------------------------------------------------------------------

def test_robust_learner_without_attack_is_a_clear_error():
  params, task = problem(dtype=jnp.float32)
  with pytest.raises(ConfigError, match="train_attack"):
    bound("aq", attack=None).loss(params, task, jax.random.key(0))


@pytest.mark.parametrize("overrides, match", [
    (dict(tafl_reduction="max"), "tafl_reduction"),
    (dict(adv_fraction=0.0), "adv_fraction"),
    (dict(tafl_delta=0.0), "tafl_delta"),
    (dict(train_attack="cw_l2"), "train_attack"),
    (dict(train_eps="300/255"), "train_eps"),
    (dict(train_attack_steps=0), "train_attack_steps"),
    (dict(tafl_gamma=-1.0), "tafl_gamma"),
])
def test_train_config_rejects_bad_robust_fields(overrides, match):
  with pytest.raises(ConfigError, match=match):
    tiny_config(learner="tafl", **overrides).validate()


def test_default_training_attacks_per_learner():
  adml = training.make_train_attack(tiny_config(learner="adml"))
  assert adml.__name__ == "fgsm_attack"
  assert adml.hparams["eps"] == pytest.approx(2 / 255)
  tafl = training.make_train_attack(tiny_config(learner="tafl"))
  assert tafl.__name__ == "pgd_attack"
  assert tafl.hparams == {"eps": pytest.approx(8 / 255), "num_steps": 7,
                          "step_size": pytest.approx(2 / 255),
                            "random_start": True}
  assert training.make_train_attack(tiny_config()) is None


# --- the train step -------------------------------------------------------------

def test_tafl_train_step_compiles_once():
  params, _ = problem(dtype=jnp.float32)
  tasks = [problem(seed, jnp.float32)[1] for seed in (1, 2)]
  batch = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
  pgd = attacks.make_attack("pgd", {"eps": 0.1, "step_size": 0.05,
                                    "num_steps": 3})
  optimizer = training.make_optimizer(1e-3)
  step = training.make_train_step(bound("tafl", attack=pgd), optimizer)
  chex.clear_trace_counter()
  jitted = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=0)
  state = training.init_state(params, optimizer)
  for i in range(3):
    state, metrics = jitted(state, batch, jax.random.key(i))
  assert int(state.step) == 3
  for name in ("loss", "adv_query_accuracy", "query_accuracy",
               "tafl_l_ar_mean", "tafl_l_ar_max", "tafl_weight_max"):
    assert np.isfinite(float(metrics[name])), name


@pytest.mark.integration
@pytest.mark.parametrize("name", ["maml_ad", "adml", "aq", "tafl"])
def test_learner_trains_end_to_end_on_digits(name, tmp_path, digits_train):
  cfg = tiny_config(learner=name, num_steps=2, eval_episodes=0,
                    train_attack_steps=2)
  state = training.train(cfg, str(tmp_path), train_split=digits_train,
                         progress=False)
  assert int(state.step) == 2
  with open(os.path.join(tmp_path, training.METRICS_FILE)) as f:
    lines = [json.loads(line) for line in f]
  assert [m["step"] for m in lines] == [1, 2]
  for m in lines:
    assert np.isfinite(m["loss"])
    assert 0 <= m["adv_query_accuracy"] <= 1 and 0 <= m["query_accuracy"] <= 1
