"""The L2 attacks (`norm="L2"` of fgsm, pgd, apgd, apgd_t, fab, square,
autoattack) and L2 budgets as flags.

  * properties on a tiny 10×10×1 model with 4 classes: every attack stays in
    its L2 ball (per example) and in [0, 1], ε = 0 returns x;
  * closed forms: on a two-class linear model PGD-L2 and APGD-L2 flip
    exactly the examples whose minimal-norm flip m/‖w₁ − w₀‖ is below ε;
    FAB's L2 projection is the minimal step onto a hyperplane in the box;
  * AutoAttack-L2 fools every example PGD-L2 fools;
  * flags: `l2:0.5` budgets, `norm=` hyperparameters, the one-line errors;
  * against torchattacks (skipped without torch/torchattacks): FGM and
    PGD-L2 without random start element-wise, FAB's `projection_l2` and
    Square's `eta` exactly, and (slow) the robust accuracy of APGD, APGD-T,
    FAB-T, Square and AutoAttack, L2, on the small CNN of
    `advmeta_jax/benchmarks/crosscheck_autoattack.py`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax import attacks
from advmeta_jax import config
from advmeta_jax.cli import common
from advmeta_jax.errors import ConfigError

KEY = jax.random.key(0)
SIDE, CLASSES, N = 10, 4, 12


def tiny_problem(seed: int = 0):
  """A tanh network on 10×10×1 images with 4 classes (examples do not
  interact), images in [0, 1] with some at the box edges, labels = its
  predictions (every example starts correct)."""
  rng = np.random.default_rng(seed)
  w1 = jnp.asarray(rng.normal(size=(SIDE * SIDE, 16)) / 5, jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(16, CLASSES)), jnp.float32)
  logits_fn = lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ w1) @ w2
  x = rng.uniform(size=(N, SIDE, SIDE, 1)).astype(np.float32)
  x[:, :2] = np.round(x[:, :2])   # values at 0 and 1: the box binds
  x = jnp.asarray(x)
  return logits_fn, x, jnp.argmax(logits_fn(x), -1)


def l2_distance(a, b):
  return np.sqrt(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=(1, 2, 3)))


L2_ATTACKS = {
    "fgm": lambda f, x, y, eps: attacks.fgsm(f, x, y, eps=eps, norm="L2"),
    "pgd": lambda f, x, y, eps: attacks.pgd(
        f, x, y, eps=eps, step_size=eps / 2, num_steps=5, key=KEY,
        norm="l2"),
    "apgd": lambda f, x, y, eps: attacks.apgd(f, x, y, eps=eps, num_steps=5,
                                              key=KEY, norm="L2"),
    "apgd_t": lambda f, x, y, eps: attacks.apgd_t(
        f, x, y, eps=eps, num_steps=5, key=KEY, num_target_classes=2,
        norm="L2"),
    "fab": lambda f, x, y, eps: attacks.fab(
        f, x, y, eps=eps, num_steps=5, num_restarts=2, key=KEY,
        num_target_classes=2, norm="L2"),
    "fab_untargeted": lambda f, x, y, eps: attacks.fab(
        f, x, y, eps=eps, num_steps=5, targeted=False, norm="L2"),
    "square": lambda f, x, y, eps: attacks.square(
        f, x, y, eps=eps, key=KEY, num_queries=20, norm="L2"),
    "square_shared": lambda f, x, y, eps: attacks.square(
        f, x, y, eps=eps, key=KEY, num_queries=20, shared_squares=True,
        norm="L2"),
}   # autoattack: its ball and box in the test against PGD-L2 below


@pytest.mark.parametrize("name", sorted(L2_ATTACKS))
def test_l2_attacks_stay_in_their_ball_and_in_the_box(name):
  logits_fn, x, y = tiny_problem()
  attack = jax.jit(lambda x, y, eps: L2_ATTACKS[name](logits_fn, x, y, eps))
  eps = 1.5
  x_adv = np.asarray(attack(x, y, eps))
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  assert np.all(l2_distance(x_adv, x) <= eps * (1 + 1e-5))
  # Against a model this weak every attack fools some example ...
  assert np.mean(np.argmax(logits_fn(x_adv), -1) != y) > 0
  # ... and ε = 0 (traced: the same program) returns x exactly.
  np.testing.assert_array_equal(np.asarray(attack(x, y, 0.0)), x)


def test_the_l2_steps_are_not_the_linf_ones():
  """The L2 versions are not L∞ attacks in disguise: at an L2 radius equal
  to an L∞ ε, the L2 perturbation has a far smaller L∞ size and the
  gradient's direction, not its sign."""
  logits_fn, x, y = tiny_problem()
  eps = 0.3
  linf = attacks.fgsm(logits_fn, x, y, eps=eps)
  l2 = attacks.fgsm(logits_fn, x, y, eps=eps, norm="L2")
  assert np.abs(np.asarray(linf - x)).max() == pytest.approx(eps, abs=1e-6)
  assert np.abs(np.asarray(l2 - x)).max() < eps / 2
  assert np.all(l2_distance(l2, x) <= eps * (1 + 1e-6))


