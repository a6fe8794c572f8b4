"""AutoAttack and its new members: APGD-T, FAB-T/FAB, Square.

Three kinds of checks:
  * properties of every attack on tiny 4×4×1 models with 5 classes (a
    "coupled" one that normalises its features over the batch like
    transductive BatchNorm, and a "plain" one whose examples do not
    interact): box, ball, ε = 0, keys, jit = eager, vmap = per task;
    closed forms (FAB's projection, the Square schedule, the targeted DLR
    loss, FAB's minimal perturbation of a linear classifier);
  * on a small CNN trained on the digits train split (no BatchNorm, so the
    ensemble's per-example bookkeeping is exact): AutoAttack ≤ each member
    and ≤ PGD-20 per example; on the same CNN behind a quantized
    `stop_gradient` input, PGD and APGD do nothing while Square fools most
    points and `check_attack_strength` says so;
  * against torchattacks (skipped when torch or torchattacks is absent): the
    building blocks exactly, and (slow) the robust accuracies of
    `launch/crosscheck_autoattack.py`.
"""


import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax import attacks
from advmeta_jax.attacks import linf
from advmeta_jax.attacks import norms
from advmeta_jax.errors import ConfigError
from advmeta_jax.benchmarks import crosscheck_autoattack as crosscheck
from tests.conftest import optimizations_on

@pytest.fixture(scope="module", autouse=True)
def _optimized():
  """The whole module with XLA's full optimizations (tests/conftest.py)."""
  with optimizations_on():
    yield

# About 3.5 minutes on a 2-core CPU (measured: 212 s serially, with other
# jobs running). The "plus" report test and the robust accuracies against
# torchattacks are marked slow: python -m pytest -m slow tests/test_autoattack.py

SHAPE = (4, 4, 1)
DIM = 16
NUM_CLASSES = 5
KEY = jax.random.key(42)


# --- tiny models ------------------------------------------------------------

def coupled_logits(w1, w2):
  """A tanh MLP whose first layer is normalised over the batch (like BN)."""
  def logits_fn(x):
    h = x.reshape(x.shape[0], -1) @ w1
    h = (h - h.mean(axis=0)) / jnp.sqrt(h.var(axis=0) + 1e-3)
    return jnp.tanh(h) @ w2
  return logits_fn


def plain_logits(w1, w2):
  """The same MLP without the batch normalisation."""
  return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1 - 3.0) @ w2


def tiny_problem(seed=0, n=8, model=coupled_logits):
  k = jax.random.split(jax.random.key(seed), 3)
  w1 = jax.random.normal(k[0], (DIM, 12))
  w2 = 2.0 * jax.random.normal(k[1], (12, NUM_CLASSES))
  x = jnp.clip(jax.random.uniform(k[2], (n, *SHAPE), minval=-0.3, maxval=1.3),
               0.0, 1.0)
  y = jnp.argmax(model(w1, w2)(x), axis=-1)   # every point starts correct
  return (w1, w2), x, y


# name -> (function, hyperparameters, uses the key); few steps and queries.
CASES = {
    "apgd_t": (attacks.apgd_t, dict(eps=0.15, num_steps=5, key=KEY), True),
    "fab_t": (attacks.fab, dict(eps=0.15, num_steps=5), False),
    # (The key only draws the second restart's start: it rarely matters.)
    "fab_restarts": (attacks.fab, dict(eps=0.15, num_steps=5, key=KEY,
                                       targeted=False, num_restarts=2),
                     False),
    "square": (attacks.square, dict(eps=0.15, num_queries=40, key=KEY), True),
    "autoattack": (attacks.autoattack, dict(eps=0.15, num_steps=3,
                                            num_queries=20,
                                            num_target_classes=2, key=KEY),
                   True),
}


def attack_of_weights(name, model=coupled_logits):
  """`(w1, w2, x, y, key, eps) -> x_adv`; ε is an argument, so it is traced
  under `jit` and one compilation serves ε > 0 and ε = 0."""
  fn, hparams, _ = CASES[name]

  def attack(w1, w2, x, y, key, eps):
    kwargs = dict(hparams, eps=eps)
    if "key" in kwargs:
      kwargs["key"] = key
    return fn(model(w1, w2), x, y, **kwargs)
  return attack


