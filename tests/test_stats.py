"""Statistics that decide claims: paired comparisons, worst tasks, seeds.

The functions of evaluation/stats.py against scipy and hand computations on
synthetic per-episode results, and the report builders on synthetic cells
(no model runs, except the one integration test).
"""

import itertools
import json

import numpy as np
import pytest
from scipy import stats as sps

from advmeta_jax import experiments
from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.evaluation import comparisons
from advmeta_jax.evaluation import MetaTestResult
from advmeta_jax.evaluation import plots
from advmeta_jax.evaluation import protocol
from advmeta_jax.evaluation import reports
from advmeta_jax.evaluation import stats
from advmeta_jax.evaluation import TestCase
from advmeta_jax.experiments import reproduction

PGD = AttackSpec.of("pgd", eps="8/255")


def _accuracies(rng, n, p, queries=75):
  """Per-episode accuracies of a 5-way task with 75 queries: multiples of
  1/75, as the digits tables have."""
  return rng.binomial(queries, p, n) / queries


# --- the statistics -----------------------------------------------------------

def test_paired_t_ci_is_scipys():
  rng = np.random.default_rng(0)
  a = _accuracies(rng, 150, 0.35)
  b = np.clip(a + rng.normal(-0.01, 0.08, 150), 0, 1)
  p = stats.paired(a, b)
  ci = sps.ttest_rel(a, b).confidence_interval(0.95)
  assert p.t_ci == pytest.approx((ci.low, ci.high), rel=1e-10)
  d = a - b
  half = sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
  assert p.mean == pytest.approx(d.mean())
  assert p.t_ci == pytest.approx((d.mean() - half, d.mean() + half))
  assert p.sd == pytest.approx(d.std(ddof=1)) and p.n == 150


def test_the_t_ci_over_a_few_seeds_is_scipys():
  seeds = [0.8, -0.3, 1.9]
  mean, low, high = stats.mean_ci_t(seeds)
  expected = sps.t.interval(0.95, 2, loc=np.mean(seeds), scale=sps.sem(seeds))
  assert (low, high) == pytest.approx(expected)
  assert mean == pytest.approx(np.mean(seeds))
  assert np.isnan(stats.mean_ci_t([1.0])[1])


def _enumerated_p(d):
  """Two-sided sign-flip p by brute force over every sign of every pair
  (zeros included)."""
  observed = abs(sum(d))
  sums = [abs(sum(s * x for s, x in zip(signs, d)))
          for signs in itertools.product((1, -1), repeat=len(d))]
  return np.mean([s >= observed - 1e-12 for s in sums])


@pytest.mark.parametrize("d", [
    [0.2, 0.1, -0.05, 0.3, 0.0, 0.15, 0.1, -0.1],
    [1 / 75, 2 / 75, 2 / 75, -1 / 75, 0.0, 0.0, 3 / 75, -2 / 75, 1 / 75],
    [0.5, 0.5, 0.5],
])
def test_the_sign_flip_p_value_is_the_exact_enumeration(d):
  assert stats.sign_flip_p(d) == pytest.approx(_enumerated_p(d))