EPS_LINEAR = 0.1


def linear_two_class(seed: int = 0, n: int = 24):
  """A two-class linear model on 10×10×1 images around 0.5 and, per
  example, the minimal L2 distance to its decision boundary
  m / ‖w_y − w_other‖, in (0.02, 0.2) but never within 3% of
  `EPS_LINEAR` (the box does not bind: the images sit in [0.2, 0.8])."""
  rng = np.random.default_rng(seed)
  d = SIDE * SIDE
  w = rng.normal(size=(d, 2)).astype(np.float32) / 3
  x = rng.uniform(0.4, 0.6, size=(n, d)).astype(np.float32)
  diff = w[:, 1] - w[:, 0]
  bias = np.array([0.0, -np.mean(x @ diff)], np.float32)
  logits0 = x @ w + bias
  y = rng.integers(0, 2, n)
  sign = np.where(y == 1, 1.0, -1.0)
  target_dist = rng.uniform(0.02, 0.2, n)
  near = np.abs(target_dist / EPS_LINEAR - 1) < 0.03
  target_dist[near] *= 1.1
  norm = np.linalg.norm(diff)
  # Every example moved along diff to its distance from the boundary.
  shift = (sign * target_dist * norm - (logits0[:, 1] - logits0[:, 0])
           ) / norm ** 2
  x = x + shift[:, None] * diff[None, :]
  assert x.min() >= 0.2 and x.max() <= 0.8
  logits_fn = lambda z: z.reshape(z.shape[0], -1) @ jnp.asarray(w) + bias
  x = jnp.asarray(x.reshape(n, SIDE, SIDE, 1))
  y = jnp.asarray(y)
  margins = np.asarray(attacks.margin(logits_fn(x), y))
  np.testing.assert_allclose(margins / norm, target_dist, rtol=1e-3)
  return logits_fn, x, y, margins / norm


@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_pgd_and_apgd_l2_reach_the_minimal_flip_of_a_linear_model(name):
  """At ε every example whose minimal-norm flip is below ε (by 3% or
  more) is fooled, and none above it (nothing can be)."""
  logits_fn, x, y, distance = linear_two_class()
  eps = EPS_LINEAR
  x_adv = {
      "pgd": lambda: attacks.pgd(logits_fn, x, y, eps=eps,
                                 step_size=eps / 4, num_steps=20, key=KEY,
                                 norm="L2"),
      "apgd": lambda: attacks.apgd(logits_fn, x, y, eps=eps, num_steps=20,
                                   key=KEY, norm="L2"),
  }[name]()
  wrong = np.asarray(jnp.argmax(logits_fn(x_adv), -1) != y)
  below = distance < eps
  assert 0 < below.sum() < len(below)
  np.testing.assert_array_equal(wrong, below)
  assert np.all(l2_distance(x_adv, x) <= eps * (1 + 1e-5))


