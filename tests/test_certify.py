"""Randomized smoothing (evaluation/smoothing.py, certify.py) and the
Gaussian query objective (learners/gaussian.py).

The statistics are checked against SciPy's exact binomial test and interval;
the certified radius against classifiers whose class probabilities are
known in closed form: a constant classifier (p̲A is the Clopper–Pearson bound
of n successes in n) and a threshold on one pixel, whose smoothed class
probability is Φ(margin/σ) and whose exact L2 robustness radius is the
margin (for a linear classifier the certificate is tight).
"""

import os
import pathlib
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from advmeta_jax import evaluation
from advmeta_jax import training
from advmeta_jax.config import CertifyConfig
from advmeta_jax.core import episodes
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import certify
from advmeta_jax.evaluation import smoothing
from tests.conftest import tiny_config
from tests.test_learners import bound
from tests.test_learners import problem

REPO = pathlib.Path(__file__).resolve().parent.parent
THRESHOLD = 0.5


def constant_logits(x):
  """Class 2 of 4 whatever the input."""
  return jnp.tile(jnp.array([0.0, 1.0, 5.0, 2.0]), (x.shape[0], 1))


def threshold_logits(x):
  """Class 1 where pixel (0, 0) exceeds THRESHOLD, else class 0: under
  noise of σ, P(class 1) = Φ((x₀ − THRESHOLD)/σ); the nearest point of the
  other class is |x₀ − THRESHOLD| away in L2."""
  margin = x[:, 0, 0, 0] - THRESHOLD
  return jnp.stack([jnp.zeros_like(margin), margin], axis=-1)


def images_with_pixel(values):
  x = jnp.full((len(values), 3, 3, 1), 0.3)
  return x.at[:, 0, 0, 0].set(jnp.asarray(values))


# --- the statistics -------------------------------------------------------------

@pytest.mark.parametrize("k,n,alpha", [(0, 10, 0.05), (3, 10, 0.05),
                                       (10, 10, 0.001), (97, 100, 0.001),
                                       (51234, 100000, 0.001),
                                       (99999, 100000, 0.01)])
def test_the_lower_bound_is_scipys_exact_clopper_pearson(k, n, alpha):
  """One-sided (1 − α) = the lower end of the two-sided (1 − 2α) exact CI
  (the authors' `proportion_confint(alpha=2α, method="beta")`)."""
  expected = scipy_stats.binomtest(k, n).proportion_ci(
      confidence_level=1 - 2 * alpha, method="exact").low
  got = smoothing.lower_confidence_bound(k, n, alpha)
  np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_predict_abstains_by_the_binomial_test():
  """60 of 100 at p = 1/2: two-sided p = 0.057 > 0.05, abstain; 62 of 100:
  p = 0.021, predict. The third class's count does not enter the test."""
  counts = np.array([[60, 40, 0], [62, 38, 7], [0, 38, 62], [50, 50, 0]])
  assert scipy_stats.binomtest(60, 100).pvalue > 0.05
  assert scipy_stats.binomtest(62, 100).pvalue < 0.05
  got = smoothing.predict_counts(counts, alpha=0.05)
  np.testing.assert_array_equal(got, [smoothing.ABSTAIN, 0, 2,
                                      smoothing.ABSTAIN])


def test_certify_counts_select_with_n0_and_bound_with_n():
  """The class comes from the selection counts; its bound from the
  estimation counts, even when another class leads there."""
  selection = np.array([[1, 9, 0], [9, 1, 0]])
  estimation = np.array([[100, 900, 0], [100, 900, 0]])
  cert = smoothing.certify_counts(selection, estimation, alpha=0.001,
                                  sigma=0.5)
  np.testing.assert_array_equal(cert.prediction, [1, smoothing.ABSTAIN])
  p = smoothing.lower_confidence_bound(900, 1000, 0.001)
  np.testing.assert_allclose(cert.p_lower, [p, smoothing.lower_confidence_bound(
      100, 1000, 0.001)])
  np.testing.assert_allclose(cert.radius, [0.5 * scipy_stats.norm.ppf(p), 0])


def test_certified_accuracy_counts_abstentions_and_small_radii_as_wrong():
  cert = smoothing.Certificate(
      prediction=np.array([0, 1, smoothing.ABSTAIN, 2]),
      radius=np.array([0.6, 0.3, 0.0, 0.9]), p_lower=np.zeros(4))
  got = smoothing.certified_accuracy(cert, [0, 1, 2, 0], [0, 0.25, 0.5, 1])
  np.testing.assert_allclose(got, [0.5, 0.5, 0.25, 0])


