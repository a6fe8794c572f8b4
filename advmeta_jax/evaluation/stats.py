"""Statistics that decide claims: small pure functions of per-episode results.

    mean_ci_t          mean and Student-t CI of one sample (differences,
                       per-seed means)
    bootstrap_ci       percentile bootstrap CI of a mean
    sign_flip_p        two-sided paired permutation (sign-flip) p-value of a
                       mean difference: exact up to 2^16 sign patterns, else
                       Monte Carlo
    paired             all of the above for two learners' per-episode
                       accuracies on the same episodes (`Paired`)
    cvar               mean of the worst `alpha` share of tasks (CVaR)
    share_below        fraction of tasks strictly below a threshold
    ecdf               the empirical distribution function of a sample
    paired_t_power     the power of the two-sided paired t-test
    samples_needed     the smallest sample (episodes, or seeds) that detects a
                       difference at a power

Everything takes and returns NumPy values and floats, with no side effects;
the random functions take a seed. The t and noncentral-t distributions are
scipy.special's. Nothing here knows about learners or reports
(reports.py formats these numbers).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Optional, Tuple

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
EXACT_MAX = 16   # exact sign-flip enumeration up to 2^16 patterns
PERMUTATION_TEST = "paired sign-flip permutation test of the mean difference"


def _sample(values) -> np.ndarray:
  return np.asarray(values, np.float64).ravel()


def t_quantile(q: float, df: float) -> float:
  """The `q` quantile of Student's t with `df` degrees of freedom."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  return float(special.stdtrit(df, q))


def mean_ci_t(values, level: float = LEVEL) -> Tuple[float, float, float]:
  """`(mean, low, high)`: the mean and its two-sided Student-t CI,
  mean ± t_{(1+level)/2, n−1} · s/√n (s with ddof = 1); the CI is NaN for
  fewer than two values."""
  x = _sample(values)
  mean = float(x.mean()) if x.size else float("nan")
  if x.size < 2:
    return mean, float("nan"), float("nan")
  half = t_quantile(0.5 + level / 2, x.size - 1) * float(
      x.std(ddof=1)) / math.sqrt(x.size)
  return mean, mean - half, mean + half