def test_the_sign_flip_p_value_is_scipys_permutation_test():
  rng = np.random.default_rng(1)
  a, b = rng.normal(0.3, 0.1, 10), rng.normal(0.25, 0.1, 10)
  exact = sps.permutation_test(
      (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
      permutation_type="samples", alternative="two-sided").pvalue
  assert stats.sign_flip_p(a - b) == pytest.approx(exact)
  # Monte Carlo above 16 non-zero differences: close to the exact p.
  a, b = rng.normal(0.3, 0.1, 18), rng.normal(0.27, 0.1, 18)
  d = a - b
  assert stats.sign_flip_p(d) == pytest.approx(stats.sign_flip_p(
      d, exact_max=18), abs=0.015)


def test_the_bootstrap_ci_is_close_to_scipys():
  rng = np.random.default_rng(2)
  d = _accuracies(rng, 150, 0.4) - _accuracies(rng, 150, 0.38)
  ours = stats.bootstrap_ci(d)
  theirs = sps.bootstrap((d,), np.mean, method="percentile",
                         random_state=0).confidence_interval
  assert ours == pytest.approx((theirs.low, theirs.high), abs=0.003)
  assert stats.bootstrap_ci(d) == ours   # seeded


def test_a_zero_difference_is_not_resolved():
  a = _accuracies(np.random.default_rng(3), 150, 0.3)
  p = stats.paired(a, a)
  assert p.mean == 0 and p.p_value == 1.0 and not p.resolved
  assert p.t_ci == (0.0, 0.0)
  # Differences that cancel: mean 0, a CI around it.
  b = a + np.tile([0.02, -0.02], 75)
  p = stats.paired(a, b)
  assert p.mean == pytest.approx(0, abs=1e-12) and not p.resolved
  assert p.t_ci[0] < 0 < p.t_ci[1] and p.p_value > 0.9


def test_a_clear_difference_is_resolved():
  rng = np.random.default_rng(4)
  b = _accuracies(rng, 150, 0.3)
  p = stats.paired(np.clip(b + 0.1 + rng.normal(0, 0.02, 150), 0, 1), b)
  assert p.resolved and p.mean > 0 and p.p_value < 1e-3


def test_cvar_and_share_below_by_hand():
  values = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]
  assert stats.cvar(values, 0.1) == pytest.approx(0.0)       # the worst one
  assert stats.cvar(values, 0.2) == pytest.approx(0.05)      # (0 + .1) / 2
  assert stats.cvar(values, 0.25) == pytest.approx((0 + .1 + .5 * .2) / 2.5)
  assert stats.cvar(values, 1.0) == pytest.approx(np.mean(values))
  assert stats.cvar([0.3, 0.6], 0.1) == pytest.approx(0.3)   # n·α < 1: min
  fifteen = np.arange(150) / 150
  assert stats.cvar(fifteen, 0.1) == pytest.approx(np.mean(fifteen[:15]))
  assert stats.share_below(values, 0.2) == pytest.approx(0.2)  # 0.0, 0.1
  x, f = stats.ecdf([0.3, 0.1, 0.2])
  assert x.tolist() == [0.1, 0.2, 0.3] and f.tolist() == pytest.approx(
      [1 / 3, 2 / 3, 1])
  with pytest.raises(ValueError):
    stats.cvar(values, 0)


def test_power_is_the_noncentral_t():
  d, sd, n = 0.02, 0.1, 120
  crit = sps.t.ppf(0.975, n - 1)
  nc = d * np.sqrt(n) / sd
  expected = sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
  assert stats.paired_t_power(d, sd, n) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("effect,n", [(0.5, 34), (0.2, 199), (0.8, 15)])
def test_samples_needed_matches_the_published_paired_t_sizes(effect, n):
  """Paired t-test, two-sided α = 0.05, power 0.8 (the sizes G*Power and
  statsmodels' TTestPower.solve_power give): the smallest n reaching the
  power, at most a few above the normal approximation."""
  assert stats.samples_needed(effect, 1.0, 0.8) == n
  assert stats.paired_t_power(effect, 1.0, n) >= 0.8
  assert stats.paired_t_power(effect, 1.0, n - 1) < 0.8
  normal = ((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) / effect) ** 2
  assert normal <= n <= normal + 3


def test_samples_needed_edge_cases():
  assert stats.samples_needed(0.0, 0.1) is None
  assert stats.samples_needed(0.01, 0.0) == 2
  assert stats.samples_needed(1e-9, 1.0) is None          # beyond max_n
  # Scale-free: points or fractions give the same n.
  assert stats.samples_needed(0.01, 0.15) == stats.samples_needed(1.0, 15.0)


# --- the report ---------------------------------------------------------------

def _result(acc):
  acc = np.asarray(acc, np.float64)
  loss = 1.0 - acc
  return MetaTestResult(accuracy=acc, loss=loss, step_accuracy=acc[:, None],
                        step_loss=loss[:, None], clean_loss=loss * 0.5,
                        clean_accuracy=acc)