# --- the sampling, on classifiers with known probabilities -----------------------

def test_noise_counts_do_not_depend_on_the_batch_size():
  x = images_with_pixel([0.4, 0.5, 0.7])
  key = jax.random.key(3)
  runs = [jax.jit(lambda x, b=b: smoothing.noise_counts(
      threshold_logits, x, key, sigma=0.25, num_samples=250, batch_size=b,
      num_classes=2))(x) for b in (7, 64, 300)]
  for counts in runs[1:]:
    np.testing.assert_array_equal(counts, runs[0])
  np.testing.assert_array_equal(runs[0].sum(-1), [250, 250, 250])


def test_a_constant_classifier_is_certified_at_the_bound_of_n_of_n():
  """Every draw votes class 2, so p̲A = α^(1/n), the Clopper–Pearson bound
  of n successes in n, and the radius is σ·Φ⁻¹(α^(1/n))."""
  sigma, n, alpha = 0.5, 500, 0.001
  cert = smoothing.certify(constant_logits, jnp.zeros((3, 4, 4, 1)),
                           jax.random.key(0), sigma=sigma, n0=10, n=n,
                           alpha=alpha, batch_size=64, num_classes=4)
  p = alpha ** (1 / n)
  np.testing.assert_array_equal(cert.prediction, [2, 2, 2])
  np.testing.assert_allclose(cert.p_lower, p, rtol=1e-9)
  np.testing.assert_allclose(cert.radius, sigma * scipy_stats.norm.ppf(p),
                             rtol=1e-9)


def test_a_threshold_classifier_is_certified_up_to_its_margin():
  """P(class 1) = Φ(m/σ) for pixel value THRESHOLD + m. The radius is
  σ·Φ⁻¹(p̲A) of the counts, p̲A lies below Φ(|m|/σ) and within the
  Clopper–Pearson width of it, so the radius lies just below the exact
  robustness radius |m| (the certificate is tight for a linear classifier)."""
  sigma, n, alpha = 0.25, 20_000, 0.001
  margins = np.array([0.1, 0.25, -0.3, 0.5])
  cert = smoothing.certify(threshold_logits,
                           images_with_pixel(THRESHOLD + margins),
                           jax.random.key(1), sigma=sigma, n0=100, n=n,
                           alpha=alpha, batch_size=1000, num_classes=2)
  np.testing.assert_array_equal(cert.prediction, (margins > 0).astype(int))
  np.testing.assert_allclose(cert.radius,
                             sigma * scipy_stats.norm.ppf(cert.p_lower),
                             rtol=1e-12)
  p_true = scipy_stats.norm.cdf(np.abs(margins) / sigma)
  assert np.all(cert.p_lower <= p_true)
  assert np.all(cert.p_lower >= p_true - 5 * np.sqrt(p_true * (1 - p_true) / n))
  assert np.all(cert.radius <= np.abs(margins))
  assert np.all(cert.radius >= 0.8 * np.abs(margins))


def test_certify_and_predict_abstain_on_a_fifty_fifty_classifier():
  """At the threshold each class has probability 1/2: p̲A < 1/2, so
  CERTIFY abstains with radius 0; PREDICT's test does not separate the two."""
  x = images_with_pixel([THRESHOLD, THRESHOLD])
  cert = smoothing.certify(threshold_logits, x, jax.random.key(2),
                           sigma=0.25, n0=100, n=5000, alpha=0.001,
                           batch_size=500, num_classes=2)
  np.testing.assert_array_equal(cert.prediction, smoothing.ABSTAIN)
  np.testing.assert_array_equal(cert.radius, 0.0)
  assert np.all(cert.p_lower < 0.5)
  predicted = smoothing.predict(threshold_logits, x, jax.random.key(3),
                                sigma=0.25, n=5000, alpha=0.001,
                                batch_size=500, num_classes=2)
  np.testing.assert_array_equal(predicted, smoothing.ABSTAIN)


# --- the settings -----------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    (dict(sigma=0.0), "sigma must be a finite number > 0, got 0.0."),
    (dict(alpha=0.5), "alpha must be in (0, 0.5)"),
    (dict(n0=0), "n0 must be a positive integer, got 0."),
    (dict(n=-5), "n must be a positive integer, got -5."),
    (dict(radii=("0.25", "x")), "radii must be numbers, got 'x'."),
    (dict(radii=("-1",)), "radii must be finite numbers >= 0, got -1.0."),
    (dict(radii=()), "radii must name at least one L2 radius"),
    (dict(noise_batch=0), "noise_batch must be a positive integer, got 0."),
])
def test_bad_certification_settings_are_refused_in_one_line(change, message):
  with pytest.raises(ConfigError) as info:
    CertifyConfig(**change).validate()
  assert message in str(info.value) and "\n" not in str(info.value)