@functools.lru_cache(maxsize=None)
def jitted_attack(name, model=coupled_logits):
  return jax.jit(attack_of_weights(name, model))


@pytest.mark.parametrize("name", list(CASES))
def test_attack_properties(name):
  """In [0, 1] and the ε-ball, effective, ε = 0 is the identity, determined
  by the key, eager agrees with jit."""
  fn, hparams, uses_key = CASES[name]
  (w1, w2), x, y = tiny_problem()
  logits_fn = coupled_logits(w1, w2)
  eps = hparams["eps"]
  attack = jitted_attack(name)
  x_adv = attack(w1, w2, x, y, KEY, eps)
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert float(jnp.max(jnp.abs(x_adv - x))) <= eps + 1e-6
  fooled = jnp.argmax(logits_fn(x_adv), -1) != y
  assert int(fooled.sum()) >= 1
  np.testing.assert_array_equal(attack(w1, w2, x, y, KEY, 0.0), x)
  np.testing.assert_array_equal(attack(w1, w2, x, y, KEY, eps), x_adv)
  if uses_key:
    other = attack(w1, w2, x, y, jax.random.key(7), eps)
    assert float(jnp.max(jnp.abs(other - x_adv))) > 1e-3
  attack(w1, w2, x, y, KEY, 0.05)
  assert attack._cache_size() == 1     # ε is traced: one compilation for all
  np.testing.assert_allclose(fn(logits_fn, x, y, **hparams), x_adv, atol=1e-5)