def test_fab_l2_projection_is_the_minimal_step_to_the_hyperplane():
  """Inside the box the minimal L2 step onto ⟨w, t + d⟩ = b is
  −(⟨w, t⟩ − b) w / ‖w‖²; where the box binds, the step still lands on the
  hyperplane, inside the box, and is no longer than any feasible step we
  try (random feasible points projected along the constraint)."""
  rng = np.random.default_rng(3)
  t = rng.uniform(0.4, 0.6, size=(4, 30)).astype(np.float32)
  w = rng.normal(size=(4, 30)).astype(np.float32)
  b = (np.sum(w * t, 1) + rng.normal(size=4) * 0.05).astype(np.float32)
  d = np.asarray(attacks.project_l2_hyperplane(t, w, b))
  closed = -((np.sum(w * t, 1) - b) / np.sum(w * w, 1))[:, None] * w
  np.testing.assert_allclose(d, closed, atol=1e-6)
  # Far hyperplanes: the box binds.
  b_far = (np.sum(w * t, 1) + np.sign(rng.normal(size=4)) * 3).astype(
      np.float32)
  d = np.asarray(attacks.project_l2_hyperplane(t, w, b_far))
  assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)
  np.testing.assert_allclose(np.sum(w * (t + d), 1), b_far, atol=1e-4)
  # No step onto the hyperplane is shorter than the unconstrained one.
  unconstrained = np.abs(np.sum(w * t, 1) - b_far) / np.linalg.norm(w, axis=1)
  assert np.all(np.linalg.norm(d, axis=1) >= unconstrained * (1 - 1e-5))
  # Unreachable: the corner that moves ⟨w, ·⟩ furthest towards b.
  b_out = np.sum(np.abs(w), 1) * 2
  d = np.asarray(attacks.project_l2_hyperplane(t, w, b_out))
  np.testing.assert_allclose(t + d, (w > 0).astype(np.float32), atol=1e-6)


def test_autoattack_l2_fools_every_example_pgd_l2_fools():
  logits_fn, x, y = tiny_problem(seed=1)
  eps = 0.25
  pgd = attacks.pgd(logits_fn, x, y, eps=eps, step_size=eps / 4,
                    num_steps=10, key=KEY, norm="L2")
  x_aa, report = attacks.autoattack_with_report(
      logits_fn, x, y, eps=eps, key=KEY, num_steps=10, num_queries=20,
      num_target_classes=3, norm="L2")
  pgd_fooled = np.asarray(jnp.argmax(logits_fn(pgd), -1) != y)
  aa_fooled = np.asarray(jnp.argmax(logits_fn(x_aa), -1) != y)
  assert 0 < pgd_fooled.sum() < len(pgd_fooled)
  assert np.all(aa_fooled[pgd_fooled])
  accuracy = attacks.robust_accuracies(report)
  assert list(accuracy) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
  assert accuracy["square"] == pytest.approx(1 - aa_fooled.mean())
  assert np.all(l2_distance(x_aa, x) <= eps * (1 + 1e-5))
  assert float(x_aa.min()) >= 0.0 and float(x_aa.max()) <= 1.0


def test_l2_budgets_as_flags():
  assert attacks.parse_budget("8/255") == ("Linf", pytest.approx(8 / 255))
  assert attacks.parse_budget("L2:1.5") == ("L2", 1.5)
  assert attacks.parse_budget("linf:0.03") == ("Linf", 0.03)
  assert attacks.split_budget("l2: 0.5") == ("L2", "0.5")
  assert attacks.budget_text("0.5", "l2") == "l2:0.5"
  assert attacks.budget_text("8/255", None) == "8/255"
  for bad, message in (("l2:-1", ">= 0"), ("l2:x", "number"),
                       ("linf:2", "at most 1"), ("l3:1", "number")):
    with pytest.raises(ConfigError, match=message):
      attacks.parse_budget(bad)
  # The protocol's --eps takes both; the specs carry the norm.
  config.ProtocolConfig(eps=("8/255", "l2:0.5")).validate()
  with pytest.raises(ConfigError, match=">= 0"):
    config.ProtocolConfig(eps=("l2:-0.5",)).validate()
  specs = common.attack_specs(["pgd", "autoattack", "cw_l2"],
                              ["8/255", "l2:0.5"])
  labels = [s.label for s in specs]
  assert labels == ["pgd ε=8/255", "pgd ε=l2:0.5", "autoattack ε=8/255",
                    "autoattack ε=l2:0.5", "cw_l2"]
  l2_pgd = dict(specs[1].hparams)
  assert l2_pgd["norm"] == "L2" and l2_pgd["step_size"] == 0.125
  assert "norm" not in dict(specs[0].hparams)   # L∞ specs as before
  with pytest.raises(ConfigError, match="L∞ only"):
    common.attack_specs(["mi_fgsm"], ["l2:0.5"])


