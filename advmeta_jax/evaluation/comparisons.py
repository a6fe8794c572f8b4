"""What a report's cells say about claims: paired differences, worst tasks,
several training seeds. Rows of plain numbers (percentage points), which
reports.py formats.

    [Cell], pairs ──paired_rows──▶ one row per pair × case/attack (× seed):
                                   mean per-episode difference, paired t and
                                   bootstrap 95% CIs, sign-flip p-value,
                                   whether resolved, episodes for 80% power
    paired rows ──seed_rows──────▶ one row per pair × case/attack: the mean
                                   of the per-seed differences and its t CI
                                   over seeds, seeds for 80% power
    [Cell] ──worst_task_row──────▶ CVaR at 10% and share of tasks below
                                   chance of one cell
    [Cell] ──seed_summary────────▶ per-seed accuracy ± CI, mean ± s.d. over
                                   seeds, per row × case/attack

The Markdown of these rows (`paired_table`, `power_table`,
`seed_paired_table`, `resolution_sentence`) is here too; reports.py puts it
in report.md. Every learner of a report meets the same episodes (protocol.evaluate_runs),
so episode i of one cell and of another are the same task: their
per-episode accuracies pair. The statistics are stats.py's.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import stats
from advmeta_jax.evaluation.protocol import Cell
from advmeta_jax.evaluation.tables import case_label
from advmeta_jax.evaluation.tables import markdown_table

POWER = 0.8
DETECT_POINTS = 1.0   # the difference the "how many" columns also size for
CVAR_ALPHA = 0.1

Key = Tuple[str, str]   # (case name, attack label)


def _key(cell: Cell) -> Key:
  return cell.case.name, cell.attack_label


def _points(x: float, digits: int = 2) -> Optional[float]:
  return None if x is None or not np.isfinite(x) else round(100 * x, digits)


def check_pairs(cells: Sequence[Cell], pairs: Sequence[Tuple[str, str]]):
  """Refuses a pair that names a row the report does not have, or a row
  compared with itself."""
  rows = list(dict.fromkeys(c.run for c in cells))
  for a, b in pairs:
    unknown = [r for r in (a, b) if r not in rows]
    if unknown:
      raise ConfigError(f"pair {a}:{b} names rows {unknown} that the report "
                        f"does not have; rows: {', '.join(rows)}.")
    if a == b:
      raise ConfigError(f"pair {a}:{b} compares a row with itself.")


def paired_row(a: Cell, b: Cell, *, seed: int = 0) -> Dict[str, Any]:
  """The paired comparison a − b of two cells on the same episodes, in
  percentage points."""
  if a.result.num_episodes != b.result.num_episodes:
    raise ConfigError(f"{a.run} and {b.run} ran {a.result.num_episodes} and "
                      f"{b.result.num_episodes} episodes: not paired.")
  p = stats.paired(a.result.accuracy, b.result.accuracy, seed=seed)
  needed = lambda diff: stats.samples_needed(diff, p.sd, POWER)
  row = {"a": a.run, "b": b.run, "case": a.case.name,
         "attack": a.attack_label, "episodes": p.n,
         "difference": _points(p.mean, 4), "sd": _points(p.sd),
         "t_low": _points(p.t_ci[0]), "t_high": _points(p.t_ci[1]),
         "bootstrap_low": _points(p.bootstrap_ci[0]),
         "bootstrap_high": _points(p.bootstrap_ci[1]),
         "p_value": round(p.p_value, 4), "resolved": p.resolved,
         "episodes_needed_observed": needed(p.mean),
         "episodes_needed_1pt": needed(DETECT_POINTS / 100)}
  if a.train_seed is not None:
    row["seed"] = a.train_seed
  return row


def paired_rows(cells: Sequence[Cell], pairs: Sequence[Tuple[str, str]]
                ) -> List[Dict[str, Any]]:
  """`paired_row` for every pair, every case/attack both rows have, and every
  training seed (pair-major, in the cells' order)."""
  check_pairs(cells, pairs)
  index = {(c.run, _key(c), c.train_seed): c for c in cells}
  keys = list(dict.fromkeys((_key(c), c.train_seed) for c in cells))
  rows = []
  for a, b in pairs:
    for key, seed in keys:
      if (a, key, seed) in index and (b, key, seed) in index:
        rows.append(paired_row(index[a, key, seed], index[b, key, seed]))
  return rows


def seed_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Across training seeds: for each pair × case/attack of `paired_rows`
  with a seed, the per-seed mean differences, their mean and its Student-t
  95% CI over seeds (n − 1 degrees of freedom), their s.d. and the seeds a
  1-point or the observed difference needs at 80% power."""
  groups: Dict[Tuple, List[Dict[str, Any]]] = {}
  for r in rows:
    if "seed" in r:
      groups.setdefault((r["a"], r["b"], r["case"], r["attack"]), []).append(r)
  out = []
  for (a, b, case, attack), group in groups.items():
    d = np.array([r["difference"] for r in group], np.float64)
    mean, low, high = stats.mean_ci_t(d)
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    finite = np.isfinite(sd) and sd > 0
    out.append({
        "a": a, "b": b, "case": case, "attack": attack, "seeds": int(d.size),
        "seed_differences": d.tolist(), "difference": round(mean, 4),
        "sd": round(sd, 2) if np.isfinite(sd) else None,
        "t_low": round(low, 2) if np.isfinite(low) else None,
        "t_high": round(high, 2) if np.isfinite(high) else None,
        "resolved": stats.resolved(low, high),
        "seeds_needed_observed": (stats.samples_needed(mean, sd, POWER)
                                  if finite else None),
        "seeds_needed_1pt": (stats.samples_needed(DETECT_POINTS, sd, POWER)
                             if finite else None)})
  return out


def worst_task_row(cell: Cell, alpha: float = CVAR_ALPHA) -> Dict[str, Any]:
  """CVaR at `alpha` (the mean accuracy of the worst `alpha` share of tasks)
  and the share of tasks below chance 1/N, in percent."""
  acc = cell.result.accuracy
  return {"cvar10" if alpha == CVAR_ALPHA else f"cvar{alpha:g}":
              _points(stats.cvar(acc, alpha)),
          "below_chance": (None if not cell.n_way else
                           _points(stats.share_below(acc, 1 / cell.n_way)))}


def seed_summary(cells: Sequence[Cell]) -> List[Dict[str, Any]]:
  """Per row × case/attack: the seeds, each seed's accuracy and 95% CI, and
  the mean and s.d. (ddof = 1) of the per-seed accuracies, in percent."""
  groups: Dict[Tuple, List[Cell]] = {}
  for c in cells:
    groups.setdefault((c.run,) + _key(c), []).append(c)
  out = []
  for (run, case, attack), group in groups.items():
    means = np.array([c.result.mean for c in group])
    out.append({"learner": run, "case": case, "attack": attack,
                "seeds": [c.train_seed for c in group],
                "accuracy": [_points(m) for m in means],
                "ci95": [_points(c.result.ci95) for c in group],
                "mean": _points(means.mean()),
                "sd": _points(means.std(ddof=1)) if means.size > 1 else None})
  return out


# --- as Markdown ---------------------------------------------------------------

PAIRED_NOTE = (
    "Every learner met the same episodes, so each comparison a − b is "
    "over per-episode differences of query accuracy (points): the mean, "
    "its paired Student-t 95% CI and percentile-bootstrap 95% CI (10,000 "
    "resamples), and the two-sided p-value of the paired sign-flip "
    "permutation test (exact up to 16 non-zero differences, else 10,000 "
    "random sign patterns). Resolved: both CIs exclude 0. The p-values are "
    "not corrected for the number of comparisons.")
SEEDS_NOTE = (
    "Each seed's mean per-episode difference (above), their mean and its "
    "Student-t 95% CI over seeds (seeds − 1 degrees of freedom): this "
    "counts the variation between training runs, which the CIs over "
    "episodes of one seed do not. Resolved: that CI excludes 0.")


def _ci(low, high) -> str:
  return "—" if low is None or high is None else f"[{low:+.2f}, {high:+.2f}]"


def _count(n) -> str:
  return "—" if n is None else f"{n:,}"


def paired_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """`comparisons.paired_rows` as Markdown: difference in points, paired t
  and bootstrap 95% CIs, sign-flip p, resolved."""
  with_seed = any("seed" in r for r in rows)
  header = (["a − b"] + (["seed"] if with_seed else [])
            + ["case", "mean difference (points)", "paired t 95% CI",
               "bootstrap 95% CI", "p (sign-flip)", "resolved"])
  return markdown_table(header, [
      [f"{r['a']} − {r['b']}"] + ([r.get("seed", "—")] if with_seed else [])
      + [case_label(r["case"], r["attack"]), f"{r['difference']:+.2f}",
         _ci(r["t_low"], r["t_high"]),
         _ci(r["bootstrap_low"], r["bootstrap_high"]), f"{r['p_value']:.4f}",
         "yes" if r["resolved"] else "no"] for r in rows])


def power_table(rows: Sequence[Mapping[str, Any]], unit: str = "episodes"
                ) -> str:
  """How many episodes (or seeds) each comparison needs: the two-sided
  paired t-test at 5% with 80% power, from the s.d. of its differences."""
  with_seed = any("seed" in r for r in rows)
  return markdown_table(
      ["a − b"] + (["seed"] if with_seed else []) + [
          "case", "s.d. of the difference (points)",
          f"{unit} for the observed difference",
          f"{unit} for {DETECT_POINTS:g} point"],
      [[f"{r['a']} − {r['b']}"] + ([r.get("seed", "—")] if with_seed else [])
       + [case_label(r["case"], r["attack"]),
          "—" if r["sd"] is None else f"{r['sd']:.2f}",
          _count(r[f"{unit}_needed_observed"]),
          _count(r[f"{unit}_needed_1pt"])] for r in rows])


def seed_paired_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """`comparisons.seed_rows` as Markdown."""
  return markdown_table(
      ["a − b", "case", "per-seed differences (points)",
       "mean over seeds", "t 95% CI over seeds", "resolved"],
      [[f"{r['a']} − {r['b']}", case_label(r["case"], r["attack"]),
        ", ".join(f"{d:+.2f}" for d in r["seed_differences"]),
        f"{r['difference']:+.2f}", _ci(r["t_low"], r["t_high"]),
        "yes" if r["resolved"] else "no"] for r in rows])


def resolution_sentence(row: Mapping[str, Any], over_seeds: bool = False
                        ) -> str:
  """One sentence: the difference, its CI(s), and whether it is resolved
  (per episode: both 95% CIs exclude 0; over seeds: the t CI over seeds
  does)."""
  what = (f"{row['a']} − {row['b']}, {case_label(row['case'], row['attack'])}"
          + (f", seed {row['seed']}" if "seed" in row else ""))
  if over_seeds:
    detail = (f"mean over {row['seeds']} seeds {row['difference']:+.2f} "
              f"points, t 95% CI over seeds {_ci(row['t_low'], row['t_high'])}")
  else:
    detail = (f"{row['difference']:+.2f} points, paired t 95% CI "
              f"{_ci(row['t_low'], row['t_high'])}, bootstrap "
              f"{_ci(row['bootstrap_low'], row['bootstrap_high'])}, p = "
              f"{row['p_value']:.4f}")
  if row["resolved"]:
    side = "above" if row["difference"] > 0 else "below"
    return (f"- {what}: {detail}. Resolved: {row['a']} is {side} "
            f"{row['b']} (the CI excludes 0).")
  return f"- {what}: {detail}. Not resolved: the CI contains 0."
