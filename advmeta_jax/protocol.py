"""The meta-test protocol over trained runs, and the reports it writes.

    runs (config + params) ──evaluate_runs──▶ cells (learner × case × attack)
         ──write_reports──▶ report.md, results.csv, results.json,
                            curves_*.png, kde_*.png

`evaluate_runs` gives every run the same episodes and the same attack keys (one
seed), so the rows of a table are comparable. `reproduce` trains the rows of
an `experiments.ExperimentConfig` (resuming any finished or interrupted run in
its workdir), evaluates them and prints the paper's numbers beside ours.
`sensitivity_sweep` is TAFL's γ × k study.

These are drivers: they run jitted functions and return NumPy results, and are
not meant to be traced.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np

from advmeta_jax import attacks
from advmeta_jax import builders
from advmeta_jax import episodes
from advmeta_jax import evaluation
from advmeta_jax import experiments
from advmeta_jax import learners
from advmeta_jax import plots
from advmeta_jax import reports
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.evaluation import TestCase

TAFL_DELTA = 1e-3   # the δ floor of L_AR in the analysis (TAFL's default)


@dataclasses.dataclass
class Run:
  """A trained learner: its name in the tables, its config and parameters."""
  name: str
  config: Config
  params: Any
  step: Optional[int] = None   # the checkpoint's step, when loaded from one


def load_run(workdir: str, *, name: Optional[str] = None,
             step: Optional[int] = None, data_dir: Optional[str] = None
             ) -> Run:
  """The run in a training workdir (latest checkpoint unless `step`)."""
  config = training.load_config(workdir)
  if data_dir:
    config = config.replace(data_dir=data_dir)
  state = training.restore_run(workdir, config, step)
  return Run(name or config.learner_label, config, state.params,
             int(state.step))


@dataclasses.dataclass
class Cell:
  """One learner under one test case and attack (None for clean/clean)."""
  run: str
  learner: str
  case: TestCase
  attack: Optional[AttackSpec]
  result: evaluation.MetaTestResult

  @property
  def attack_label(self) -> str:
    return "none" if self.attack is None else self.attack.label


def _episode_shape(config: Config) -> Tuple:
  return (config.dataset, config.data_dir, config.image_size, config.n_way,
          config.k_shot, config.q_query)


def evaluate_runs(runs: Sequence[Run], *, cases: Sequence[TestCase],
                  attack_specs: Sequence[AttackSpec], split: str = "test",
                  num_episodes: int = 600, inner_steps: int = 10,
                  seed: int = 0, curves: bool = False,
                  adversarial_curves: bool = False,
                  batch_size: Optional[int] = None,
                  data=None, log: Callable[[str], None] = logging.info
                  ) -> List[Cell]:
  """Every run × case × attack on the same episodes.

  The clean/clean case does not depend on the attack and is run once per
  learner. Runs must share the dataset and episode shape (else their rows
  would not be comparable).

  Args:
    runs: the trained learners.
    cases: the test cases.
    attack_specs: the attacks (each with its ε); may be empty when every case
      is clean/clean.
    split: the class split to test on.
    num_episodes, inner_steps, seed, curves: as `evaluation.run_case`.
    adversarial_curves: with `curves`, also record the curves of the cases
      with an attacked query. Each point re-attacks the query against that
      step's classifier, which multiplies the attack cost by inner_steps + 1
      (cheap for FGSM, heavy for PGD-20); off, those cells have no curve.
    batch_size: tasks per compiled batch (default: the first run's
      `eval_batch_size`).
    data: the loaded split (default: loaded from the first run's config).
    log: progress messages.

  Returns:
    The cells, learner-major.
  """
  if not runs:
    raise ConfigError("no runs to evaluate.")
  shapes = {_episode_shape(r.config) for r in runs}
  if len(shapes) > 1:
    raise ConfigError(
        "runs with different datasets or episode shapes cannot share a table: "
        + "; ".join(f"{r.name}: dataset={r.config.dataset} "
                    f"n_way={r.config.n_way} k_shot={r.config.k_shot} "
                    f"q_query={r.config.q_query}" for r in runs))
  first = runs[0].config
  for case in cases:
    if case.support == "mixed" and evaluation.mixed_adv_count(
        first.k_shot) is None:
      evaluation.mixed_support_mask(np.zeros(first.n_way * first.k_shot,
                                             np.int32), first.n_way,
                                    first.k_shot)   # raises the clear error
  if any(c.needs_attack for c in cases) and not attack_specs:
    raise ConfigError("adversarial test cases need at least one attack.")
  if data is None:
    data = builders.load_split(first, split)
  source = episodes.make_source(data)
  batch_size = batch_size or first.eval_batch_size
  built = {spec: spec.build() for spec in attack_specs}
  cells: List[Cell] = []
  for run in runs:
    adaptation = evaluation.adaptation_for(run.config)
    for case in cases:
      for spec in (attack_specs if case.needs_attack else (None,)):
        t0 = time.perf_counter()
        result = evaluation.run_case(
            adaptation, run.params, source, case=case,
            attack=None if spec is None else built[spec],
            n_way=first.n_way, k_shot=first.k_shot, q_query=first.q_query,
            inner_steps=inner_steps, num_episodes=num_episodes,
            batch_size=batch_size, seed=seed,
            curves=curves and (case.query == "clean" or adversarial_curves))
        cell = Cell(run.name, run.config.learner, case, spec, result)
        log(f"{run.name:>12} {case.name:>12} {cell.attack_label:>16}: "
            f"{reports.format_accuracy(result.mean, result.ci95)} "
            f"({time.perf_counter() - t0:.1f} s)")
        cells.append(cell)
  return cells


# --- gradient-masking checks ------------------------------------------------

def masking_checks(runs: Sequence[Run], attack_specs: Sequence[AttackSpec], *,
                   data, seed: int = 0, inner_steps: int = 10
                   ) -> Dict[Tuple[str, str], attacks.StrengthReport]:
  """`attacks.check_attack_strength` on each run's adapted classifier.

  For every run and every attack with an ε: adapt to the clean support of the
  protocol's episode 0 and check the query attack against that classifier
  (PGD 5 vs 20 steps, FGSM, APGD, noise, an ε sweep). A failed check is logged
  as a warning and returned; it is a finding to report next to the robust
  accuracy, not an error.
  """
  first = runs[0].config
  source = episodes.make_source(data)
  task_key, attack_key = jax.random.split(evaluation.episode_keys(seed, 0, 1)[0])
  task = episodes.sample_task(task_key, source, n_way=first.n_way,
                              k_shot=first.k_shot, q_query=first.q_query)
  out = {}
  for run in runs:
    adaptation = evaluation.adaptation_for(run.config)
    state, _ = jax.jit(lambda p, xs, ys: adaptation.adapt(
        p, xs, ys, num_steps=inner_steps))(run.params, task.support_images,
                                          task.support_labels)
    logits_fn = lambda x, s=state, a=adaptation: a.logits(s, x)
    for spec in attack_specs:
      if spec.eps is None:
        continue
      report = attacks.check_attack_strength(
          logits_fn, task.query_images, task.query_labels, eps=spec.eps,
          key=attack_key)
      if not report.ok:
        logging.warning("gradient-masking check failed for %s under %s:\n%s",
                        run.name, spec.label, report)
      out[(run.name, spec.label)] = report
  return out


# --- reports ----------------------------------------------------------------

def _pct(x: Optional[float]) -> str:
  return "" if x is None else f"{x:.2f}"


def cell_rows(cells: Sequence[Cell],
              experiment: Optional[experiments.ExperimentConfig] = None
              ) -> List[Dict[str, Any]]:
  """One flat dict per cell (accuracies in percent), with the paper's cell
  when `experiment` has it."""
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
           "episodes": r.num_episodes}
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
                    experiment: Optional[experiments.ExperimentConfig] = None
                    ) -> str:
  """A Markdown table, one line per cell; paper vs ours when known."""
  rows = cell_rows(cells, experiment)
  with_paper = bool(rows) and "paper_accuracy" in rows[0]
  header = ["learner", "support/query", "attack", "accuracy % (± 95% CI)"]
  if with_paper:
    header += ["paper % (± 95% CI)", "ours − paper"]
  lines = []
  for row in rows:
    attack = "—" if row["attack"] == "none" else (
        f"{row['attack']} ε={row['eps']}" if row["eps"] else row["attack"])
    line = [row["learner"], row["case"], attack,
            f"{row['accuracy']:.2f} ± {row['ci95']:.2f}"]
    if with_paper:
      if row["paper_accuracy"] is None:
        line += ["—", "—"]
      else:
        ci = row["paper_ci95"]
        line += [f"{row['paper_accuracy']:.2f}" + (
            f" ± {ci:.2f}" if ci is not None else ""),
                 f"{row['difference']:+.2f}"]
    lines.append(line)
  return reports.markdown_table(header, lines)


def pivot_table(cells: Sequence[Cell]) -> str:
  """Learners as rows, (case, attack) as columns: the README layout."""
  columns: List[Tuple[str, str]] = []
  for c in cells:
    key = (c.case.name, c.attack_label)
    if key not in columns:
      columns.append(key)
  learners_ = list(dict.fromkeys(c.run for c in cells))
  value = {(c.run, c.case.name, c.attack_label):
           reports.format_accuracy(c.result.mean, c.result.ci95) for c in cells}
  header = ["learner"] + [f"{case} ({attack})" if attack != "none" else case
                          for case, attack in columns]
  rows = [[name] + [value.get((name, case, attack), "—")
                    for case, attack in columns] for name in learners_]
  return reports.markdown_table(header, rows)


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


def _slug(text: str) -> str:
  return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def write_reports(cells: Sequence[Cell], outdir: str, *,
                  experiment: Optional[experiments.ExperimentConfig] = None,
                  curves: bool = False, kde: bool = False,
                  kde_threshold: float = 1.0,
                  masking: Optional[Mapping[Tuple[str, str],
                                            attacks.StrengthReport]] = None,
                  header: str = "") -> Dict[str, str]:
  """Writes report.md, results.csv, results.json and the figures to `outdir`.

  Returns:
    `{what: path}` of every file written, and `"markdown"`: the report text.
  """
  os.makedirs(outdir, exist_ok=True)
  rows = cell_rows(cells, experiment)
  attack_specs = list(dict.fromkeys(c.attack for c in cells
                                    if c.attack is not None))
  parts = [header, ""] if header else []
  parts += ["## Results", "", pivot_table(cells), "",
            "## All cells", "", markdown_report(cells, experiment)]
  payload: Dict[str, Any] = {"cells": rows}
  written: Dict[str, str] = {}
  if curves:
    payload["curves"] = {}
    for spec in attack_specs or [None]:
      data = curve_data(cells, spec)
      label = "clean" if spec is None else spec.label
      payload["curves"][label] = data
      path = os.path.join(outdir, f"curves_{_slug(label)}.png")
      written[f"curves {label}"] = plots.plot_curves(
          data, path, title=f"per-step meta-test curves ({label})")
  if kde:
    # TAFL's figure is under PGD: the strongest PGD of the report (else the
    # last attack with a budget).
    eps_specs = sorted((s for s in attack_specs if s.eps is not None),
                       key=lambda s: (s.name == "pgd",
                                      attacks.parse_eps(s.eps)))
    if eps_specs:
      spec = eps_specs[-1]
      samples = l_ar_samples(cells, spec)
      if samples:
        path = os.path.join(outdir, f"kde_l_ar_{_slug(spec.label)}.png")
        written["kde"] = plots.plot_kde(
            samples, path, threshold=kde_threshold,
            title=f"L_AR(τ) over tasks, {spec.label}")
        shares = {k: plots.share_above(v, kde_threshold)
                  for k, v in samples.items()}
        payload["l_ar"] = {"attack": spec.label, "threshold": kde_threshold,
                           "share_above": shares,
                           "mean": {k: float(v.mean())
                                    for k, v in samples.items()}}
        parts += ["", f"## L_AR(τ) over tasks ({spec.label})", "",
                  reports.markdown_table(
                      ("learner", "mean L_AR", f"share of tasks > "
                       f"{kde_threshold:g}"),
                      [(k, f"{samples[k].mean():.3f}",
                        f"{100 * s:.1f}%") for k, s in shares.items()])]
  if masking:
    failed = {k: v for k, v in masking.items() if not v.ok}
    payload["masking_checks"] = {f"{k[0]} | {k[1]}": {
        "ok": v.ok, "findings": list(v.findings)} for k, v in masking.items()}
    parts += ["", "## Gradient-masking checks", ""]
    if not failed:
      parts.append(f"All {len(masking)} checks passed (PGD-5 ≥ PGD-20 ≥ "
                   "APGD, iterative ≤ FGSM ≤ noise ≤ clean, accuracy falls "
                   "with ε and reaches ~0 at ε = 0.5).")
    for (run, label), report in failed.items():
      parts.append(f"- WARNING {run} under {label}: "
                   + " ".join(report.findings))
  markdown = "\n".join(parts)
  written["report"] = os.path.join(outdir, "report.md")
  reports.write_text(outdir, "report.md", markdown)
  written["csv"] = write_csv(os.path.join(outdir, "results.csv"), rows)
  written["json"] = os.path.join(outdir, "results.json")
  reports.write_json(written["json"], payload)
  written["markdown"] = markdown
  return written


# --- experiments ------------------------------------------------------------

def _available_rows(experiment: experiments.ExperimentConfig,
                    rows: Optional[Sequence[str]]) -> List[str]:
  if rows:
    unknown = [r for r in rows if r not in experiment.row_names]
    if unknown:
      raise ConfigError(f"experiment {experiment.name!r} has no rows "
                        f"{unknown}; rows: {', '.join(experiment.row_names)}.")
    chosen = list(rows)
  else:
    chosen = list(experiment.row_names)
  registered = set(learners.names())
  kept = []
  for row in chosen:
    learner = dict(experiment.rows)[row].get("learner", row)
    if learner in registered:
      kept.append(row)
    else:
      logging.warning("row %r skipped: learner %r is not available in this "
                      "version (registered: %s).", row, learner,
                      ", ".join(sorted(registered)))
  if not kept:
    raise ConfigError(f"no row of experiment {experiment.name!r} can run.")
  return kept


def reproduce(experiment: experiments.ExperimentConfig, workdir: str, *,
              shrink: bool = False, rows: Optional[Sequence[str]] = None,
              data_dir: Optional[str] = None, episodes_: Optional[int] = None,
              seed: int = 0, progress: bool = True,
              kde_threshold: float = 1.0,
              log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Trains every row of `experiment` in `workdir/<row>`, then evaluates them.

  A row whose run is complete is not retrained; an interrupted one resumes
  from its last checkpoint. The report goes to `workdir/report/`.

  Returns:
    `{"cells", "written" (paths), "markdown", "seconds"}`.
  """
  t0 = time.perf_counter()
  chosen = _available_rows(experiment, rows)
  configs = {row: Config.make(**experiment.train_fields(
      row, shrink=shrink, data_dir=data_dir)).validate() for row in chosen}
  first = configs[chosen[0]]
  cases = experiment.test_cases()
  if evaluation.mixed_adv_count(first.k_shot) is None:
    cases = evaluation.cases_for_shots(cases, first.k_shot)
  attack_specs = experiment.test_attacks(shrink=shrink)
  protocol = experiment.protocol(shrink=shrink)
  num_episodes = episodes_ or protocol["episodes"]
  # Check the data before any training.
  train_data = builders.load_split(first, "train")
  test_data = builders.load_split(first, "test")
  runs = []
  for row in chosen:
    config = configs[row]
    rundir = os.path.join(workdir, row)
    log(f"== {row}: meta-training {config.learner} for {config.num_steps} "
        f"steps in {rundir}")
    state = training.train(config, rundir, train_split=train_data,
                           progress=progress)
    runs.append(Run(row, config, state.params))
  log(f"== meta-testing {len(runs)} learners on {num_episodes} episodes "
      f"({', '.join(c.name for c in cases)}; "
      f"{', '.join(s.label for s in attack_specs) or 'no attack'})")
  cells = evaluate_runs(runs, cases=cases, attack_specs=attack_specs,
                        num_episodes=num_episodes,
                        inner_steps=protocol["inner_steps"], seed=seed,
                        curves=experiment.curves,
                        adversarial_curves=experiment.adversarial_curves,
                        data=test_data, log=log)
  masking = None
  if experiment.masking_check:
    # Shrunk: one run and one attack, a smoke test of the check itself (the
    # toy models are untrained and fail it, as they should).
    masking = masking_checks(
        runs[:1] if shrink else runs,
        [s for s in attack_specs if s.eps is not None][:1 if shrink else None],
        data=test_data, seed=seed, inner_steps=protocol["inner_steps"])
  seconds = time.perf_counter() - t0
  header = (f"# {experiment.name}{' (shrunk)' if shrink else ''}\n\n"
            f"{experiment.description}\n\n"
            f"{num_episodes} episodes per cell, {protocol['inner_steps']} "
            f"test-time inner steps, seed {seed}; accuracy in % ± 95% CI "
            f"(1.96·s/√n). Wall time {seconds / 60:.1f} min (training "
            "included).")
  written = write_reports(cells, os.path.join(workdir, "report"),
                          experiment=experiment, curves=experiment.curves,
                          kde=experiment.kde, kde_threshold=kde_threshold,
                          masking=masking, header=header)
  return {"cells": cells, "written": written, "markdown": written["markdown"],
          "seconds": seconds}


def sensitivity_sweep(base: Config, workdir: str, *,
                      gammas: Sequence[float], ks: Sequence[float],
                      attack: AttackSpec, num_episodes: int = 600,
                      inner_steps: int = 10, seed: int = 0,
                      progress: bool = True,
                      log: Callable[[str], None] = print) -> Dict[str, Any]:
  """TAFL's γ × k study: trains TAFL at every grid point (resumable, one
  workdir each) and meta-tests clean and attacked query accuracy.

  Returns:
    `{"gammas", "ks", "robust" [γ, k] %, "clean" [γ, k] %, "robust_ci95",
    "heatmap" (path), "markdown"}`; writes sweep.json and the heatmap PNG to
    `workdir`.
  """
  if base.learner != "tafl":
    raise ConfigError(f"the sensitivity sweep trains TAFL; got --learner="
                      f"{base.learner}.")
  if not gammas or not ks:
    raise ConfigError("the sweep needs at least one γ and one k.")
  train_data = builders.load_split(base, "train")
  test_data = builders.load_split(base, "test")
  robust = np.zeros((len(gammas), len(ks)))
  robust_ci = np.zeros_like(robust)
  clean = np.zeros_like(robust)
  for i, gamma in enumerate(gammas):
    for j, k in enumerate(ks):
      config = base.replace(tafl_gamma=float(gamma),
                            tafl_k=float(k)).validate()
      rundir = os.path.join(workdir, f"gamma{gamma:g}_k{k:g}")
      log(f"== TAFL γ={gamma:g} k={k:g} in {rundir}")
      state = training.train(config, rundir, train_split=train_data,
                             progress=progress)
      cells = evaluate_runs(
          [Run(f"γ={gamma:g},k={k:g}", config, state.params)],
          cases=(TestCase("clean", "clean"), TestCase("clean", "adv")),
          attack_specs=(attack,), num_episodes=num_episodes,
          inner_steps=inner_steps, seed=seed, data=test_data, log=log)
      clean[i, j] = 100 * cells[0].result.mean
      robust[i, j] = 100 * cells[1].result.mean
      robust_ci[i, j] = 100 * cells[1].result.ci95
  heatmap = plots.plot_heatmap(
      robust, gammas, ks, os.path.join(workdir, "sensitivity_heatmap.png"),
      title=f"TAFL robust accuracy ({attack.label})")
  table = reports.markdown_table(
      ["γ \\ k"] + [f"{k:g}" for k in ks],
      [[f"{g:g}"] + [f"{robust[i, j]:.2f} ± {robust_ci[i, j]:.2f}"
                     for j in range(len(ks))] for i, g in enumerate(gammas)])
  payload = {"gammas": list(map(float, gammas)), "ks": list(map(float, ks)),
             "attack": attack.label, "episodes": num_episodes,
             "robust": robust.tolist(), "robust_ci95": robust_ci.tolist(),
             "clean": clean.tolist()}
  reports.write_json(os.path.join(workdir, "sweep.json"), payload)
  reports.write_text(workdir, "sweep.md", table)
  return {**payload, "heatmap": heatmap, "markdown": table}