def test_l2_hyperparameters_are_checked():
  # From flags: an L2 radius may exceed 1; an L∞ ε may not.
  attack = attacks.make_attack("pgd", {"eps": "2", "norm": "l2",
                                       "step_size": "0.5", "num_steps": "2"})
  assert attack.hparams["norm"] == "L2" and attack.hparams["eps"] == 2.0
  with pytest.raises(ConfigError, match="at most 1"):
    attacks.make_attack("pgd", {"eps": "2", "step_size": "0.5",
                                "num_steps": "2"})
  with pytest.raises(ConfigError, match="unknown norm"):
    attacks.make_attack("apgd", {"eps": "0.5", "norm": "l1",
                                 "num_steps": "2"})
  with pytest.raises(ConfigError, match=">= 0"):
    attacks.make_attack("fgsm", {"eps": -1.0, "norm": "L2"})
  # Above √d (10 for 100 values) when the images are seen.
  logits_fn, x, y = tiny_problem()
  for name in ("fgsm", "pgd", "square"):
    with pytest.raises(ConfigError, match="at most √d = 10"):
      attacks.make_attack(name, {"eps": 10.5, "norm": "L2", **(
          {"step_size": 1.0, "num_steps": 1} if name == "pgd" else {})})(
              logits_fn, x, y, key=KEY)
  with pytest.raises(ConfigError, match="10×10"):
    attacks.square(logits_fn, x[:, :8, :8], y, eps=0.5, key=KEY, norm="L2")


def test_reproduce_extra_eps():
  from advmeta_jax.cli import reproduce  # pylint: disable=g-import-not-at-top
  assert reproduce._extra_attacks(["pgd", "autoattack"], ["l2:0.5"]) == [
      ("pgd", "l2:0.5"), ("autoattack", "l2:0.5")]
  assert reproduce._extra_attacks(["autoattack"], []) == ["autoattack"]
  with pytest.raises(ConfigError, match="give the attacks"):
    reproduce._extra_attacks([], ["l2:0.5"])
  with pytest.raises(ConfigError, match=">= 0"):
    reproduce._extra_attacks(["pgd"], ["l2:-1"])


def test_masking_check_runs_in_l2():
  logits_fn, x, y = tiny_problem()
  report = attacks.check_attack_strength(logits_fn, x, y, eps=1.0,
                                         norm="L2", key=KEY,
                                         square_queries=50)
  assert report.ok, str(report)
  assert report.eps_sweep[-1][0] == pytest.approx(0.5 * math.sqrt(100))


# --- against torchattacks -----------------------------------------------------

def _torch_tanh_linear(w):
  """tanh(x·W) on NCHW tensors (the NHWC flattening of the JAX side)."""
  torch = pytest.importorskip("torch")

  class TanhLinear(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.w = torch.nn.Parameter(torch.from_numpy(np.asarray(w)))

    def forward(self, z):
      return torch.tanh(z.permute(0, 2, 3, 1).reshape(z.shape[0], -1)
                        @ self.w)

  return TanhLinear().eval()


def test_fgm_and_pgd_l2_match_torchattacks_element_wise():
  """torchattacks' `PGDL2(random_start=False)` (with one step of ε: FGM)
  on a nonlinear model whose gradient direction changes along the way."""
  torch = pytest.importorskip("torch")
  torchattacks = pytest.importorskip("torchattacks")
  rng = np.random.default_rng(4)
  w = rng.normal(size=(SIDE * SIDE, CLASSES)).astype(np.float32) / 3
  x = rng.uniform(size=(N, SIDE, SIDE, 1)).astype(np.float32)
  logits_fn = lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ jnp.asarray(w))
  y = np.array(jnp.argmax(logits_fn(jnp.asarray(x)), -1))
  model = _torch_tanh_linear(w)
  images = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())
  labels = torch.from_numpy(y).long()
  for steps, alpha in ((1, 1.0), (10, 0.3)):
    theirs = torchattacks.PGDL2(model, eps=1.0, alpha=alpha, steps=steps,
                                random_start=False)(images, labels)
    theirs = np.transpose(theirs.numpy(), (0, 2, 3, 1))
    if steps == 1:
      ours = attacks.fgsm(logits_fn, jnp.asarray(x), jnp.asarray(y), eps=1.0,
                          norm="L2")
    else:
      ours = attacks.pgd(logits_fn, jnp.asarray(x), jnp.asarray(y), eps=1.0,
                         step_size=alpha, num_steps=steps, random_start=False,
                         norm="L2")
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=2e-5)
    assert np.abs(np.asarray(ours) - x).max() > 0.05