def test_square_with_the_references_sampling_stays_in_the_ball():
  (w1, w2), x, y = tiny_problem(n=16, model=plain_logits)
  attack = jax.jit(lambda x, y, eps: attacks.square(
      plain_logits(w1, w2), x, y, eps=eps, key=KEY, num_queries=40,
      shared_squares=True))
  x_adv = attack(x, y, 0.15)
  assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.15 + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert int(jnp.sum(jnp.argmax(plain_logits(w1, w2)(x_adv), -1) != y)) >= 1
  np.testing.assert_array_equal(attack(x, y, 0.0), x)


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_over_a_task_axis_matches_one_task_at_a_time(name):
  tasks = [tiny_problem(seed) for seed in range(3)]
  w1 = jnp.stack([t[0][0] for t in tasks])
  w2 = jnp.stack([t[0][1] for t in tasks])
  x = jnp.stack([t[1] for t in tasks])
  y = jnp.stack([t[2] for t in tasks])
  keys = jax.random.split(KEY, 3)
  eps = CASES[name][1]["eps"]
  batched = jax.jit(jax.vmap(attack_of_weights(name),
                             in_axes=(0, 0, 0, 0, 0, None)))(
                                 w1, w2, x, y, keys, eps)
  assert batched.shape == x.shape
  for i in range(3):
    np.testing.assert_allclose(
        batched[i], jitted_attack(name)(w1[i], w2[i], x[i], y[i], keys[i],
                                        eps), atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_failures_come_back_as_x_and_wrong_points_are_left_alone(name):
  # Without batch coupling an example is changed exactly when it is fooled.
  (w1, w2), x, y = tiny_problem(n=16, model=plain_logits)
  y = y.at[:4].set((y[:4] + 1) % NUM_CLASSES)        # wrong from the start
  x_adv = jitted_attack(name, plain_logits)(w1, w2, x, y, KEY,
                                            CASES[name][1]["eps"])
  np.testing.assert_array_equal(x_adv[:4], x[:4])
  fooled = jnp.argmax(plain_logits(w1, w2)(x_adv), -1) != y
  changed = jnp.any(x_adv != x, axis=(1, 2, 3))
  np.testing.assert_array_equal(fooled[4:], changed[4:])
  assert 1 <= int(fooled[4:].sum()) < 12


@pytest.mark.parametrize("version", [
    "standard", pytest.param("plus", marks=pytest.mark.slow)])
def test_report_is_monotone_and_matches_the_returned_batch(version):
  (w1, w2), x, y = tiny_problem(n=16, model=plain_logits)
  logits_fn = plain_logits(w1, w2)
  x_adv, report = jax.jit(functools.partial(
      attacks.autoattack_with_report, logits_fn, eps=0.15, key=KEY,
      num_steps=3, num_queries=20, version=version))(x, y)
  accuracy = attacks.robust_accuracies(report)
  assert tuple(accuracy) == ("clean",) + attacks.autoattack_stages(version)
  assert accuracy["clean"] == 1.0
  masks = [report["robust"][name] for name in accuracy]
  for before, after in zip(masks[:-1], masks[1:]):
    assert not bool(jnp.any(after & ~before))        # only ever shrinks
  for name, value in accuracy.items():
    assert value == pytest.approx(float(report["robust"][name].mean()))
  # Without batch coupling the bookkeeping is the returned batch's truth.
  np.testing.assert_array_equal(masks[-1],
                                jnp.argmax(logits_fn(x_adv), -1) == y)
  assert float(report["reevaluated"]) == pytest.approx(
      list(accuracy.values())[-1])


def test_rand_version_runs_apgd_ce_and_dlr_with_eot_on_a_randomized_model():
  """version="rand": APGD-CE then APGD-DLR, gradients averaged over EOT
  draws of a model that takes a key (noise added to its input)."""
  (w1, w2), x, y = tiny_problem(n=12, model=plain_logits)
  base = plain_logits(w1, w2)
  draws = []

  def randomized(z, key):
    draws.append(key)   # traced once per distinct call site
    return base(z + 0.05 * jax.random.normal(key, z.shape))

  x_adv, report = jax.jit(lambda x, y: attacks.autoattack_with_report(
      randomized, x, y, eps=0.15, key=KEY, version="rand", num_steps=3,
      eot_iter=4))(x, y)
  accuracy = attacks.robust_accuracies(report)
  assert tuple(accuracy) == ("clean", "apgd-ce", "apgd-dlr")
  assert accuracy["apgd-dlr"] <= accuracy["apgd-ce"] <= accuracy["clean"]
  assert float(jnp.abs(x_adv - x).max()) <= 0.15 + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert draws   # the model was called with keys
  # A deterministic logits_fn(x) is accepted: every draw is the same.
  x_det = attacks.autoattack(base, x, y, eps=0.15, key=KEY, version="rand",
                             num_steps=3, eot_iter=2)
  assert float(jnp.abs(x_det - x).max()) <= 0.15 + 1e-6


def test_rand_version_takes_the_eot_gradient_at_the_batch_it_scores():
  """With a model whose logits depend on the batch (its mean, as
  transductive BatchNorm's do), APGD-DLR's EOT gradients see the examples
  APGD-CE fooled at their adversarial points, as the batch is scored, not
  at the clean x. The model records every batch it is called with and the
  key of the call; APGD-DLR's draws are known from the stage keys."""
  n, steps = 10, 4
  w = jax.random.normal(jax.random.key(1), (16, 4))
  x = jax.random.uniform(jax.random.key(2), (n, 4, 4, 1))

  def base(z):
    f = z.reshape(z.shape[0], -1)
    return (f - f.mean(0, keepdims=True)) @ w

  y = jnp.argmax(base(x), -1)
  seen = []

  def randomized(z, key):
    jax.debug.callback(lambda k, b: seen.append(
        (tuple(np.asarray(k).ravel()), np.asarray(b))),
                       jax.random.key_data(key), z)
    return base(z)

  x_adv, report = jax.jit(lambda x, y: attacks.autoattack_with_report(
      randomized, x, y, eps=0.05, key=KEY, version="rand", num_steps=steps,
      eot_iter=1))(x, y)
  robust = {k: np.asarray(v) for k, v in report["robust"].items()}
  fooled_by_ce = robust["clean"] & ~robust["apgd-ce"]
  assert 0 < fooled_by_ce.sum() < n and robust["apgd-ce"].any()
  # Stage i's key is split(KEY, 2)[i]; its EOT draw at iterate t is
  # split(fold_in(fold_in(stage key, 1), t), eot_iter)[0].
  eot_key = jax.random.fold_in(jax.random.split(KEY, 2)[1], 1)
  dlr_draws = {tuple(np.asarray(jax.random.key_data(jax.random.split(
      jax.random.fold_in(eot_key, t), 1)[0])).ravel())
               for t in range(steps + 2)}
  batches = [b for k, b in seen if k in dlr_draws]
  assert batches
  for b in batches:
    np.testing.assert_array_equal(b[fooled_by_ce],
                                  np.asarray(x_adv)[fooled_by_ce])


def test_eot_gradient_is_the_mean_over_draws():
  (w1, w2), x, y = tiny_problem(n=6, model=plain_logits)
  base = plain_logits(w1, w2)
  randomized = lambda z, k: base(z + 0.1 * jax.random.normal(k, z.shape))
  loss, grad, logits = linf.eot_loss_and_input_gradient(
      randomized, linf.cross_entropy_per_example, x, y, KEY, 5)
  per_draw = [linf._loss_and_input_gradient(
      lambda z, k=k: randomized(z, k), linf.cross_entropy_per_example, x, y)
              for k in jax.random.split(KEY, 5)]
  np.testing.assert_allclose(grad, np.mean([g for _, g, _ in per_draw], 0),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(loss, per_draw[-1][0], rtol=1e-6)
  np.testing.assert_allclose(logits, per_draw[-1][2], rtol=1e-6)


def test_rand_version_from_flags_and_bad_eot():
  attack = attacks.make_attack("autoattack", {"eps": "8/255",
                                              "version": "rand",
                                              "eot_iter": "3",
                                              "num_steps": "2"})
  assert attack.hparams["eot_iter"] == 3
  with pytest.raises(ConfigError, match="eot_iter"):
    attacks.make_attack("autoattack", {"eps": "8/255", "eot_iter": "0"})
  with pytest.raises(ConfigError, match="standard, plus, rand"):
    attacks.make_attack("autoattack", {"eps": "8/255", "version": "fast"})


# --- closed forms -------------------------------------------------------------

def _projection_by_bisection(t, w, b):
  """min ‖d‖∞ s.t. ⟨w, t + d⟩ = b, t + d ∈ [0, 1]^D, by bisection on λ."""
  out = np.zeros_like(t)
  for i in range(t.shape[0]):
    sign = 1.0 if w[i] @ t[i] - b[i] >= 0 else -1.0
    wi = w[i] * sign
    gap = abs(w[i] @ t[i] - b[i])
    p = np.where(wi < 0, 1 - t[i], t[i])
    moved = lambda lam: np.sum(np.abs(wi) * np.minimum(lam, p))
    if moved(1.0) < gap:      # unreachable: the corner
      lam = 1.0
    else:
      lo, hi = 0.0, 1.0
      for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if moved(mid) < gap else (lo, mid)
      lam = hi
    d = np.where(wi < 0, np.minimum(lam, 1 - t[i]), np.maximum(-lam, -t[i]))
    out[i] = np.where(wi != 0, d, 0.0)
  return out


def test_fab_projection_is_the_minimal_linf_step_inside_the_box():
  rng = np.random.default_rng(0)
  t = rng.uniform(0, 1, (40, 12))
  t[:, :3] = np.round(t[:, :3])                     # saturated pixels
  w = rng.normal(size=(40, 12))
  w[:5, :4] = 0.0
  b = w @ t.T
  b = np.diag(b) + rng.normal(size=40) * rng.uniform(0, 4, 40)
  d = np.asarray(attacks.project_linf_hyperplane(
      jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32),
      jnp.asarray(b, jnp.float32)))
  np.testing.assert_allclose(d, _projection_by_bisection(t, w, b), atol=2e-5)
  assert (t + d).min() >= -1e-6 and (t + d).max() <= 1 + 1e-6
  reachable = np.abs(np.sum(w * (t + d), 1) - b) < 1e-3
  assert 10 <= reachable.sum() < 40               # both cases are exercised
  # Far from the box edges: d = −sign(w) · gap / ‖w‖₁ along every pixel.
  t = np.full((1, 12), 0.5)
  d = attacks.project_linf_hyperplane(jnp.asarray(t, jnp.float32),
                                      jnp.asarray(w[5:6], jnp.float32),
                                      jnp.asarray(w[5] @ t[0] - 0.3)[None])
  lam = 0.3 / np.abs(w[5]).sum()
  np.testing.assert_allclose(d[0], -np.sign(w[5]) * lam, rtol=1e-5)


def test_fab_finds_the_minimal_perturbation_of_a_linear_classifier():
  # Linear logits: the boundary to class t is a hyperplane, at L∞ distance
  # |z_y − z_t| / ‖w_y − w_t‖₁ (inside the box for these points).
  k1, k2 = jax.random.split(jax.random.key(6))
  w = 0.5 * jax.random.normal(k1, (DIM, 3))
  x = jax.random.uniform(k2, (10, *SHAPE), minval=0.4, maxval=0.6)
  logits_fn = lambda z: z.reshape(z.shape[0], -1) @ w
  logits = logits_fn(x)
  y = jnp.argmax(logits, -1)
  flat_w = np.asarray(w)
  second = np.argsort(np.asarray(logits), -1)[:, -2]
  distance = np.array([
      (logits[i, y[i]] - logits[i, second[i]]) /
      np.abs(flat_w[:, y[i]] - flat_w[:, second[i]]).sum()
      for i in range(10)])
  x_adv = jax.jit(functools.partial(attacks.fab, logits_fn, eps=1.0,
                                    num_steps=50, num_target_classes=1))(x, y)
  found = np.asarray(jnp.max(jnp.abs(x_adv - x).reshape(10, -1), axis=1))
  assert bool(jnp.all(jnp.argmax(logits_fn(x_adv), -1) != y))
  np.testing.assert_array_less(distance * (1 - 1e-4), found)   # never below
  np.testing.assert_array_less(found, distance * 1.02)          # within 2%


def test_square_schedule_follows_the_reference():
  p = functools.partial(attacks.square_fraction, num_queries=5000,
                        p_init=0.8, rescale_schedule=False)
  assert [p(i) for i in (0, 10, 11, 50, 51, 200, 201, 4001, 8001)] == [
      0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 128, 0.8 / 512]
  # Rescaled to 1000 queries, iteration i acts like 10·i.
  rescaled = functools.partial(attacks.square_fraction, num_queries=1000,
                               p_init=0.8, rescale_schedule=True)
  assert rescaled(1) == 0.8 and rescaled(2) == 0.4 and rescaled(801) == (
      0.8 / 512)
  sizes = attacks.square_sizes(16, 16, num_queries=5000, p_init=0.8,
                               rescale_schedule=False)
  assert sizes[0] == 14 and sizes[11] == 10 and sizes[-1] == 1
  assert sizes.shape == (5000,) and np.all(np.diff(sizes) <= 0)


def test_targeted_dlr_loss_matches_its_definition():
  logits = jnp.array([[3.0, 1.0, 0.0, -1.0, -2.0], [0.0, 2.0, 5.0, 1.0, 0.5]])
  y, t = jnp.array([0, 1]), jnp.array([1, 3])
  # −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)
  np.testing.assert_allclose(
      attacks.dlr_targeted_loss(logits, y, t),
      [-(3.0 - 1.0) / (3.0 + 0.5), -(2.0 - 1.0) / (5.0 - 0.75)], rtol=1e-6)
  np.testing.assert_allclose(attacks.dlr_targeted_loss(7 * logits - 2, y, t),
                             attacks.dlr_targeted_loss(logits, y, t),
                             rtol=1e-5)
  three = logits[:, :3]     # no z_π4: the denominator is z_π1 − z_π3
  np.testing.assert_allclose(attacks.dlr_targeted_loss(three, y, t % 3),
                             [-(3.0 - 1.0) / 3.0, -(2.0 - 0.0) / 5.0],
                             rtol=1e-6)
  with pytest.raises(ConfigError, match="at least 3 classes"):
    attacks.dlr_targeted_loss(logits[:, :2], y, y)


# --- validation and registry ---------------------------------------------------

@pytest.mark.parametrize("fn,kwargs,message", [
    (attacks.square, dict(eps=0.1, key=KEY, num_queries=-1),
     "num_queries must be an integer >= 0"),
    (attacks.square, dict(eps=0.1, key=KEY, p_init=0.0), r"p_init .*\(0, 1\]"),
    (attacks.square, dict(eps=0.1, key=None), "needs a PRNG key"),
    (attacks.fab, dict(eps=0.1, beta=0.0), r"beta must lie in \(0, 1\]"),
    (attacks.fab, dict(eps=0.1, alpha_max=2.0), r"alpha_max must lie in"),
    (attacks.fab, dict(eps=0.1, num_restarts=2), "needs a PRNG key"),
    (attacks.apgd_t, dict(eps=0.1, key=KEY, num_target_classes=0),
     "num_target_classes must be an integer >= 1"),
    (attacks.autoattack, dict(eps=0.1, key=KEY, version="fast"),
     "unknown AutoAttack version 'fast'; choose one of: standard, plus"),
    (attacks.autoattack, dict(eps=1.5, key=KEY), r"eps must lie in \[0, 1\]"),
])
def test_bad_hyperparameters_are_refused_clearly(fn, kwargs, message):
  (w1, w2), x, y = tiny_problem()
  with pytest.raises(ConfigError, match=message):
    fn(coupled_logits(w1, w2), x, y, **kwargs)


def test_two_classes_are_refused_by_the_dlr_attacks():
  (w1, w2), x, _ = tiny_problem()
  logits_fn = lambda z: coupled_logits(w1, w2)(z)[:, :2]
  y = jnp.argmax(logits_fn(x), -1)
  for fn in (attacks.apgd_t, attacks.autoattack):
    with pytest.raises(ConfigError, match="at least 3 classes"):
      fn(logits_fn, x, y, eps=0.1, key=KEY)
  attacks.fab(logits_fn, x, y, eps=0.1, num_steps=2)    # FAB works


def test_registry_builds_the_new_attacks_from_flags():
  assert {"apgd_t", "fab", "square", "autoattack"} <= set(attacks.names())
  assert attacks.get("apgd-t").fn is attacks.apgd_t
  assert attacks.get("fab-t").fn is attacks.fab
  (w1, w2), x, y = tiny_problem()
  logits_fn = coupled_logits(w1, w2)
  aa = attacks.make_attack("autoattack", {"eps": "8/255"})
  assert aa.hparams == {"eps": 8 / 255}
  aa = attacks.make_attack("autoattack", {
      "eps": "8/255", "num_steps": "3", "num_queries": "20",
      "num_target_classes": "2", "version": "plus"})
  assert aa.hparams == dict(eps=8 / 255, num_steps=3, num_queries=20,
                            num_target_classes=2, version="plus")
  # The uniform signature traces (no compilation needed to check it).
  assert jax.eval_shape(functools.partial(aa, logits_fn, key=KEY), x,
                        y).shape == x.shape
  sq = attacks.make_attack("square", {"eps": "0.1", "num_queries": "30",
                                      "p_init": "1/2",
                                      "rescale_schedule": "true"})
  assert sq.hparams == dict(eps=0.1, num_queries=30, p_init=0.5,
                            rescale_schedule=True)
  fab = attacks.make_attack("fab", {"eps": "0.1", "targeted": "false",
                                    "num_steps": "4", "num_restarts": "2",
                                    "alpha_max": "0.2", "eta": "1.1",
                                    "beta": "0.8"})
  assert fab.hparams == dict(eps=0.1, targeted=False, num_steps=4,
                             num_restarts=2, alpha_max=0.2, eta=1.1, beta=0.8)
  # One program with both calls: the made attack is the direct one.
  made, direct = jax.jit(lambda x, y: (
      sq(logits_fn, x, y, key=KEY),
      attacks.square(logits_fn, x, y, eps=0.1, num_queries=30, p_init=0.5,
                     rescale_schedule=True, key=KEY)))(x, y)
  np.testing.assert_array_equal(made, direct)


@pytest.mark.parametrize("name,hparams,message", [
    ("autoattack", {"eps": "8/255", "version": "rnd"},
     "unknown AutoAttack version .rnd.; choose one of: standard, plus, rand"),
    ("autoattack", {"eps": "8/255", "num_queries": "lots"},
     "num_queries must be an integer"),
    ("square", {"eps": "8/255", "p_init": "1.5"}, r"p_init must lie in"),
    ("fab", {"eps": "8/255", "beta": "0"}, r"beta must lie in"),
    ("fab", {"eps": "8/255", "targeted": "maybe"}, "targeted must be true"),
    ("apgd_t", {"eps": "8/255", "num_target_classes": "0"},
     "num_target_classes must be an integer >= 1"),
    ("square", {"eps": "8/255", "steps": "3"}, "no hyperparameter.*steps"),
])
def test_registry_refuses_bad_flags(name, hparams, message):
  with pytest.raises(ConfigError, match=message):
    attacks.make_attack(name, hparams)


# --- a small trained CNN -----------------------------------------------------

EPS = 24 / 255     # robust accuracy about 0.4 on this model: a real contest


@pytest.fixture(scope="module")
def trained_cnn():
  params, x, y = crosscheck.digits_problem(num_examples=100, train_steps=300)
  logits_fn = lambda z: crosscheck.small_cnn_logits(params, z)
  assert attacks.attack_accuracy(logits_fn, x, y) >= 0.95
  return params, x, y


def _robust(params, x, y, attack):
  """Per-example robustness under `attack(logits_fn, x, y)`, jitted with the
  weights and images as arguments."""
  @jax.jit
  def run(params, x, y):
    logits_fn = lambda z: crosscheck.small_cnn_logits(params, z)
    return jnp.argmax(logits_fn(attack(logits_fn, x, y)), -1) == y
  return np.asarray(run(params, x, y))


def test_autoattack_is_at_most_each_member_and_pgd_per_example(trained_cnn):
  params, x, y = trained_cnn
  steps, queries = 10, 300
  k = jax.random.split(KEY, 4)
  x_adv, report = jax.jit(lambda p, x, y: attacks.autoattack_with_report(
      lambda z: crosscheck.small_cnn_logits(p, z), x, y, eps=EPS, key=KEY,
      num_steps=steps, num_queries=queries))(params, x, y)
  robust_aa = np.asarray(report["robust"]["square"])
  np.testing.assert_array_equal(   # no coupling: bookkeeping = truth
      robust_aa, np.asarray(jnp.argmax(crosscheck.small_cnn_logits(
          params, x_adv), -1) == y))
  members = {
      "apgd-ce": lambda f, x, y: attacks.apgd(f, x, y, eps=EPS, key=k[0],
                                              num_steps=steps),
      "apgd-t": lambda f, x, y: attacks.apgd_t(f, x, y, eps=EPS, key=k[1],
                                               num_steps=steps),
      "fab-t": lambda f, x, y: attacks.fab(f, x, y, eps=EPS,
                                           num_steps=steps),
      "square": lambda f, x, y: attacks.square(f, x, y, eps=EPS, key=k[3],
                                               num_queries=queries),
      "pgd20": lambda f, x, y: attacks.pgd(f, x, y, eps=EPS,
                                           step_size=EPS / 4, num_steps=20,
                                           key=k[0]),
  }
  robust = {name: _robust(params, x, y, fn) for name, fn in members.items()}
  print({name: r.mean() for name, r in robust.items()}, robust_aa.mean())
  assert 0.1 <= robust_aa.mean() <= 0.7                       # not vacuous
  for name, r in robust.items():
    # Every example that one member (or PGD-20) fools, AutoAttack fools.
    assert not np.any(robust_aa & ~r), name
  # Stage i uses split(key, 4)[i], so the first stage, APGD-CE on every
  # point, is the member run alone.
  np.testing.assert_array_equal(report["robust"]["apgd-ce"],
                                robust["apgd-ce"])


def quantized_behind_stop_gradient(params):
  """Input quantized to 8 bits, the rounding hidden by `stop_gradient`: every
  input gradient is zero (a masked-gradient "defense")."""
  def logits_fn(z):
    quantized = jax.lax.stop_gradient(jnp.round(z * 255.0) / 255.0)
    return crosscheck.small_cnn_logits(params, quantized)
  return logits_fn


def test_masked_gradients_stop_pgd_and_apgd_but_not_square(trained_cnn):
  params, x, y = trained_cnn
  eps = 32 / 255
  masked = quantized_behind_stop_gradient(params)
  start = norms.linf_random_start(KEY, x, jnp.float32(eps))
  np.testing.assert_array_equal(
      attacks.pgd(masked, x, y, eps=eps, step_size=eps / 4, num_steps=5,
                  random_start=False), x)
  np.testing.assert_array_equal(
      attacks.apgd(masked, x, y, eps=eps, key=KEY, num_steps=5), start)
  correct = np.asarray(jnp.argmax(masked(x), -1) == y)
  x_sq = jax.jit(functools.partial(attacks.square, masked, eps=eps, key=KEY,
                                   num_queries=500, rescale_schedule=True))(
                                       x, y)
  fooled = np.asarray(jnp.argmax(masked(x_sq), -1) != y)
  print(f"Square fools {fooled[correct].mean():.2f} of the correct points")
  assert fooled[correct].mean() >= 0.5


def test_strength_check_flags_a_model_that_masks_its_gradients(trained_cnn):
  params, x, y = trained_cnn
  x, y = x[:50], y[:50]
  report = attacks.check_attack_strength(
      quantized_behind_stop_gradient(params), x, y, eps=32 / 255, key=KEY,
      square_queries=300)
  print(report)
  assert not report.ok
  assert any("Square (gradient-free)" in f for f in report.findings), (
      report.findings)
  assert report.accuracies["square300"] <= report.accuracies["pgd20"] - 0.3


# --- against torchattacks (optional) ---------------------------------------

def test_building_blocks_match_torchattacks():
  torch = pytest.importorskip("torch")
  pytest.importorskip("torchattacks")
  from torchattacks.attacks import apgdt as ta_apgdt   # pylint: disable=g-import-not-at-top
  from torchattacks.attacks import fab as ta_fab        # pylint: disable=g-import-not-at-top
  from torchattacks.attacks import square as ta_square  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  t = rng.uniform(0, 1, (64, 50)).astype(np.float32)
  t[:, :10] = np.round(t[:, :10])
  w = rng.normal(size=(64, 50)).astype(np.float32)
  b = (np.sum(w * t, 1) + rng.normal(size=64) * 3).astype(np.float32)
  np.testing.assert_allclose(
      attacks.project_linf_hyperplane(jnp.asarray(t), jnp.asarray(w),
                                      jnp.asarray(b)),
      ta_fab.projection_linf(torch.tensor(t), torch.tensor(w),
                             torch.tensor(b)).numpy(), atol=2e-6)
  for rescale in (False, True):
    reference = ta_square.Square.__new__(ta_square.Square)
    reference.p_init, reference.n_queries = 0.8, 1000
    reference.rescale_schedule = rescale
    assert [attacks.square_fraction(i, num_queries=1000, p_init=0.8,
                                    rescale_schedule=rescale)
            for i in range(1000)] == [reference.p_selection(i)
                                      for i in range(1000)]
  logits = rng.normal(size=(32, 5)).astype(np.float32)
  y = rng.integers(0, 5, 32)
  target = (y + 1 + rng.integers(0, 4, 32)) % 5
  reference = ta_apgdt.APGDT.__new__(ta_apgdt.APGDT)
  np.testing.assert_allclose(
      attacks.dlr_targeted_loss(jnp.asarray(logits), jnp.asarray(y),
                                jnp.asarray(target)),
      reference.dlr_loss_targeted(torch.tensor(logits), torch.tensor(y),
                                  torch.tensor(target)).numpy(), rtol=1e-5)


@pytest.mark.slow
def test_robust_accuracies_match_torchattacks():
  pytest.importorskip("torch")
  pytest.importorskip("torchattacks")
  result = crosscheck.crosscheck(eps=EPS, num_examples=100, num_steps=20,
                                 num_queries=500)
  print(crosscheck.format_table(result))
  assert result["logits_max_abs_diff"] < 1e-4
  theirs = result["torchattacks"]
  for name in ("apgd-ce", "apgd-t", "fab-t", "autoattack"):
    assert abs(result["jax"][name] - theirs[name]) <= 0.03, (name, result)
  # Sampled as the reference, Square agrees; per example it is stronger.
  assert abs(result["jax"]["square-shared"] - theirs["square"]) <= 0.05
  assert result["jax"]["square"] <= theirs["square"] + 0.02
