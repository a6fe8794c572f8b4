"""Reports of the meta-test: tables (Markdown, CSV, JSON) and figures.

    [Cell] ──write_reports──▶ Report(markdown, files)
        report.md      the pivot table (learners × case/attack; with several
                       training seeds each seed's accuracy ± CI and the mean
                       ± s.d. over seeds), then one line per cell with the
                       paper's number beside ours when the experiment has
                       one, the paired comparisons (and how many episodes
                       they need), the worst tasks (CVaR, below chance), the
                       L_AR summary, the masking checks
        results.csv    one row per cell (accuracies in percent)
        paired.csv     one row per paired comparison (paired_seeds.csv: over
                       training seeds)
        results.json   the cells, every cell's per-episode accuracy, the
                       paired comparisons, the worst tasks, the per-step
                       curves, the L_AR summary and the masking checks
        curves_<attack>.png, kde_l_ar_<attack>.png,
        ecdf_accuracy_<attack>.png                   (plots.py)
    {name: MetaTestResult} ──write_meta_test──▶ eval_test.md, eval_test.json
    TAFL's γ × k grid ──write_sweep──▶ sensitivity_heatmap.png, sweep.json,
                                        sweep.md

Formatting and writing only: the functions here read what protocol.py
(`Cell`s), metatest.py (`MetaTestResult`s) and comparisons.py (paired
differences, worst tasks, seeds) computed and run no model.
The imports go one way: evaluation ← protocol ← reports ← reproduction.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from advmeta_jax import attacks
from advmeta_jax.evaluation import comparisons
from advmeta_jax.evaluation import plots
from advmeta_jax.evaluation.metatest import AttackSpec
from advmeta_jax.evaluation.metatest import confidence_interval_95
from advmeta_jax.evaluation.metatest import format_accuracy
from advmeta_jax.evaluation.metatest import MetaTestResult
from advmeta_jax.evaluation.metatest import TestCase
from advmeta_jax.evaluation.protocol import Cell
from advmeta_jax.evaluation.tables import case_label
from advmeta_jax.evaluation.tables import markdown_table

__all__ = ["Report", "TAFL_DELTA", "cell_rows", "curve_data",
           "episode_rows", "format_accuracy", "l_ar_samples",
           "markdown_report", "markdown_table", "pivot_table",
           "results_table", "seed_table", "write_csv",
           "write_json", "write_meta_test", "write_reports", "write_sweep",
           "write_text"]

TAFL_DELTA = 1e-3   # the δ floor of L_AR in the analysis (TAFL's default)


@dataclasses.dataclass(frozen=True)
class Report:
  """What a report writer wrote.

  Attributes:
    markdown: the report's text, as written to its Markdown file.
    files: `{what: path}` of every file written, in the order written
      (`write_reports`: "curves <attack label>" per figure, "kde", "report",
      "csv", "json").
  """
  markdown: str
  files: Mapping[str, str] = dataclasses.field(default_factory=dict)


# --- tables -----------------------------------------------------------------

def write_json(path: str, payload: Dict) -> None:
  with open(path, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)


def write_text(workdir: str, name: str, text: str) -> None:
  with open(f"{workdir}/{name}", "w") as f:
    f.write(text + "\n")


def results_table(results: Mapping[str, MetaTestResult], config) -> str:
  """Markdown table, one row per learner: accuracy ± 95% CI and the protocol
  (`config`: the runs' `config.Config`)."""
  shape = f"{config.n_way}-way {config.k_shot}-shot"
  rows = [(name, config.dataset, shape, format_accuracy(r.mean, r.ci95),
           r.num_episodes) for name, r in results.items()]
  return markdown_table(
      ("learner", "dataset", "task", "accuracy % (± 95% CI)", "episodes"), rows)


def write_meta_test(results: Mapping[str, MetaTestResult], config,
                    outdir: str) -> Report:
  """Writes `results_table` to eval_test.md and each result's summary to
  eval_test.json in `outdir` (the meta-test after training)."""
  table = results_table(results, config)
  write_text(outdir, "eval_test.md", table)
  write_json(f"{outdir}/eval_test.json",
             {name: r.summary() for name, r in results.items()})
  return Report(table, {"report": f"{outdir}/eval_test.md",
                        "json": f"{outdir}/eval_test.json"})


# --- the protocol's cells ---------------------------------------------------------------------------------------------------------------

def cell_rows(cells: Sequence[Cell],
              experiment: Optional[Any] = None
              ) -> List[Dict[str, Any]]:
  """One flat dict per cell (accuracies in percent), with the paper's cell
  when `experiment` (an `experiments.ExperimentConfig`) has it."""
  rows = []
  for c in cells:
    r = c.result
    row = {"learner": c.run, "case": c.case.name, "support": c.case.support,
           "query": c.case.query,
           "attack": "none" if c.attack is None else c.attack.name,
           "eps": "" if c.attack is None or c.attack.eps is None
                  else c.attack.eps,
           "attack_hparams": "" if c.attack is None else json.dumps(
               dict(c.attack.hparams), sort_keys=True),
           "accuracy": round(100 * r.mean, 2),
           "ci95": round(100 * r.ci95, 2),
           "loss": round(float(r.loss.mean()), 4),
           "episodes": r.num_episodes, **comparisons.worst_task_row(c)}
    if c.train_seed is not None:
      row["seed"] = c.train_seed
    paper = experiment.paper_result(c.run, c.attack, c.case) if experiment \
        else None
    if experiment is not None and experiment.paper:
      row["paper_accuracy"] = None if paper is None else paper.accuracy
      row["paper_ci95"] = None if paper is None else paper.ci95
      row["difference"] = (None if paper is None
                           else round(row["accuracy"] - paper.accuracy, 2))
    rows.append(row)
  return rows


def markdown_report(cells: Sequence[Cell],
                    experiment: Optional[Any] = None
                    ) -> str:
  """A Markdown table, one line per cell; paper vs ours when known."""
  rows = cell_rows(cells, experiment)
  with_paper = bool(rows) and "paper_accuracy" in rows[0]
  with_seed = any("seed" in row for row in rows)
  header = ["learner"] + (["seed"] if with_seed else []) + [
      "support/query", "attack", "accuracy % (± 95% CI)"]
  if with_paper:
    header += ["paper % (± 95% CI)", "ours − paper"]
  lines = []
  for row, cell in zip(rows, cells):
    # The label names a preset by its tag (cw_l2_strong), as the pivot does.
    attack = "—" if cell.attack is None else cell.attack.label
    line = [row["learner"]] + ([row.get("seed", "—")] if with_seed else []) + [
        row["case"], attack, f"{row['accuracy']:.2f} ± {row['ci95']:.2f}"]
    if with_paper:
      if row["paper_accuracy"] is None:
        line += ["—", "—"]
      else:
        ci = row["paper_ci95"]
        line += [f"{row['paper_accuracy']:.2f}" + (
            f" ± {ci:.2f}" if ci is not None else ""),
                 f"{row['difference']:+.2f}"]
    lines.append(line)
  return markdown_table(header, lines)


def stage_table(cells: Sequence[Cell]) -> str:
  """AutoAttack's robust accuracy after each stage, one line per cell run
  under it (empty when none was): the ensemble's bookkeeping per stage and
  the returned batch re-evaluated (the cell's accuracy)."""
  staged = [c for c in cells if c.result.stages]
  if not staged:
    return ""
  names = list(dict.fromkeys(n for c in staged for n in c.result.stages))
  header = (["learner", "support/query", "attack"]
            + [f"after {n} %" if n != "clean" else "clean %" for n in names]
            + ["re-evaluated %"])
  rows = []
  for c in staged:
    r = c.result
    rows.append([_label(c), c.case.name, c.attack.label] + [
        format_accuracy(r.stages[n].mean(),
                        confidence_interval_95(r.stages[n]))
        if n in r.stages else "—" for n in names] + [
            format_accuracy(r.mean, r.ci95)])
  return markdown_table(header, rows)


def pivot_table(cells: Sequence[Cell]) -> str:
  """Learners as rows, (case, attack) as columns: the README layout."""
  columns: List[Tuple[str, str]] = []
  for c in cells:
    key = (c.case.name, c.attack_label)
    if key not in columns:
      columns.append(key)
  learners_ = list(dict.fromkeys(c.run for c in cells))
  value = {(c.run, c.case.name, c.attack_label):
           format_accuracy(c.result.mean, c.result.ci95) for c in cells}
  header = ["learner"] + [f"{case} ({attack})" if attack != "none" else case
                          for case, attack in columns]
  rows = [[name] + [value.get((name, case, attack), "—")
                    for case, attack in columns] for name in learners_]
  return markdown_table(header, rows)


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> str:
  fieldnames = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
  return path


def l_ar_samples(cells: Sequence[Cell], attack: AttackSpec,
                 delta: float = TAFL_DELTA) -> Dict[str, np.ndarray]:
  """TAFL's L_AR(τ) per episode for each learner, from its clean/adv cell."""
  return {c.run: c.result.robustness_losses(delta) for c in cells
          if c.case == TestCase("clean", "adv") and c.attack == attack}


def curve_data(cells: Sequence[Cell], attack: Optional[AttackSpec]
               ) -> Dict[str, Dict[str, Dict[str, List[float]]]]:
  """`{case: {learner: {"loss", "accuracy"}}}` mean per-step curves of the
  cells under `attack` (clean/clean included)."""
  out: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
  for c in cells:
    if c.attack not in (None, attack) or c.result.step_loss.shape[1] < 2:
      continue
    out.setdefault(c.case.name, {})[c.run] = {
        "loss": c.result.step_loss.mean(0).tolist(),
        "accuracy": c.result.step_accuracy.mean(0).tolist()}
  return out


def _label(cell: Cell) -> str:
  """The row's name, with its training seed when the report has several."""
  return cell.run if cell.train_seed is None else (
      f"{cell.run} (seed {cell.train_seed})")


def _slug(text: str) -> str:
  return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def write_reports(cells: Sequence[Cell], outdir: str, *,
                  experiment: Optional[Any] = None,
                  curves: bool = False, kde: bool = False,
                  kde_threshold: float = 1.0,
                  masking: Optional[Mapping[Tuple[str, str],
                                            attacks.StrengthReport]] = None,
                  header: str = "",
                  pairs: Optional[Sequence[Tuple[str, str]]] = None
                  ) -> Report:
  """Writes report.md, results.csv, results.json, paired.csv and the figures
  to `outdir`.

  Args:
    cells: the protocol's cells (`protocol.evaluate_runs`), of one training
      seed per row or of several (`Cell.train_seed`).
    outdir: the report directory (created).
    experiment: puts the paper's cells beside ours, when it has them.
    curves: draw the per-step curves (one figure per attack) and add them to
      results.json.
    kde: draw the KDE of L_AR over tasks for the strongest PGD (else the
      last ε attack) and add its summary table, and the ECDF of the
      per-task robust accuracy under the same attack.
    kde_threshold: the L_AR threshold of the share of tasks above it.
    masking: the gradient-masking checks (`protocol.masking_checks`).
    header: Markdown put before the tables.
    pairs: the paired comparisons `(a, b)`, a − b, by row name (None: every
      row against the first; `protocol.default_pairs` gives the default of
      the drivers); `()` for none.

  Returns:
    The `Report`: the text of report.md and every file written.
  """
  os.makedirs(outdir, exist_ok=True)
  rows = cell_rows(cells, experiment)
  attack_specs = list(dict.fromkeys(c.attack for c in cells
                                    if c.attack is not None))
  seeds = list(dict.fromkeys(c.train_seed for c in cells))
  # The figures and L_AR show the first training seed.
  first = [c for c in cells if c.train_seed == seeds[0]] if cells else []
  parts = [header, ""] if header else []
  parts += _results_section(cells, len(seeds) > 1)
  parts += ["", "## All cells", "", markdown_report(cells, experiment)]
  payload: Dict[str, Any] = {"cells": rows, "per_episode": episode_rows(cells)}
  written: Dict[str, str] = {}
  if pairs is None:
    names = list(dict.fromkeys(c.run for c in cells))
    pairs = [(n, names[0]) for n in names[1:]]
  parts += _paired_section(cells, pairs, outdir, payload, written)
  parts += _worst_task_section(cells, first, attack_specs, outdir, kde,
                               payload, written)
  if curves:
    payload["curves"] = _curve_figures(first, attack_specs, outdir, written)
  if kde:
    parts += _kde_section(first, attack_specs, outdir, kde_threshold,
                          payload, written)
  parts += _stages_section(cells, payload)
  if masking:
    parts += _masking_section(masking, payload)
  markdown = "\n".join(parts)
  written["report"] = os.path.join(outdir, "report.md")
  write_text(outdir, "report.md", markdown)
  written["csv"] = write_csv(os.path.join(outdir, "results.csv"), rows)
  written["json"] = os.path.join(outdir, "results.json")
  write_json(written["json"], payload)
  return Report(markdown, written)


def episode_rows(cells: Sequence[Cell]) -> List[Dict[str, Any]]:
  """Every cell's per-episode query accuracy (a fraction, episode i of every
  cell the same task): the raw material of the paired comparisons and the
  worst-task statistics."""
  out = []
  for c in cells:
    row = {"learner": c.run, "case": c.case.name, "attack": c.attack_label,
           "accuracy": [round(float(a), 6) for a in c.result.accuracy]}
    if c.train_seed is not None:
      row["seed"] = c.train_seed
    out.append(row)
  return out


def _results_section(cells: Sequence[Cell], several_seeds: bool) -> List[str]:
  """The pivot table (one training seed), or each seed's accuracy ± CI
  beside the mean ± s.d. over seeds."""
  if not several_seeds:
    return ["## Results", "", pivot_table(cells)]
  return ["## Results over training seeds", "",
          "Each seed's accuracy % ± 95% CI over episodes, and the mean ± "
          "standard deviation of the per-seed accuracies over seeds.", "",
          seed_table(cells)]


def seed_table(cells: Sequence[Cell]) -> str:
  """One line per row × case/attack: accuracy ± CI of each training seed,
  then mean ± s.d. over seeds."""
  summary = comparisons.seed_summary(cells)
  seeds = list(dict.fromkeys(s for r in summary for s in r["seeds"]))
  lines = []
  for r in summary:
    by_seed = dict(zip(r["seeds"], zip(r["accuracy"], r["ci95"])))
    lines.append([r["learner"], case_label(r["case"], r["attack"])] + [
        f"{by_seed[s][0]:.2f} ± {by_seed[s][1]:.2f}" if s in by_seed else "—"
        for s in seeds] + [
            f"{r['mean']:.2f} ± {r['sd']:.2f}" if r["sd"] is not None
            else f"{r['mean']:.2f}"])
  return markdown_table(["learner", "case"] + [f"seed {s}" for s in seeds]
                        + ["mean ± s.d. over seeds"], lines)


def _paired_section(cells: Sequence[Cell], pairs, outdir: str,
                    payload: Dict[str, Any],
                    written: Dict[str, str]) -> List[str]:
  """The paired comparisons on shared episodes, their sample sizes and, with
  several training seeds, the comparison over seeds (paired.csv,
  paired_seeds.csv)."""
  rows = comparisons.paired_rows(cells, pairs)
  if not rows:
    return []
  payload["paired"] = rows
  written["paired csv"] = write_csv(os.path.join(outdir, "paired.csv"), rows)
  over = comparisons.seed_rows(rows)
  parts = ["", "## Paired comparisons", "", comparisons.PAIRED_NOTE, "",
           comparisons.paired_table(rows), "",
           "How many episodes each difference needs (two-sided paired "
           "t-test at 5%, 80% power, from the per-episode s.d. of the "
           "difference):", "", comparisons.power_table(rows)]
  if over:
    payload["paired_over_seeds"] = over
    written["paired seeds csv"] = write_csv(
        os.path.join(outdir, "paired_seeds.csv"), over)
    parts += ["", "### Over training seeds", "", comparisons.SEEDS_NOTE, "",
              comparisons.seed_paired_table(over), "",
              "How many seeds each difference needs (the same test over "
              "per-seed differences, from their s.d. over seeds):", "",
              comparisons.power_table(over, "seeds")]
  parts += [""] + [comparisons.resolution_sentence(r, bool(over)) for r in over or rows]
  return parts


def _worst_task_section(cells: Sequence[Cell], first: Sequence[Cell],
                        attack_specs, outdir: str, figure: bool,
                        payload: Dict[str, Any],
                        written: Dict[str, str]) -> List[str]:
  """CVaR at 10% and the share of tasks below chance of every cell with an
  attacked query; with `figure`, the ECDF of per-task accuracy under the
  attack of the KDE, first training seed."""
  attacked = [c for c in cells if c.case.query == "adv"]
  if not attacked:
    return []
  worst = [{"learner": c.run, "case": c.case.name, "attack": c.attack_label,
            **({"seed": c.train_seed} if c.train_seed is not None else {}),
            "accuracy": round(100 * c.result.mean, 2),
            **comparisons.worst_task_row(c)} for c in attacked]
  payload["worst_tasks"] = worst
  with_seed = any("seed" in w for w in worst)
  parts = ["", "## Worst tasks", "",
           "Per-task robust accuracy: the mean, CVaR at 10% (the mean of "
           "the worst tenth of tasks) and the share of tasks below chance "
           "(1/N).", "", markdown_table(
               ["learner"] + (["seed"] if with_seed else []) + [
                   "case", "accuracy %", "CVaR 10% %", "below chance %"],
               [[w["learner"]] + ([w.get("seed")] if with_seed else []) + [
                   case_label(w["case"], w["attack"]), f"{w['accuracy']:.2f}",
                   f"{w['cvar10']:.2f}", "—" if w["below_chance"] is None
                   else f"{w['below_chance']:.1f}"] for w in worst])]
  spec = _kde_attack(attack_specs)
  chosen = [c for c in first if c.case == TestCase("clean", "adv")
            and c.attack == spec]
  if figure and chosen:
    path = os.path.join(outdir, f"ecdf_accuracy_{_slug(spec.label)}.png")
    written["ecdf"] = plots.plot_ecdf(
        {c.run: c.result.accuracy for c in chosen}, path,
        chance=1 / chosen[0].n_way if chosen[0].n_way else None,
        title=f"per-task robust accuracy, {spec.label}")
  return parts


def _kde_attack(attack_specs) -> Optional[AttackSpec]:
  """The attack of the per-task figures: the strongest PGD of the report
  (L∞ before L2), else the last attack with a budget (None: no ε attack)."""
  def strength(s):
    norm, eps = attacks.parse_budget(s.eps)
    return s.name == "pgd", norm == "Linf", eps
  eps_specs = sorted((s for s in attack_specs if s.eps is not None),
                     key=strength)
  return eps_specs[-1] if eps_specs else None


def _curve_figures(cells: Sequence[Cell], attack_specs, outdir: str,
                   written: Dict[str, str]) -> Dict[str, Any]:
  """One figure of per-step curves per attack; returns their data."""
  out = {}
  for spec in attack_specs or [None]:
    data = curve_data(cells, spec)
    label = "clean" if spec is None else spec.label
    out[label] = data
    path = os.path.join(outdir, f"curves_{_slug(label)}.png")
    written[f"curves {label}"] = plots.plot_curves(
        data, path, title=f"per-step meta-test curves ({label})")
  return out


def _kde_section(cells: Sequence[Cell], attack_specs, outdir: str,
                 threshold: float, payload: Dict[str, Any],
                 written: Dict[str, str]) -> List[str]:
  """TAFL's figure, the KDE of L_AR over tasks, under the strongest PGD of
  the report (else the last attack with a budget), and its summary table."""
  spec = _kde_attack(attack_specs)
  if spec is None:
    return []
  samples = l_ar_samples(cells, spec)
  if not samples:
    return []
  path = os.path.join(outdir, f"kde_l_ar_{_slug(spec.label)}.png")
  written["kde"] = plots.plot_kde(samples, path, threshold=threshold,
                                  title=f"L_AR(τ) over tasks, {spec.label}")
  shares = {k: plots.share_above(v, threshold) for k, v in samples.items()}
  payload["l_ar"] = {"attack": spec.label, "threshold": threshold,
                     "share_above": shares,
                     "mean": {k: float(v.mean()) for k, v in samples.items()}}
  return ["", f"## L_AR(τ) over tasks ({spec.label})", "",
          markdown_table(
              ("learner", "mean L_AR", f"share of tasks > {threshold:g}"),
              [(k, f"{samples[k].mean():.3f}", f"{100 * s:.1f}%")
               for k, s in shares.items()])]


def _stages_section(cells: Sequence[Cell],
                    payload: Dict[str, Any]) -> List[str]:
  """AutoAttack's robust accuracy after each stage, where a cell has it."""
  stages = stage_table(cells)
  if not stages:
    return []
  payload["autoattack_stages"] = [
      {"learner": c.run, "case": c.case.name, "attack": c.attack.label,
       # A list: the stages in the order they ran (the JSON sorts keys).
       "stages": [{"stage": n, "accuracy": round(100 * a["accuracy"], 2),
                   "ci95": round(100 * a["accuracy_ci95"], 2)}
                  for n, a in c.result.stage_summary().items()]}
      for c in cells if c.result.stages]
  return ["", "## AutoAttack, robust accuracy after each stage", "",
          "Each stage attacks the examples still classified correctly; "
          "the last column re-evaluates the returned batch (it can sit "
          "above the last stage when transductive BatchNorm couples the "
          "examples of a batch).", "", stages]


def _masking_section(masking, payload: Dict[str, Any]) -> List[str]:
  """The gradient-masking checks: one line when all pass, else a warning
  per failed check."""
  failed = {k: v for k, v in masking.items() if not v.ok}
  payload["masking_checks"] = {f"{k[0]} | {k[1]}": {
      "ok": v.ok, "findings": list(v.findings)} for k, v in masking.items()}
  parts = ["", "## Gradient-masking checks", ""]
  if not failed:
    parts.append(f"All {len(masking)} checks passed (PGD-5 ≥ PGD-20 ≥ "
                 "APGD, Square (gradient-free) ≥ PGD-20, iterative ≤ FGSM "
                 "≤ noise ≤ clean, accuracy falls with ε and reaches ~0 "
                 "at ε = 0.5).")
  for (run, label), report in failed.items():
    parts.append(f"- WARNING {run} under {label}: " + " ".join(report.findings))
  return parts


# --- TAFL's γ × k sweep ---------------------------------------------------------

def write_sweep(outdir: str, *, gammas: Sequence[float], ks: Sequence[float],
                robust, robust_ci95, clean, attack: str, num_episodes: int,
                selection_split: str = "test",
                chosen: Sequence[float] = (0.0, 0.0),
                chosen_test: Sequence[float] = (0.0, 0.0, 0.0)) -> Report:
  """The sweep's heatmap (sensitivity_heatmap.png), sweep.json and sweep.md
  (robust accuracy ± 95% CI, γ rows × k columns, and the chosen point) in
  `outdir`.

  Args:
    outdir: the sweep's directory.
    gammas, ks: the grid.
    robust, robust_ci95, clean: `[γ, k]` accuracies in percent, on the
      `selection_split` classes.
    attack: the attack's label.
    num_episodes: episodes per grid point.
    selection_split: "val" or "test": the classes the grid was scored on.
    chosen: the chosen (γ, k).
    chosen_test: its (robust, robust_ci95, clean) on the test classes.
  """
  robust, robust_ci95 = np.asarray(robust), np.asarray(robust_ci95)
  heatmap = plots.plot_heatmap(
      robust, gammas, ks, os.path.join(outdir, "sensitivity_heatmap.png"),
      title=f"TAFL robust accuracy ({attack}, {selection_split} classes)")
  grid = markdown_table(
      ["γ \\ k"] + [f"{k:g}" for k in ks],
      [[f"{g:g}"] + [f"{robust[i, j]:.2f} ± {robust_ci95[i, j]:.2f}"
                     for j in range(len(ks))] for i, g in enumerate(gammas)])
  held_out = ("chosen on the validation classes" if selection_split == "val"
              else "this dataset has no validation classes: the grid is "
              "scored on the test classes, so the choice is not held out")
  table = (f"Robust accuracy (% ± 95% CI, {attack}) on the {selection_split} "
           f"classes:\n\n{grid}\n\nChosen: γ={chosen[0]:g}, k={chosen[1]:g} "
           f"({held_out}); on the test classes: robust "
           f"{chosen_test[0]:.2f} ± {chosen_test[1]:.2f}, clean "
           f"{chosen_test[2]:.2f}.")
  payload = {"gammas": list(map(float, gammas)), "ks": list(map(float, ks)),
             "attack": attack, "episodes": num_episodes,
             "selection_split": selection_split,
             "robust": robust.tolist(), "robust_ci95": robust_ci95.tolist(),
             "clean": np.asarray(clean).tolist(),
             "chosen": {"gamma": float(chosen[0]), "k": float(chosen[1]),
                        "test_robust": float(chosen_test[0]),
                        "test_robust_ci95": float(chosen_test[1]),
                        "test_clean": float(chosen_test[2])}}
  write_json(os.path.join(outdir, "sweep.json"), payload)
  write_text(outdir, "sweep.md", table)
  return Report(table, {"heatmap": heatmap,
                        "json": os.path.join(outdir, "sweep.json"),
                        "report": os.path.join(outdir, "sweep.md")})
