"""Randomized smoothing: PREDICT and CERTIFY of a smoothed classifier.

"Certified Adversarial Robustness via Randomized Smoothing" (Cohen, Rosenfeld,
Kolter 2019, arXiv:1902.02918). A base classifier f is turned into the
smoothed classifier

    g(x) = argmax_c P(f(x + ε) = c),   ε ~ N(0, σ²I),

whose prediction is constant within the L2 ball of radius σ·Φ⁻¹(p̲A) around
x whenever p̲A, a lower bound on the top class's probability, exceeds 1/2
(the paper's Theorem 1). The two Monte Carlo procedures follow the authors'
code (locuslab/smoothing, `code/core.py`, read for this module):

    CERTIFY  n0 samples select the top class ĉA (the argmax of the counts);
             n fresh samples count nA = #{f(x + ε) = ĉA}; p̲A is the
             one-sided (1 − α) Clopper–Pearson lower bound of nA/n (the
             code's `proportion_confint(nA, n, alpha=2α, method="beta")[0]`,
             here `scipy.stats.beta.ppf(α, nA, n − nA + 1)`, 0 when nA = 0);
             abstain when p̲A < 1/2, else return ĉA and σ·Φ⁻¹(p̲A).
    PREDICT  n samples; the two most frequent classes with counts n1 ≥ n2;
             abstain when the two-sided binomial test of n1 successes in
             n1 + n2 trials at p = 1/2 has a p-value > α, else return the
             top class.

As in that code the noise is added to the input in [0, 1] pixel space and
not clipped. The sampling is one jitted loop (`noise_counts`): a `lax.scan`
over batches of `batch_size` noise draws, each batch evaluated at once under
`vmap`; draw j uses the key `fold_in(key, j)`, so the counts do not depend
on the batch size. The statistics run on the host on the counts
(`certify_counts`, `predict_counts`, NumPy and SciPy).

The input is a batch of images (a task's query set) and every draw adds
independent noise to each of them. For a classifier whose logits of one
image do not depend on the others, image i's counts are exactly the paper's
samples of f(x_i + ε). Where they do (conv4's transductive BatchNorm
normalises with the statistics of the batch), image i's base classifier is
f_i(x_i + ε_i; the other images + their noise): a randomized classifier
whose extra randomness does not depend on x_i, for which the certificate
holds as well (the bound holds for E_ω[1{f(·; ω) = c}], any function into
[0, 1]), with the other images held at their clean values.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.errors import ConfigError

Array = jax.Array
# The class PREDICT and CERTIFY return when they abstain (the code's -1).
ABSTAIN = -1


def _check_counts(num_samples, batch_size) -> None:
  for name, value in (("num_samples", num_samples),
                      ("batch_size", batch_size)):
    if int(value) != value or value < 1:
      raise ConfigError(f"{name} must be an integer >= 1, got {value}.")


def noise_counts(logits_fn: Callable[[Array], Array], images: Array,
                 key: Array, *, sigma, num_samples: int, batch_size: int,
                 num_classes: int) -> Array:
  """How often the base classifier predicts each class under noise.

  `counts[i, c] = #{j < num_samples : argmax logits_fn(x + σ·ε_j)[i] = c}`
  with ε_j ~ N(0, I) of the batch's shape drawn from `fold_in(key, j)`.
  Pure and jit-able (`num_samples`, `batch_size` and `num_classes` are
  static): a scan over ⌈num_samples / batch_size⌉ batches, each a `vmap` of
  `logits_fn` over `batch_size` noisy copies of the batch; the draws past
  `num_samples` in the last batch are not counted.

  Args:
    logits_fn: `[B, H, W, C]` images -> `[B, num_classes]` logits (the
      base classifier; for a few-shot learner the classifier adapted to the
      task's support set).
    images: `[B, H, W, C]`, the inputs x (pixels in [0, 1]).
    key: the noise's randomness.
    sigma: σ >= 0, the noise's standard deviation.
    num_samples: noise draws per image.
    batch_size: noise draws evaluated at once (memory; the counts do not
      depend on it).
    num_classes: the classifier's classes.

  Returns:
    int32 `[B, num_classes]` counts, each row summing to `num_samples`.
  """
  _check_counts(num_samples, batch_size)
  num_batches = -(-num_samples // batch_size)

  def one_draw(index):
    noise = jax.random.normal(jax.random.fold_in(key, index), images.shape,
                              images.dtype)
    return jnp.argmax(logits_fn(images + sigma * noise), axis=-1)

  def one_batch(counts, b):
    index = b * batch_size + jnp.arange(batch_size)
    predictions = jax.vmap(one_draw)(index)                # [batch, B]
    counted = (index < num_samples)[:, None, None]
    hits = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32)
    return counts + jnp.sum(hits * counted, axis=0), None

  counts = jnp.zeros((images.shape[0], num_classes), jnp.int32)
  counts, _ = jax.lax.scan(one_batch, counts, jnp.arange(num_batches))
  return counts


def lower_confidence_bound(successes, trials, alpha: float) -> np.ndarray:
  """The one-sided (1 − α) Clopper–Pearson lower bound of a binomial
  proportion: the α quantile of Beta(k, n − k + 1), 0 for k = 0 (the
  authors' `_lower_confidence_bound`, statsmodels' `method="beta"` at
  2α)."""
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  k = np.asarray(successes, np.float64)
  n = np.asarray(trials, np.float64)
  with np.errstate(invalid="ignore"):
    bound = scipy_stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1)
  return np.where(k > 0, bound, 0.0)


class Certificate(NamedTuple):
  """CERTIFY's answer for each input.

  Attributes:
    prediction: `[B]` the top class ĉA, or `ABSTAIN`.
    radius: `[B]` the certified L2 radius σ·Φ⁻¹(p̲A); 0 where it abstains.
    p_lower: `[B]` p̲A, the lower confidence bound of ĉA's probability.
  """
  prediction: np.ndarray
  radius: np.ndarray
  p_lower: np.ndarray


def certify_counts(selection_counts, estimation_counts, *, alpha: float,
                   sigma: float) -> Certificate:
  """CERTIFY from the counts of its two samples (`noise_counts`).

  Args:
    selection_counts: `[B, classes]` counts of the n0 selection draws.
    estimation_counts: `[B, classes]` counts of the n estimation draws.
    alpha: the failure probability α.
    sigma: the noise's σ.
  """
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  selection = np.asarray(selection_counts)
  estimation = np.asarray(estimation_counts)
  top = np.argmax(selection, axis=-1)
  n_top = np.take_along_axis(estimation, top[:, None], axis=-1)[:, 0]
  p_lower = lower_confidence_bound(n_top, estimation.sum(-1), alpha)
  certified = p_lower >= 0.5
  radius = np.where(certified,
                    sigma * scipy_stats.norm.ppf(np.maximum(p_lower, 0.5)),
                    0.0)
  return Certificate(np.where(certified, top, ABSTAIN).astype(np.int64),
                     radius, p_lower)


def predict_counts(counts, *, alpha: float) -> np.ndarray:
  """PREDICT from the counts of its n draws: the top class, or `ABSTAIN`
  where the binomial test of the top two counts (n1 of n1 + n2 at p = 1/2,
  two-sided, `scipy.stats.binomtest`) has a p-value above α."""
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  counts = np.asarray(counts)
  out = np.full(counts.shape[0], ABSTAIN, np.int64)
  for i, row in enumerate(counts):
    order = np.argsort(row, kind="stable")[::-1]
    first, second = int(row[order[0]]), int(row[order[1]])
    if scipy_stats.binomtest(first, first + second, 0.5).pvalue <= alpha:
      out[i] = order[0]
  return out


def certified_accuracy(certificate: Certificate, labels, radii) -> np.ndarray:
  """`[len(radii)]`: the share of inputs certified correct at each radius r,
  i.e. predicted right (not abstained) with a radius >= r (the authors'
  `analyze.py`: `correct & (radius >= r)`)."""
  correct = np.asarray(certificate.prediction) == np.asarray(labels)
  radius = np.asarray(certificate.radius)
  return np.array([np.mean(correct & (radius >= r)) for r in radii])


@functools.partial(jax.jit, static_argnames=("logits_fn", "num_samples",
                                              "batch_size", "num_classes"))
def _jitted_counts(logits_fn, images, key, sigma, *, num_samples, batch_size,
                   num_classes):
  return noise_counts(logits_fn, images, key, sigma=sigma,
                      num_samples=num_samples, batch_size=batch_size,
                      num_classes=num_classes)


def certify(logits_fn: Callable[[Array], Array], images: Array, key: Array,
            *, sigma: float, n0: int, n: int, alpha: float, batch_size: int,
            num_classes: int) -> Certificate:
  """CERTIFY (the paper's Pseudocode) of the smoothed `logits_fn` at each
  image: `noise_counts` with n0 draws from `fold_in(key, 0)` and n fresh
  draws from `fold_in(key, 1)`, then `certify_counts`. A driver (jits
  `noise_counts` for a hashable `logits_fn`)."""
  counts = [_jitted_counts(logits_fn, images, jax.random.fold_in(key, i),
                           sigma, num_samples=m, batch_size=batch_size,
                           num_classes=num_classes)
            for i, m in enumerate((n0, n))]
  return certify_counts(*jax.device_get(counts), alpha=alpha, sigma=sigma)


def predict(logits_fn: Callable[[Array], Array], images: Array, key: Array,
            *, sigma: float, n: int, alpha: float, batch_size: int,
            num_classes: int) -> np.ndarray:
  """PREDICT of the smoothed `logits_fn` at each image (`noise_counts`
  with n draws, then `predict_counts`); `ABSTAIN` where the test does not
  separate the top two classes."""
  counts = _jitted_counts(logits_fn, images, key, sigma, num_samples=n,
                          batch_size=batch_size, num_classes=num_classes)
  return predict_counts(jax.device_get(counts), alpha=alpha)