# --- the few-shot base classifier -------------------------------------------------

def test_certify_run_uses_the_meta_tests_episodes(digits_test):
  """The base classifier's clean predictions are the meta-test's: the same
  episodes, the same adapted classifier; the certificates have the query's
  shape and every non-abstention has a radius ≥ 0."""
  cfg = tiny_config(filters=4, q_query=2)
  exp = training.build(cfg)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  source = episodes.make_source(digits_test)
  settings = CertifyConfig(n0=8, n=40, noise_batch=16, radii=("0", "0.1"))
  shape = dict(n_way=5, k_shot=1, q_query=2, inner_steps=1)
  result = certify.certify_run(exp.learner.adaptation, params, source,
                               settings=settings, num_episodes=3, seed=4,
                               **shape)
  meta = evaluation.run_case(exp.learner.adaptation, params, source,
                             case=evaluation.TestCase(), attack=None,
                             num_episodes=3, batch_size=3, seed=4, **shape)
  np.testing.assert_allclose(result.clean_accuracy(), meta.accuracy)
  assert result.prediction.shape == result.radius.shape == (3, 10)
  assert np.all(result.radius >= 0)
  assert np.all(result.certified_accuracy(0.1)
                <= result.certified_accuracy(0.0))


def test_the_gaussian_objective_at_sigma_zero_is_the_clean_loss():
  """σ = 0 adds nothing: the loss and its meta-gradient are the clean
  objective's (MAML on a tiny MLP, 2 inner steps); σ > 0 changes the loss."""
  params, task = problem(dtype=jnp.float32)
  key = jax.random.key(5)

  def value_and_grad(sigma=None):
    b = (bound("maml") if sigma is None
         else bound("maml", "gaussian", gaussian_sigma=sigma))
    return jax.jit(jax.value_and_grad(
        lambda p: b.loss(p, task, key)[0]))(params)

  clean_loss, clean_grads = value_and_grad()
  loss, grads = value_and_grad(0.0)
  assert float(loss) == float(clean_loss)
  jax.tree.map(np.testing.assert_array_equal, grads, clean_grads)
  assert abs(float(value_and_grad(0.25)[0]) - float(clean_loss)) > 1e-3


def test_gaussian_sigma_is_checked():
  with pytest.raises(ConfigError, match="gaussian_sigma must be a finite "
                     "number >= 0, got -0.1"):
    tiny_config(robust="gaussian", gaussian_sigma=-0.1).validate()


# --- end to end ---------------------------------------------------------------------

@pytest.mark.integration
def test_advmeta_certify_certifies_a_tiny_trained_run(tmp_path):
  """`python -m launch.train` then `python -m launch.certify --shrink` on
  the run, as a user types them: the table, the JSON and the figure."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  run = lambda *args: subprocess.run(
      [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=600)
  workdir, out = tmp_path / "run", tmp_path / "certify"
  trained = run("launch.train", f"--workdir={workdir}", "--filters=4",
                "--q_query=2", "--task_batch_size=2", "--inner_steps=1",
                "--num_steps=2", "--eval_episodes=0", "--robust=gaussian")
  assert trained.returncode == 0, trained.stderr[-3000:]
  result = run("launch.certify", f"--workdir={workdir}", "--shrink",
               "--test_episodes=2", "--test_inner_steps=1", "--n=64",
               "--radii=0,0.1", "--predict", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert "| learner | clean (base) | r = 0 | r = 0.1 | abstained |" in (
      result.stdout)
  assert "| maml+gaussian |" in result.stdout
  summary = json.loads((out / "certification.json").read_text())
  row = summary["maml+gaussian"]
  assert row["episodes"] == 2
  assert row["settings"]["n0"] == 32 and row["settings"]["n"] == 64
  assert set(row["certified_accuracy"]) == {"0", "0.1"}
  assert len(row["per_episode"]["0"]) == 2
  assert 0 <= row["smoothed_accuracy"]["mean"] <= 1
  assert (out / "certified_accuracy.png").stat().st_size > 0
  assert (out / "certification.md").read_text() in result.stdout