def _cells(seeds=(None,), n=60):
  """maml, aq and tafl on the same n episodes: clean and PGD cells; tafl
  equal to aq on every episode of the PGD cell."""
  cells = []
  for seed in seeds:
    rng = np.random.default_rng(0 if seed is None else seed)
    clean = {r: _accuracies(rng, n, p) for r, p in
             (("maml", 0.6), ("aq", 0.55), ("tafl", 0.56))}
    adv = {"maml": _accuracies(rng, n, 0.05)}
    adv["aq"] = _accuracies(rng, n, 0.35)
    adv["tafl"] = adv["aq"].copy()
    for run in ("maml", "aq", "tafl"):
      cells.append(protocol.Cell(run, run, TestCase(), None,
                                 _result(clean[run]), n_way=5,
                                 train_seed=seed))
      cells.append(protocol.Cell(run, run, TestCase("clean", "adv"), PGD,
                                 _result(adv[run]), n_way=5,
                                 train_seed=seed))
  return cells


PAIRS = [("aq", "maml"), ("tafl", "maml"), ("tafl", "aq")]


def test_paired_rows_pair_the_same_episodes():
  cells = _cells()
  rows = comparisons.paired_rows(cells, PAIRS)
  assert [(r["a"], r["b"], r["case"]) for r in rows] == [
      (a, b, case) for a, b in PAIRS for case in ("clean/clean", "clean/adv")]
  (row,) = [r for r in rows if (r["a"], r["b"], r["case"]) == (
      "aq", "maml", "clean/adv")]
  by = {(c.run, c.case.name): c.result.accuracy for c in cells}
  ci = sps.ttest_rel(by["aq", "clean/adv"],
                     by["maml", "clean/adv"]).confidence_interval()
  assert (row["t_low"], row["t_high"]) == pytest.approx(
      (100 * ci.low, 100 * ci.high), abs=0.006)
  assert row["resolved"] and row["p_value"] < 1e-3
  (tie,) = [r for r in rows if (r["a"], r["b"], r["case"]) == (
      "tafl", "aq", "clean/adv")]
  assert tie["difference"] == 0 and not tie["resolved"]
  assert tie["episodes_needed_observed"] is None
  with pytest.raises(ConfigError, match="does not have"):
    comparisons.paired_rows(cells, [("tafl", "nope")])


def test_the_report_has_the_paired_table_and_the_worst_tasks(tmp_path):
  report = reports.write_reports(_cells(), str(tmp_path), pairs=PAIRS,
                                 kde=True)
  text = (tmp_path / "report.md").read_text()
  assert "## Paired comparisons" in text
  assert ("| a − b | case | mean difference (points) | paired t 95% CI | "
          "bootstrap 95% CI | p (sign-flip) | resolved |") in text
  assert "How many episodes each difference needs" in text
  assert ("- tafl − aq, clean/adv (pgd ε=8/255): +0.00 points" in text
          and "Not resolved: the CI contains 0." in text)
  assert "Resolved: aq is above maml" in text
  assert "## Worst tasks" in text and "CVaR 10% %" in text
  payload = json.loads((tmp_path / "results.json").read_text())
  assert len(payload["per_episode"]) == 6
  assert len(payload["per_episode"][0]["accuracy"]) == 60
  assert len(payload["paired"]) == 6 and len(payload["worst_tasks"]) == 3
  cell = payload["cells"][1]
  acc = _cells()[1].result.accuracy
  assert cell["cvar10"] == pytest.approx(100 * stats.cvar(acc), abs=0.006)
  assert cell["below_chance"] == pytest.approx(100 * np.mean(acc < 0.2),
                                               abs=0.006)
  assert len((tmp_path / "paired.csv").read_text().splitlines()) == 7
  for key in ("ecdf", "kde", "paired csv"):
    assert key in report.files
  assert "paired_over_seeds" not in payload