def test_fab_projection_and_square_windows_match_torchattacks():
  torch = pytest.importorskip("torch")
  fab_module = pytest.importorskip("torchattacks.attacks.fab")
  square_module = pytest.importorskip("torchattacks.attacks.square")
  rng = np.random.default_rng(0)
  for scale in (0.1, 1, 3, 30, 100):
    t = rng.uniform(size=(16, 50)).astype(np.float32)
    w = rng.normal(size=(16, 50)).astype(np.float32)
    w[:, :5] = 0
    b = (rng.normal(size=16) * scale).astype(np.float32)
    ours = np.asarray(attacks.project_l2_hyperplane(t, w, b))
    ref = fab_module.projection_l2(torch.tensor(t), torch.tensor(w),
                                   torch.tensor(b)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5, err_msg=str(scale))
  square = square_module.Square.__new__(square_module.Square)
  square.device = "cpu"
  for side in (3, 5, 9, 15):
    theirs = square.eta(side).numpy()   # transposed at random
    ours = attacks.eta_window(side)
    assert min(np.abs(theirs - ours).max(),
               np.abs(theirs - ours.T).max()) < 1e-6


@pytest.mark.slow
def test_l2_robust_accuracy_matches_torchattacks():
  """The L2 rows of `crosscheck_autoattack --norm=l2` at a small budget:
  100 held-out digits, ε = 1.0, 20 iterations, 300 queries, within 4
  points (Square with the reference's sampling within 6; per-example
  squares no weaker)."""
  pytest.importorskip("torch")
  pytest.importorskip("torchattacks")
  from advmeta_jax.benchmarks import crosscheck_autoattack as crosscheck  # pylint: disable=g-import-not-at-top
  result = crosscheck.crosscheck(eps=1.0, num_examples=100, num_steps=20,
                                 num_queries=300, norm="L2")
  ours, theirs = result["jax"], result["torchattacks"]
  for name in ("apgd-ce", "apgd-t", "fab-t", "autoattack"):
    assert abs(ours[name] - theirs[name]) <= 0.04, (name, ours, theirs)
  assert abs(ours["square-shared"] - theirs["square"]) <= 0.06
  assert ours["square"] <= theirs["square"] + 0.02


def test_an_l2_budget_runs_through_the_meta_test_protocol(digits_test,
                                                          tmp_path):
  """`--eps=l2:1` in the protocol: the query is attacked by PGD-L2 against
  each episode's adapted classifier, and the cell, the report and its
  JSON carry the budget as written."""
  import json  # pylint: disable=g-import-not-at-top
  from advmeta_jax import evaluation  # pylint: disable=g-import-not-at-top
  from advmeta_jax.core import models  # pylint: disable=g-import-not-at-top
  from advmeta_jax.evaluation import protocol  # pylint: disable=g-import-not-at-top
  from advmeta_jax.evaluation import reports  # pylint: disable=g-import-not-at-top
  from advmeta_jax.training import builders  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(filters=4, k_shot=1, q_query=3, eval_batch_size=2)
  exp = builders.build(config)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  (spec,) = common.attack_specs(["pgd"], ["l2:1"], attack_steps=2)
  cells = protocol.evaluate_runs(
      [protocol.Run("maml", config, params)],
      cases=(evaluation.TestCase(), evaluation.TestCase("clean", "adv")),
      attack_specs=(spec,), num_episodes=2, inner_steps=1, data=digits_test,
      log=lambda _: None)
  clean, attacked = (c.result.accuracy.mean() for c in cells)
  assert attacked <= clean
  report = reports.write_reports(cells, str(tmp_path))
  assert "pgd ε=l2:1" in report.markdown
  rows = json.loads((tmp_path / "results.json").read_text())["cells"]
  assert [(r["attack"], r["eps"]) for r in rows] == [("none", ""),
                                                     ("pgd", "l2:1")]