def bootstrap_ci(values, level: float = LEVEL, resamples: int = RESAMPLES,
                 seed: int = 0) -> Tuple[float, float]:
  """Percentile bootstrap CI of the mean: the (1−level)/2 and (1+level)/2
  quantiles of the means of `resamples` resamples with replacement."""
  x = _sample(values)
  if x.size < 2:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = np.empty(resamples)
  chunk = max(1, 2_000_000 // x.size)
  for start in range(0, resamples, chunk):
    stop = min(start + chunk, resamples)
    means[start:stop] = x[rng.integers(0, x.size, (stop - start, x.size))].mean(1)
  low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
  return float(low), float(high)


def sign_flip_p(differences, resamples: int = RESAMPLES, seed: int = 0,
                exact_max: int = EXACT_MAX) -> float:
  """Two-sided p-value of the paired permutation test of mean difference 0.

  Under the null each difference is as likely negated, so the statistic
  |Σ d| is compared with its value under every sign pattern. Zero
  differences do not change the sum: with at most `exact_max` non-zero ones
  the 2^m patterns are enumerated (p = share with |Σ| ≥ the observed);
  otherwise `resamples` random patterns give p = (1 + hits) / (1 + resamples).
  All differences zero: p = 1.
  """
  d = _sample(differences)
  d = d[d != 0]
  observed = abs(d.sum())
  tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
  if d.size <= exact_max:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    sums = np.abs(signs @ d) if d.size else np.zeros(1)
    return float(np.mean(sums >= observed - tol))
  rng = np.random.default_rng(seed)
  hits = 0
  chunk = max(1, 2_000_000 // d.size)
  for start in range(0, resamples, chunk):
    n = min(chunk, resamples - start)
    signs = rng.choice((1.0, -1.0), size=(n, d.size))
    hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
  return (1 + hits) / (1 + resamples)


def resolved(low: float, high: float) -> bool:
  """Whether a CI excludes 0 (NaN bounds: not resolved)."""
  return bool(low > 0 or high < 0)


@dataclasses.dataclass(frozen=True)
class Paired:
  """The paired comparison of `a − b` on the same episodes.

  Attributes:
    n: episodes.
    mean: mean per-episode difference.
    sd: its sample standard deviation (ddof = 1).
    t_ci: `(low, high)` paired Student-t CI of the mean difference.
    bootstrap_ci: `(low, high)` percentile bootstrap CI.
    p_value: the paired sign-flip permutation test's (`sign_flip_p`).
    level: the CIs' level.
  """
  n: int
  mean: float
  sd: float
  t_ci: Tuple[float, float]
  bootstrap_ci: Tuple[float, float]
  p_value: float
  level: float = LEVEL

  @property
  def resolved(self) -> bool:
    """Both CIs exclude 0."""
    return resolved(*self.t_ci) and resolved(*self.bootstrap_ci)


def paired(a, b, level: float = LEVEL, resamples: int = RESAMPLES,
           seed: int = 0) -> Paired:
  """Compares two learners' per-episode results on the same episodes
  (`a[i]` and `b[i]` of episode i): the mean of `a − b`, its t and bootstrap
  CIs and the sign-flip p-value."""
  a, b = _sample(a), _sample(b)
  if a.shape != b.shape:
    raise ValueError(f"paired samples differ in size: {a.size} vs {b.size}.")
  d = a - b
  mean, low, high = mean_ci_t(d, level)
  sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
  return Paired(int(d.size), mean, sd, (low, high),
                bootstrap_ci(d, level, resamples, seed),
                sign_flip_p(d, resamples, seed), level)


# --- worst tasks -------------------------------------------------------------

def cvar(values, alpha: float = 0.1) -> float:
  """Conditional value at risk of the lower tail: the mean of the worst
  `alpha` share of the values. With n·alpha not an integer the value at the
  boundary counts with its fractional weight (n·alpha < 1: the minimum)."""
  if not 0 < alpha <= 1:
    raise ValueError(f"alpha must be in (0, 1], got {alpha}.")
  x = np.sort(_sample(values))
  if not x.size:
    return float("nan")
  mass = alpha * x.size
  whole = int(math.floor(mass + 1e-9))
  total = x[:whole].sum()
  if whole < x.size and mass - whole > 1e-9:
    total += (mass - whole) * x[whole]
  return float(total / mass)


def share_below(values, threshold: float) -> float:
  """Fraction of `values` strictly below `threshold`."""
  x = _sample(values)
  return float((x < threshold).mean()) if x.size else float("nan")


def ecdf(values) -> Tuple[np.ndarray, np.ndarray]:
  """`(sorted values, F)` with F[i] = (i + 1) / n, the empirical CDF at them."""
  x = np.sort(_sample(values))
  return x, np.arange(1, x.size + 1) / max(x.size, 1)


# --- how many episodes ---------------------------------------------------------

def paired_t_power(difference: float, sd: float, n: int,
                   alpha: float = 1 - LEVEL) -> float:
  """Power of the two-sided paired t-test at level `alpha` with `n` pairs
  when the true mean difference is `difference` and the differences' standard
  deviation is `sd`: P(|T| > t_{1−α/2, n−1}) for T noncentral t with n − 1
  degrees of freedom and noncentrality difference·√n / sd."""
  if n < 2:
    return float("nan")
  df = n - 1
  crit = t_quantile(1 - alpha / 2, df)
  nc = abs(difference) * math.sqrt(n) / sd
  from scipy import special  # pylint: disable=g-import-not-at-top
  return float(1 - special.nctdtr(df, nc, crit) + special.nctdtr(df, nc, -crit))


def samples_needed(difference: float, sd: float, power: float = 0.8,
                   alpha: float = 1 - LEVEL, max_n: int = 10**7
                   ) -> Optional[int]:
  """The smallest n ≥ 2 of pairs (episodes, or seeds) at which the two-sided
  paired t-test at level `alpha` detects a true mean difference
  `difference`, whose per-pair standard deviation is `sd`, with probability
  `power` (`paired_t_power`); None for a zero difference or when more than
  `max_n` would be needed. Starts at the normal approximation
  ((z_{1−α/2} + z_power)·sd/difference)² and steps to the exact n."""
  if difference == 0 or not math.isfinite(difference) or not math.isfinite(sd):
    return None
  if sd <= 0:
    return 2
  from scipy import special  # pylint: disable=g-import-not-at-top
  z = special.ndtri(1 - alpha / 2) + special.ndtri(power)
  n = max(2, int(math.ceil((z * sd / abs(difference)) ** 2)))
  if n > max_n:
    return None
  while n > 2 and paired_t_power(difference, sd, n - 1, alpha) >= power:
    n -= 1
  while paired_t_power(difference, sd, n, alpha) < power:
    n += 1
    if n > max_n:
      return None
  return n
