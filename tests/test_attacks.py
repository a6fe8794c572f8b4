"""Attacks: properties, closed forms, strength ordering, registry and flags.

Two kinds of models:
  * tiny ones on 4×4×1 inputs (a linear classifier, and a "coupled" model that
    normalises its features over the batch like transductive BatchNorm), which
    compile in a fraction of a second, for the properties and closed forms;
  * a conv4 (F=16) trained once per session on the digits train split, attacked
    on 100 held-out train-split images (the test split holds other classes),
    for the strength ordering and C&W's success rate.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advmeta_jax.core import losses
from advmeta_jax import attacks
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError
from tests.conftest import optimizations_on

SHAPE = (4, 4, 1)
DIM = 16
NUM_CLASSES = 3


# --- tiny models ------------------------------------------------------------

def linear_logits(w, b):
  """logits = flatten(x) @ w + b; examples do not interact."""
  return lambda x: x.reshape(x.shape[0], -1) @ w + b


def coupled_logits(w1, w2):
  """A tanh MLP whose first layer is normalised over the batch (like BN)."""
  def logits_fn(x):
    h = x.reshape(x.shape[0], -1) @ w1
    h = (h - h.mean(axis=0)) / jnp.sqrt(h.var(axis=0) + 1e-3)
    return jnp.tanh(h) @ w2
  return logits_fn


def tiny_problem(seed=0, n=8):
  k = jax.random.split(jax.random.key(seed), 4)
  w1 = jax.random.normal(k[0], (DIM, 12))
  w2 = 2.0 * jax.random.normal(k[1], (12, NUM_CLASSES))
  # Images with exact 0s and 1s (saturated pixels) and values in between.
  x = jnp.clip(jax.random.uniform(k[2], (n, *SHAPE), minval=-0.3, maxval=1.3),
               0.0, 1.0)
  logits_fn = coupled_logits(w1, w2)
  y = jnp.argmax(logits_fn(x), axis=-1)   # every point starts correct
  return (w1, w2), x, y


KEY = jax.random.key(42)
# name -> (function, hyperparameters); small step counts, all on the tiny model.
CASES = {
    "fgsm": (attacks.fgsm, dict(eps=0.1)),
    "pgd": (attacks.pgd, dict(eps=0.1, step_size=0.03, num_steps=5, key=KEY)),
    "mi_fgsm": (attacks.mi_fgsm, dict(eps=0.1, num_steps=5)),
    "cw_l2": (attacks.carlini_wagner_l2, dict(c=1.0, num_steps=30)),
    "apgd": (attacks.apgd, dict(eps=0.1, num_steps=10, key=KEY)),
    "apgd_dlr": (attacks.apgd, dict(eps=0.1, num_steps=10, key=KEY,
                                    loss="dlr")),
}
LINF = [name for name in CASES if name != "cw_l2"]


def run(name, logits_fn, x, y, **overrides):
  fn, hparams = CASES[name]
  return fn(logits_fn, x, y, **dict(hparams, **overrides))


def attack_of_weights(name):
  """`(w1, w2, x, y, key, budget) -> x_adv` on the coupled model.

  The budget is ε, or c for C&W; passing it as an argument makes it a traced
  value under `jit`, so one compilation serves ε > 0 and ε = 0.
  """
  fn, hparams = CASES[name]
  budget_name = "c" if name == "cw_l2" else "eps"

  def attack(w1, w2, x, y, key, budget):
    kwargs = dict(hparams, **{budget_name: budget})
    if "key" in kwargs:
      kwargs["key"] = key
    return fn(coupled_logits(w1, w2), x, y, **kwargs)
  return attack


@functools.lru_cache(maxsize=None)
def jitted_attack(name):
  return jax.jit(attack_of_weights(name))


def mean_loss(logits_fn, x, y):
  return float(losses.cross_entropy(logits_fn(x), y))


# --- properties of every attack ----------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_attack_properties(name):
  """In [0, 1] and the ε-ball, effective, budget 0 is the identity,
  deterministic for a key, traced budgets, jit and eager agree."""
  (w1, w2), x, y = tiny_problem()
  logits_fn = coupled_logits(w1, w2)
  budget = CASES[name][1].get("eps", CASES[name][1].get("c"))
  attack = jitted_attack(name)
  x_adv = attack(w1, w2, x, y, KEY, budget)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  if name in LINF:
    assert float(jnp.max(jnp.abs(x_adv - x))) <= budget + 1e-6
    assert mean_loss(logits_fn, x_adv, y) > mean_loss(logits_fn, x, y) + 0.1
  else:
    # C&W returns x or a point that is misclassified in the returned batch,
    # even though this model couples its 8 examples strongly.
    fooled = jnp.argmax(logits_fn(x_adv), -1) != y
    changed = jnp.any(x_adv != x, axis=(1, 2, 3))
    assert float(fooled.mean()) >= 0.25
    np.testing.assert_array_equal(fooled, changed)
    assert float(jnp.max(jnp.linalg.norm((x_adv - x).reshape(8, -1), axis=1))
                 ) < 1.0
  # Budget 0 (ε = 0, or c = 0 for C&W) returns x exactly, even when traced.
  np.testing.assert_array_equal(attack(w1, w2, x, y, KEY, 0.0), x)
  # Deterministic for a fixed key; another key, another random start.
  np.testing.assert_array_equal(attack(w1, w2, x, y, KEY, budget), x_adv)
  if "key" in CASES[name][1]:
    other = attack(w1, w2, x, y, jax.random.key(7), budget)
    assert float(jnp.max(jnp.abs(other - x_adv))) > 1e-3
  # Eager (op by op, concrete hyperparameters) agrees with jit.
  np.testing.assert_allclose(run(name, logits_fn, x, y), x_adv, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_over_a_task_axis_matches_one_task_at_a_time(name):
  tasks = [tiny_problem(seed) for seed in range(3)]
  w1 = jnp.stack([t[0][0] for t in tasks])
  w2 = jnp.stack([t[0][1] for t in tasks])
  x = jnp.stack([t[1] for t in tasks])
  y = jnp.stack([t[2] for t in tasks])
  keys = jax.random.split(KEY, 3)
  budget = CASES[name][1].get("eps", CASES[name][1].get("c"))
  batched = jax.jit(jax.vmap(attack_of_weights(name),
                             in_axes=(0, 0, 0, 0, 0, None)))(
                                 w1, w2, x, y, keys, budget)
  assert batched.shape == x.shape
  for i in range(3):
    np.testing.assert_allclose(
        batched[i], jitted_attack(name)(w1[i], w2[i], x[i], y[i], keys[i],
                                        budget), atol=1e-5)


def test_jitted_attack_is_traced_once_for_many_eps():
  (w1, w2), x, y = tiny_problem()
  logits_fn = coupled_logits(w1, w2)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def attack(x, y, eps):
    return attacks.pgd(logits_fn, x, y, eps=eps, step_size=eps / 4,
                       num_steps=3, key=KEY)

  for eps in (0.01, 0.05, 0.2):
    x_adv = attack(x, y, eps)
    assert float(jnp.max(jnp.abs(x_adv - x))) <= eps + 1e-6
  chex.clear_trace_counter()


# --- closed forms -------------------------------------------------------------

def test_fgsm_on_a_binary_linear_model_steps_along_the_other_class():
  k1, k2 = jax.random.split(jax.random.key(3))
  w = jax.random.normal(k1, (DIM, 2))
  x = jax.random.uniform(k2, (6, *SHAPE), minval=0.3, maxval=0.7)
  y = jnp.array([0, 1, 0, 1, 0, 1])
  x_adv = jax.jit(functools.partial(
      attacks.fgsm, linear_logits(w, jnp.zeros(2)), eps=0.1))(x, y)
  # ∇x CE = −(1 − p_y)(w_y − w_other): the sign of w_other − w_y.
  direction = np.sign(np.asarray(w[:, 1] - w[:, 0]))
  expected = np.asarray(x).reshape(6, -1) + 0.1 * np.where(
      np.asarray(y)[:, None] == 0, direction, -direction)
  np.testing.assert_array_equal(np.asarray(x_adv).reshape(6, -1),
                                expected.astype(np.float32))


def test_fgsm_on_a_multiclass_linear_model_matches_the_analytic_gradient():
  k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
  w = jax.random.normal(k1, (DIM, 5))
  b = jax.random.normal(k2, (5,))
  x = jax.random.uniform(k3, (7, *SHAPE))
  y = jnp.arange(7) % 5
  x_adv = jax.jit(functools.partial(
      attacks.fgsm, linear_logits(w, b), eps=0.05))(x, y)
  flat = np.asarray(x, np.float64).reshape(7, -1)
  z = flat @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  grad = (p - np.eye(5)[np.asarray(y)]) @ np.asarray(w, np.float64).T
  expected = np.clip(flat + 0.05 * np.sign(grad), 0, 1).reshape(x.shape)
  np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_fgsm_is_one_pgd_step_of_size_eps_without_random_start():
  (w1, w2), x, y = tiny_problem()
  logits_fn = coupled_logits(w1, w2)
  np.testing.assert_array_equal(
      attacks.fgsm(logits_fn, x, y, eps=0.07),
      attacks.pgd(logits_fn, x, y, eps=0.07, step_size=0.07, num_steps=1,
                  random_start=False))


def test_mi_fgsm_on_a_binary_linear_model_reaches_the_fgsm_corner():
  # The gradient's sign never changes on a binary linear model, so T steps of
  # ε/T with momentum end exactly where one FGSM step of ε does.
  k1, k2 = jax.random.split(jax.random.key(5))
  w = jax.random.normal(k1, (DIM, 2))
  x = jax.random.uniform(k2, (6, *SHAPE), minval=0.3, maxval=0.7)
  y = jnp.array([0, 1] * 3)
  logits_fn = linear_logits(w, jnp.zeros(2))
  np.testing.assert_allclose(
      attacks.mi_fgsm(logits_fn, x, y, eps=0.1, num_steps=4),
      attacks.fgsm(logits_fn, x, y, eps=0.1), atol=1e-6)


def test_tafl_codes_pgd_and_mi_fgsm_on_a_binary_linear_model():
  """advertorch's LinfPGDAttack(eps=0.05, nb_iter=10, rand_init=False) with
  its default step 0.01, and MomentumIterativeAttack(eps, nb_iter) (step
  0.01, decay 1), as the TAFL authors' code builds them: on a binary linear
  model the gradient's sign never changes, so both walk 0.01 per step along
  it and stop at ε after 5 steps: x + 0.05·sign(w_other − w_y), clipped to
  [0, 1]. The registry settings of tafl_table1 are these."""
  k1, k2 = jax.random.split(jax.random.key(8))
  w = jax.random.normal(k1, (DIM, 2))
  x = jax.random.uniform(k2, (6, *SHAPE), minval=0.0, maxval=1.0)
  y = jnp.array([0, 1] * 3)
  direction = np.sign(np.asarray(w[:, 1] - w[:, 0]))
  sign = np.where(np.asarray(y)[:, None] == 0, direction, -direction)
  expected = np.clip(np.asarray(x).reshape(6, -1) + 0.05 * sign, 0, 1)
  logits_fn = linear_logits(w, jnp.zeros(2))
  pgd = attacks.make_attack("pgd", dict(eps="0.05", step_size=0.01,
                                        num_steps=10, random_start=False))
  mi = attacks.make_attack("mi_fgsm", dict(eps="0.05", step_size=0.01,
                                           num_steps=10, decay=1.0))
  for attack in (pgd, mi):
    np.testing.assert_allclose(
        np.asarray(jax.jit(attack, static_argnums=0)(logits_fn, x, y)
                   ).reshape(6, -1), expected, atol=1e-6)
  # Three steps of 0.01 do not reach ε yet.
  three = attacks.pgd(logits_fn, x, y, eps=0.05, step_size=0.01, num_steps=3,
                      random_start=False)
  np.testing.assert_allclose(
      np.asarray(three).reshape(6, -1),
      np.clip(np.asarray(x).reshape(6, -1) + 0.03 * sign, 0, 1), atol=1e-6)


def binary_linear_problem():
  """Ten points away from the box edges, labelled by a 2-class linear model."""
  k1, k2 = jax.random.split(jax.random.key(6))
  w = 0.5 * jax.random.normal(k1, (DIM, 2))
  x = jax.random.uniform(k2, (10, *SHAPE), minval=0.35, maxval=0.65)
  logits_fn = linear_logits(w, jnp.zeros(2))
  return w, x, jnp.argmax(logits_fn(x), axis=-1), logits_fn


def test_cw_finds_the_minimal_l2_perturbation_of_a_linear_classifier():
  # Binary linear classifier: the closest misclassified point is at distance
  # |m| / ‖w_y − w_o‖ along w_o − w_y (inside the box for these points).
  w, x, y, logits_fn = binary_linear_problem()
  u = np.asarray(w[:, 1] - w[:, 0])
  m = np.abs(np.asarray(x).reshape(10, -1) @ u)
  minimal = m / np.linalg.norm(u)
  assert minimal.min() > 0.02
  x_adv = jax.jit(functools.partial(
      attacks.carlini_wagner_l2, logits_fn, c=10.0, num_steps=300))(x, y)
  assert bool(jnp.all(jnp.argmax(logits_fn(x_adv), -1) != y))
  found = np.linalg.norm(np.asarray(x_adv - x).reshape(10, -1), axis=1)
  np.testing.assert_array_less(minimal * (1 - 1e-3), found)   # never below
  np.testing.assert_array_less(found, minimal * 1.03 + 1e-3)  # within 3%
  # Without batch coupling the batch-consistency machinery changes nothing.
  np.testing.assert_array_equal(
      attacks.carlini_wagner_l2(logits_fn, x, y, c=10.0, num_steps=300,
                                batch_consistent=False), x_adv)


def test_cw_binary_search_raises_a_too_small_constant():
  _, x, y, logits_fn = binary_linear_problem()
  cw = functools.partial(attacks.carlini_wagner_l2, logits_fn, c=1e-3,
                         num_steps=100)
  # c = 1e-3: the distance term wins and nothing is fooled: x comes back.
  np.testing.assert_array_equal(cw(x, y), x)
  # Three failures multiply c by 10 each time; the fourth round succeeds.
  fooled = jnp.argmax(logits_fn(cw(x, y, binary_search_steps=5)), -1) != y
  assert bool(jnp.all(fooled))


def test_dlr_loss_matches_its_definition():
  logits = jnp.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
  y = jnp.array([0, 1])
  # Example 0 is correct: −(3 − 1)/(3 − 0); example 1 is not: −(2 − 5)/(5 − 1).
  np.testing.assert_allclose(attacks.dlr_loss(logits, y),
                             [-2.0 / 3.0, 3.0 / 4.0], rtol=1e-6)
  np.testing.assert_allclose(attacks.dlr_loss(10 * logits + 3, y),
                             attacks.dlr_loss(logits, y), rtol=1e-5)
  with pytest.raises(ConfigError, match="at least 3 classes"):
    attacks.dlr_loss(jnp.zeros((2, 2)), jnp.zeros(2, jnp.int32))


def test_apgd_checkpoints_follow_the_paper():
  # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99; w_j = ⌈p_j·N⌉.
  assert attacks.apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
  assert attacks.apgd_checkpoints(10) == (3, 5, 6, 7, 8, 9, 10)
  assert attacks.apgd_checkpoints(0) == ()


# --- a small trained conv4 -------------------------------------------------

@pytest.fixture(scope="session")
def trained_conv4(digits_train):
  """conv4 (F=16) trained for 150 Adam steps; 100 held-out images to attack."""
  images = digits_train.images.astype(np.float32) / 255.0
  labels = digits_train.labels.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))
  held_out, train = order[:100], order[100:]
  x_train, y_train = jnp.asarray(images[train]), jnp.asarray(labels[train])
  model = models.make_conv4(num_classes=5, filters=16, image_size=16)
  apply_fn = models.make_apply_fn(model)
  params = jax.jit(lambda key: models.init_params(model, key, (16, 16, 1)))(
      jax.random.key(0))
  optimizer = optax.adam(3e-3)

  @jax.jit
  def fit(params, key):
    def step(carry, key):
      params, opt_state = carry
      idx = jax.random.choice(key, x_train.shape[0], (64,), replace=False)
      grads = jax.grad(lambda p: losses.cross_entropy(
          apply_fn(p, x_train[idx]), y_train[idx]))(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                  jax.random.split(key, 150))
    return params

  with optimizations_on():       # 150 steps run: compile them optimized
    params = fit(params, jax.random.key(1))
  logits_fn = jax.jit(lambda z: apply_fn(params, z))
  x, y = jnp.asarray(images[held_out]), jnp.asarray(labels[held_out])
  assert attacks.attack_accuracy(logits_fn, x, y) >= 0.9
  return logits_fn, x, y


def test_attack_strength_ordering_on_a_trained_model(trained_conv4,
                                                    optimized):
  del optimized
  logits_fn, x, y = trained_conv4
  report = attacks.check_attack_strength(
      logits_fn, x, y, eps="16/255", key=jax.random.key(0), pgd_steps=(5, 20))
  print(report)
  assert report.ok, str(report)
  acc = report.accuracies
  # The orderings are not vacuous: the attacks really do bite at this ε.
  assert acc["pgd20"] <= acc["clean"] - 0.2
  assert acc["apgd20"] <= acc["fgsm"] - 0.2
  assert report.eps_sweep[-1][1] <= 0.05


def test_strength_check_flags_masked_gradients():
  # stop_gradient on the input: every gradient is zero, the attacks do nothing.
  (w1, w2), x, y = tiny_problem(n=32)
  masked = lambda z: coupled_logits(w1, w2)(jax.lax.stop_gradient(z))
  report = attacks.check_attack_strength(masked, x, y, eps=0.1,
                                         key=jax.random.key(0))
  assert not report.ok
  assert any("huge budget" in f for f in report.findings), report.findings
  # The same tiny model with its gradients passes.
  honest = attacks.check_attack_strength(coupled_logits(w1, w2), x, y,
                                         eps=0.1, key=jax.random.key(0),
                                         large_eps=1.0)
  assert honest.ok, str(honest)


def test_cw_default_settings_fool_an_undefended_model(trained_conv4):
  logits_fn, x, y = trained_conv4
  correct = jnp.argmax(logits_fn(x), -1) == y
  x_adv = jax.jit(functools.partial(attacks.carlini_wagner_l2, logits_fn,
                                    c=1.0, num_steps=100))(x, y)
  fooled = jnp.argmax(logits_fn(x_adv), -1) != y    # in the returned batch
  success = float(fooled[correct].mean())
  l2 = jnp.linalg.norm((x_adv - x).reshape(100, -1), axis=1)
  print(f"C&W success {success:.3f}, median L2 {float(jnp.median(l2)):.3f}")
  assert success >= 0.95
  assert float(jnp.median(l2[fooled])) < 1.5   # small: 256 pixels in [0, 1]


# --- validation, registry, flags ----------------------------------------------

@pytest.mark.parametrize("name,overrides,message", [
    ("fgsm", dict(eps=-0.1), r"eps must lie in \[0, 1\].*got -0.1"),
    ("fgsm", dict(eps=8), r"eps must lie in \[0, 1\].*got 8"),
    ("pgd", dict(num_steps=-1), "num_steps must be an integer >= 0, got -1"),
    ("pgd", dict(num_steps=2.5), "num_steps must be a Python integer"),
    ("pgd", dict(step_size=0.0), "step_size must be > 0, got 0.0"),
    ("pgd", dict(key=None), "needs a PRNG key"),
    ("mi_fgsm", dict(decay=-1.0), "decay must be >= 0, got -1.0"),
    ("cw_l2", dict(binary_search_steps=0), "binary_search_steps must be an "
     "integer >= 1, got 0"),
    ("cw_l2", dict(learning_rate=0.0), "learning_rate must be > 0"),
    ("apgd", dict(loss="margin"), "unknown APGD loss 'margin'; choose one of: "
     "ce, dlr"),
])
def test_bad_hyperparameters_are_refused_clearly(name, overrides, message):
  (w1, w2), x, y = tiny_problem()
  with pytest.raises(ConfigError, match=message):
    run(name, coupled_logits(w1, w2), x, y, **overrides)


def test_pgd_without_random_start_needs_no_key_and_uint8_is_refused():
  (w1, w2), x, y = tiny_problem()
  logits_fn = coupled_logits(w1, w2)
  attacks.pgd(logits_fn, x, y, eps=0.1, step_size=0.05, num_steps=1,
              random_start=False)
  with pytest.raises(ConfigError, match="float images"):
    attacks.fgsm(logits_fn, (x * 255).astype(jnp.uint8), y, eps=0.1)


@pytest.mark.parametrize("text,value", [
    ("8/255", 8 / 255), ("2/255", 2 / 255), ("0.2/255", 0.2 / 255),
    ("0.03", 0.03), (" 0 ", 0.0), (0.5, 0.5), ("1", 1.0)])
def test_parse_eps_accepts_numbers_and_fractions(text, value):
  assert attacks.parse_eps(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text,message", [
    ("-1/255", ">= 0"), ("2", "at most 1.*write 2/255"), ("abc", "fraction"),
    ("8/0", "divides by zero"), ("1/2/3", "fraction"), ("nan", "finite"),
    (None, "fraction")])
def test_parse_eps_refuses_bad_values(text, message):
  with pytest.raises(ConfigError, match=message):
    attacks.parse_eps(text)


def test_registry_builds_an_attack_from_flags():
  assert set(attacks.names()) == {"apgd", "apgd_t", "autoattack", "cw_l2",
                                  "fab", "fgsm", "mi_fgsm", "pgd", "square"}
  assert attacks.get("carlini_wagner_l2").fn is attacks.carlini_wagner_l2
  with pytest.raises(ConfigError, match="unknown attack 'deepfool'; choose "
                     "one of: apgd, apgd_t, autoattack, cw_l2, fab, fgsm, "
                     "mi_fgsm, pgd, square"):
    attacks.get("deepfool")
  (w1, w2), x, y = tiny_problem()
  logits_fn = coupled_logits(w1, w2)
  attack = attacks.make_attack(
      "pgd", {"eps": "8/255", "step_size": "2/255", "num_steps": "3",
              "random_start": "true"})
  np.testing.assert_array_equal(
      attack(logits_fn, x, y, key=KEY),
      attacks.pgd(logits_fn, x, y, eps=8 / 255, step_size=2 / 255,
                  num_steps=3, key=KEY))
  # Every attack is called the same way: a deterministic one ignores the key.
  fgsm = attacks.make_attack("fgsm", eps=0.1)
  np.testing.assert_array_equal(fgsm(logits_fn, x, y, key=KEY),
                                attacks.fgsm(logits_fn, x, y, eps=0.1))


@pytest.mark.parametrize("name,hparams,message", [
    ("pgd", {"eps": 0.1, "step_size": 0.01, "num_steps": 3, "steps": 3},
     "no hyperparameter.*steps; allowed: eps, step_size, num_steps, "
     "random_start"),
    ("pgd", {"eps": 0.1, "num_steps": 3}, "needs hyperparameter.*step_size"),
    ("apgd", {"eps": 0.1, "num_steps": 3, "key": 0}, "no hyperparameter.*key"),
    ("pgd", {"eps": "9", "step_size": 0.01, "num_steps": 3}, "at most 1"),
    ("apgd", {"eps": 0.1, "num_steps": 3, "loss": "hinge"}, "unknown APGD"),
    ("mi_fgsm", {"eps": 0.1, "num_steps": "many"}, "num_steps must be an "
     "integer"),
])
def test_registry_refuses_bad_flags(name, hparams, message):
  with pytest.raises(ConfigError, match=message):
    attacks.make_attack(name, hparams)