def test_the_report_over_seeds(tmp_path):
  cells = _cells(seeds=(0, 1, 2))
  reports.write_reports(cells, str(tmp_path), pairs=PAIRS)
  text = (tmp_path / "report.md").read_text()
  assert "## Results over training seeds" in text
  assert "| learner | case | seed 0 | seed 1 | seed 2 | mean ± s.d. over seeds |" in text
  assert "### Over training seeds" in text
  assert "How many seeds each difference needs" in text
  payload = json.loads((tmp_path / "results.json").read_text())
  over = payload["paired_over_seeds"]
  assert len(over) == 6 and len(payload["paired"]) == 18
  (row,) = [r for r in over if (r["a"], r["b"], r["case"]) == (
      "aq", "maml", "clean/clean")]
  per_seed = [r["difference"] for r in payload["paired"]
              if (r["a"], r["b"], r["case"]) == ("aq", "maml", "clean/clean")]
  assert row["seed_differences"] == per_seed
  ci = sps.t.interval(0.95, 2, loc=np.mean(per_seed), scale=sps.sem(per_seed))
  assert (row["t_low"], row["t_high"]) == pytest.approx(ci, abs=0.006)
  (tie,) = [r for r in over if (r["a"], r["b"], r["case"]) == (
      "tafl", "aq", "clean/adv")]
  assert not tie["resolved"] and tie["difference"] == 0
  assert (tmp_path / "paired_seeds.csv").exists()
  summary = comparisons.seed_summary(cells)
  assert summary[0]["seeds"] == [0, 1, 2]
  means = [c.result.mean for c in cells if (c.run, c.case.name) == (
      "maml", "clean/clean")]
  assert summary[0]["sd"] == pytest.approx(100 * np.std(means, ddof=1),
                                           abs=0.006)


def test_the_ecdf_figure_is_written(tmp_path):
  rng = np.random.default_rng(0)
  path = plots.plot_ecdf({"aq": _accuracies(rng, 50, .3),
                          "maml": _accuracies(rng, 50, .05)},
                         str(tmp_path / "e.png"), chance=0.2)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_default_pairs_of_the_digits_tables():
  def pairs(name):
    experiment = experiments.get(name)
    return protocol.default_pairs([
        protocol.Run(r, Config.make(**experiment.train_fields(r)), None)
        for r in experiment.row_names])
  assert pairs("digits_robust") == [
      ("maml_ad", "maml"), ("adml", "maml"), ("aq", "maml"), ("tafl", "maml"),
      ("protonet+tafl", "maml"), ("tafl", "aq")]
  assert ("r2d2+tafl", "r2d2+aq") in pairs("digits_beyond")


def test_seeds_layout_and_bad_seeds():
  assert reproduction.seed_rundir("/w", "aq", 0, 1) == "/w/aq"
  assert reproduction.seed_rundir("/w", "aq", 2, 3) == "/w/aq/seed2"
  for bad in (0, -1, 1.5, "3", True):
    with pytest.raises(ConfigError, match="--seeds must be a positive integer"):
      reproduction.check_seeds(bad)
  assert reproduction.check_seeds(3) == 3


@pytest.mark.integration
def test_reproduce_with_two_seeds_shrunk(tmp_path):
  """Two rows, two training seeds at toy scale: each seed in its own
  workdir, a second call resumes every seed without training, and the
  report compares aq − maml per seed and over seeds."""
  experiment = experiments.get("digits_robust")
  kwargs = dict(shrink=True, rows=["maml", "aq"], seeds=2, progress=False,
                log=lambda _: None)
  out = reproduction.reproduce(experiment, str(tmp_path), **kwargs)
  for row in ("maml", "aq"):
    for k in (0, 1):
      assert (tmp_path / row / f"seed{k}" / "config.json").exists()
  assert {c.train_seed for c in out.cells} == {0, 1}
  assert "### Over training seeds" in out.report.markdown
  assert "aq − maml" in out.report.markdown
  again = reproduction.reproduce(experiment, str(tmp_path), **kwargs)
  for a, b in zip(out.cells, again.cells):
    np.testing.assert_array_equal(a.result.accuracy, b.result.accuracy)
