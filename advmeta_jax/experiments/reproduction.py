"""Drivers: train, meta-test and write the report, one call each.

    train_and_test(config, workdir)    meta-train, then the clean meta-test:
                                       eval_test.md, eval_test.json
    evaluate_workdirs(workdirs, ...)   trained runs × cases × attacks, the
                                       masking checks: <workdir>/eval/
    reproduce(experiment, workdir)     a paper's table end to end:
                                       <workdir>/<row>/ (with several
                                       seeds <workdir>/<row>/seed<k>/),
                                       <workdir>/report/
    sensitivity_sweep(base, workdir)   TAFL's γ × k study: one run per grid
                                       point, the heatmap, sweep.md/json

They are what the launchers run (launch.train, launch.evaluate,
launch.reproduce, launch.sweep: flags, then one call here) and return typed
results (`TrainTestResult`, `Evaluation`, `Reproduction`, `SweepResult`).
Training resumes from the last checkpoint of a run's workdir, so a finished
row is not retrained and an interrupted one continues. The imports go one
way: evaluation ← protocol ← reports ← reproduction.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from advmeta_jax import attacks
from advmeta_jax.training import builders
from advmeta_jax import datasets
from advmeta_jax import evaluation
from advmeta_jax.experiments import base as experiments
from advmeta_jax import learners
from advmeta_jax.evaluation import protocol
from advmeta_jax.evaluation import reports
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.config import EvalConfig
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.evaluation import MetaTestResult
from advmeta_jax.evaluation import TestCase
from advmeta_jax.evaluation.protocol import Cell
from advmeta_jax.evaluation.protocol import Run
from advmeta_jax.evaluation.reports import Report

Log = Callable[[str], None]
MaskingChecks = Mapping[Tuple[str, str], attacks.StrengthReport]


# --- train, then meta-test --------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class TrainTestResult:
  """A trained run and its meta-test (None when `eval_episodes` is 0).

  Attributes:
    state: the final `training.TrainState`.
    result: the clean meta-test on the test classes.
    report: eval_test.md (its text is the printed table) and eval_test.json.
  """
  state: training.TrainState
  result: Optional[MetaTestResult] = None
  report: Optional[Report] = None


def train_and_test(config: Config, workdir: str, *,
                   progress: bool = True) -> TrainTestResult:
  """Meta-trains `config` in `workdir` (resuming), then meta-tests it.

  Both splits are loaded and checked before training, so a test split that
  cannot give the configured episodes is refused before a long run. The
  meta-test is `evaluation.meta_test_config` (the config's `eval_*`
  settings); its table goes to `workdir/eval_test.md` and the summary to
  `workdir/eval_test.json`.
  """
  train_split = builders.load_split(config, "train")
  test_split = (builders.load_split(config, "test") if config.eval_episodes
                else None)
  state = training.train(config, workdir, train_split=train_split,
                         progress=progress)
  if not config.eval_episodes:
    return TrainTestResult(state)
  result = evaluation.meta_test_config(config, state.meta_test_params, "test",
                                       data=test_split)
  if config.loop.tensorboard:
    writer = training.SummaryWriter(os.path.join(workdir, "tb"))
    writer.scalars(int(state.step), {"accuracy": 100 * result.mean,
                                     "ci95": 100 * result.ci95,
                                     "loss": float(result.loss.mean())},
                   prefix="test/")
    writer.close()
  report = reports.write_meta_test({config.learner_label: result}, config,
                                   workdir)
  return TrainTestResult(state, result, report)


# --- trained runs, under the protocol ---------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
  """Trained runs under the protocol: the runs, their cells, the masking
  checks (None when not run) and the written report."""
  runs: Tuple[Run, ...]
  cells: Tuple[Cell, ...]
  masking: Optional[MaskingChecks]
  report: Report


def evaluate_workdirs(workdirs: Sequence[str], *, cases: Sequence[TestCase],
                      attack_specs: Sequence[AttackSpec],
                      names: Optional[Sequence[Optional[str]]] = None,
                      checkpoint_step: Optional[int] = None,
                      split: str = "test", data_dir: Optional[str] = None,
                      out: Optional[str] = None,
                      num_episodes: Optional[int] = None,
                      inner_steps: Optional[int] = None, seed: int = 0,
                      curves: bool = False, adversarial_curves: bool = False,
                      kde: bool = False, kde_threshold: float = 1.0,
                      masking_check: bool = True,
                      q_query: Optional[int] = None,
                      log: Log = print) -> Evaluation:
  """Meta-tests the runs in `workdirs` on the same episodes; writes the report.

  Args:
    workdirs: training workdirs (each run's latest checkpoint, or
      `checkpoint_step`).
    cases, attack_specs: the protocol (`protocol.evaluate_runs`).
    names: row names, one per workdir (None: each run's learner).
    checkpoint_step: the checkpoint to evaluate (default: the latest).
    split: the class split to test on.
    data_dir: overrides the runs' data_dir.
    out: the report directory (default: `<first workdir>/eval`).
    num_episodes, inner_steps: default to the first run's `eval_episodes`
      and `eval_inner_steps`.
    seed: the episodes and the attacks' random starts.
    curves, adversarial_curves: as `protocol.evaluate_runs`.
    kde, kde_threshold: as `reports.write_reports`.
    masking_check: run `protocol.masking_checks` for the ε attacks.
    q_query: query images per class of the test episodes (default: the
      first run's q_query).
    log: progress messages (the checkpoints loaded, one line per cell).
  """
  runs = protocol.load_runs(workdirs, names=names, step=checkpoint_step,
                            data_dir=data_dir, log=log)
  out = training.rundir.writable_dir(     # checked before the evaluation runs
      out or os.path.join(workdirs[0], "eval"), "--out")
  first = runs[0].config
  # A run trained with --eval_episodes=0 takes the default of the setting.
  episodes = num_episodes or first.eval_episodes or EvalConfig().eval_episodes
  if episodes < 1:
    raise ConfigError(f"--episodes must be >= 1, got {episodes}.")
  inner_steps = first.eval_inner_steps if inner_steps is None else inner_steps
  data = builders.load_split(first, split)
  cells = protocol.evaluate_runs(
      runs, cases=cases, attack_specs=attack_specs, split=split,
      num_episodes=episodes, inner_steps=inner_steps, seed=seed,
      curves=curves, adversarial_curves=adversarial_curves, data=data,
      log=log, q_query=q_query)
  masking = (protocol.masking_checks(runs, attack_specs, data=data, seed=seed,
                                     inner_steps=inner_steps)
             if masking_check and attack_specs else None)
  header = (f"# Meta-test on {first.dataset} ({split} classes), "
            f"{first.n_way}-way {first.k_shot}-shot\n\n{episodes} episodes "
            f"per cell, {q_query or first.q_query} queries per class, "
            f"{inner_steps} test-time inner steps, seed "
            f"{seed}; accuracy in % ± 95% CI.")
  report = reports.write_reports(
      cells, out, curves=curves,
      kde=kde, kde_threshold=kde_threshold, masking=masking, header=header,
      pairs=protocol.default_pairs(runs))
  return Evaluation(tuple(runs), tuple(cells), masking, report)


# --- a paper's table --------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Reproduction:
  """A reproduced table: its cells, the written report (report.md, CSV,
  JSON, figures), the masking checks (None when the experiment has none) and
  the wall time in seconds, training included."""
  cells: Tuple[Cell, ...]
  report: Report
  seconds: float
  masking: Optional[MaskingChecks] = None


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


def check_seeds(seeds) -> int:
  """The number of training seeds per row: a positive integer."""
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise ConfigError(f"--seeds must be a positive integer (training seeds "
                      f"per row; 1 trains each row once), got {seeds!r}.")
  return seeds


def seed_rundir(workdir: str, row: str, k: int, seeds: int) -> str:
  """`workdir/row` with one seed (the layout of earlier runs), else
  `workdir/row/seed<k>`."""
  return os.path.join(workdir, row) if seeds == 1 else os.path.join(
      workdir, row, f"seed{k}")


def _train_rows(configs, workdir: str, seeds: int, train_data, *,
                progress: bool, log: Log) -> List[List[Run]]:
  """Trains (or resumes) every row at every seed; the runs, seed-major. Seed
  k of a row is its config with `seed + k`."""
  by_seed = []
  for k in range(seeds):
    runs = []
    for row, config in configs.items():
      if seeds > 1:
        config = config.replace(seed=config.seed + k)
      rundir = seed_rundir(workdir, row, k, seeds)
      log(f"== {row}: meta-training {config.learner} for {config.num_steps} "
          f"steps in {rundir}" + (f" (seed {config.seed})" if seeds > 1
                                  else ""))
      state = training.train(config, rundir, train_split=train_data,
                             progress=progress)
      runs.append(Run(row, config, state.meta_test_params))
    by_seed.append(runs)
  return by_seed


def reproduce(experiment: experiments.ExperimentConfig, workdir: str, *,
              shrink: bool = False, rows: Optional[Sequence[str]] = None,
              data_dir: Optional[str] = None, episodes_: Optional[int] = None,
              seed: int = 0, q_query: Optional[int] = None,
              progress: bool = True,
              kde_threshold: float = 1.0, log: Log = print,
              extra_attacks: Sequence = (), seeds: int = 1,
              pairs: Optional[Sequence[Tuple[str, str]]] = None
              ) -> Reproduction:
  """Trains every row of `experiment` in `workdir/<row>`, then evaluates them.

  A row whose run is complete is not retrained; an interrupted one resumes
  from its last checkpoint. The report goes to `workdir/report/`, with the
  paper's numbers beside ours. `extra_attacks` adds test attacks beyond the
  paper's (`ExperimentConfig.test_attacks`), e.g. `("autoattack",)`.
  The test episodes have `q_query` queries per class (default: the
  experiment's `test_q_query`, else the rows' training q_query).

  With `seeds` > 1 each row is trained `seeds` times, with training seeds
  config.seed + 0, 1, ..., each in `workdir/<row>/seed<k>` (resumed per
  seed), and every seed's runs meet the same test episodes (`seed`); the
  report gives each seed's accuracy ± CI beside the mean ± s.d. over seeds
  and the paired comparisons per seed and over seeds. `pairs` are the paired
  comparisons `(a, b)` by row name (default `protocol.default_pairs`).
  """
  t0 = time.perf_counter()
  check_seeds(seeds)
  chosen = _available_rows(experiment, rows)
  configs = {row: Config.make(**experiment.train_fields(
      row, shrink=shrink, data_dir=data_dir)).validate() for row in chosen}
  unknown = sorted({r for p in pairs or () for r in p} - set(chosen))
  if unknown:
    raise ConfigError(f"--pairs names rows {unknown} that this run does not "
                      f"have; rows: {', '.join(chosen)}.")
  first = configs[chosen[0]]
  cases = experiment.test_cases()
  if evaluation.mixed_adv_count(first.k_shot) is None:
    cases = evaluation.cases_for_shots(cases, first.k_shot)
  attack_specs = experiment.test_attacks(shrink=shrink, extra=extra_attacks)
  settings = experiment.protocol(shrink=shrink)
  num_episodes = episodes_ or settings.test_episodes
  q_query = q_query or settings.test_q_query or first.q_query
  # Check the data before any training.
  train_data = builders.load_split(first, "train")
  test_data = builders.load_split(first, "test")
  by_seed = _train_rows(configs, workdir, seeds, train_data,
                        progress=progress, log=log)
  cells = []
  for runs in by_seed:
    log(f"== meta-testing {len(runs)} learners on {num_episodes} episodes "
        f"({', '.join(c.name for c in cases)}; "
        f"{', '.join(s.label for s in attack_specs) or 'no attack'})"
        + (f", training seed {runs[0].config.seed}" if seeds > 1 else ""))
    cells += [dataclasses.replace(
        c, train_seed=runs[0].config.seed if seeds > 1 else None)
              for c in protocol.evaluate_runs(
                  runs, cases=cases, attack_specs=attack_specs,
                  num_episodes=num_episodes,
                  inner_steps=settings.test_inner_steps, seed=seed,
                  curves=experiment.curves,
                  adversarial_curves=experiment.adversarial_curves,
                  data=test_data, log=log, q_query=q_query)]
  runs = by_seed[0]
  masking = None
  if experiment.masking_check:
    # Shrunk: one run and one attack, a smoke test of the check itself (the
    # toy models are untrained and fail it, as they should). With several
    # seeds: the first seed's runs.
    masking = protocol.masking_checks(
        runs[:1] if shrink else runs,
        [s for s in attack_specs[:len(experiment.attacks)]
         if s.eps is not None][:1 if shrink else None],
        data=test_data, seed=seed, inner_steps=settings.test_inner_steps)
  seconds = time.perf_counter() - t0
  trained = (f"{seeds} training seeds per row "
             f"({', '.join(str(r[0].config.seed) for r in by_seed)}; figures, "
             "L_AR and masking checks of the first), " if seeds > 1 else "")
  header = (f"# {experiment.name}{' (shrunk)' if shrink else ''}\n\n"
            f"{experiment.description}\n\n"
            f"{trained}{num_episodes} episodes per cell, {q_query} queries "
            f"per class, {settings.test_inner_steps} test-time inner steps, "
            f"seed {seed}; accuracy in % ± 95% CI (1.96·s/√n). Wall time "
            f"{seconds / 60:.1f} min (training included).")
  report = reports.write_reports(
      cells, os.path.join(workdir, "report"), experiment=experiment,
      curves=experiment.curves, kde=experiment.kde,
      kde_threshold=kde_threshold, masking=masking, header=header,
      pairs=protocol.default_pairs(runs) if pairs is None else pairs)
  return Reproduction(tuple(cells), report, seconds, masking)


# --- TAFL's γ × k sensitivity study -----------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
  """TAFL's γ × k grid: accuracies in percent, `[len(gammas), len(ks)]`.

  Attributes:
    gammas, ks: the grid.
    attack: the label of the attack of the robust accuracy.
    num_episodes: meta-test episodes per grid point.
    robust, robust_ci95: clean support, attacked query: accuracy and CI, on
      the `selection_split` classes.
    clean: clean support, clean query, on the same classes.
    heatmap: the path of sensitivity_heatmap.png.
    markdown: sweep.md: the grid (robust accuracy ± CI) and the choice.
    files: every file written (heatmap, sweep.json, sweep.md).
    selection_split: "val" when the dataset has validation classes (the
      choice is then held out from the test classes), else "test".
    chosen: the (γ, k) of the highest robust accuracy on `selection_split`.
    chosen_test: `(robust, robust_ci95, clean)` of the chosen point on the
      test classes (the grid's own numbers when it was scored on test).
  """
  gammas: Tuple[float, ...]
  ks: Tuple[float, ...]
  attack: str
  num_episodes: int
  robust: np.ndarray
  clean: np.ndarray
  robust_ci95: np.ndarray
  heatmap: str
  markdown: str
  files: Mapping[str, str] = dataclasses.field(default_factory=dict)
  selection_split: str = "test"
  chosen: Tuple[float, float] = (0.0, 0.0)
  chosen_test: Tuple[float, float, float] = (0.0, 0.0, 0.0)


def validation_split(config: Config):
  """The val split of the config's data, or None when the dataset has no
  validation classes (or fewer than n_way)."""
  data = datasets.load(config.data.dataset, "val",
                       data_dir=config.loop.data_dir,
                       image_size=config.data.image_size,
                       cache_dir=config.loop.cache_dir)
  if data.num_classes < config.data.n_way:
    return None
  return builders.load_split(config, "val")


def _score(run: Run, attack: AttackSpec, data, *, num_episodes: int,
           inner_steps: int, seed: int, log: Log) -> Tuple[float, float, float]:
  """`(robust, robust_ci95, clean)` accuracy in percent of one run."""
  cells = protocol.evaluate_runs(
      [run], cases=(TestCase("clean", "clean"), TestCase("clean", "adv")),
      attack_specs=(attack,), num_episodes=num_episodes,
      inner_steps=inner_steps, seed=seed, data=data, log=log)
  return (100 * cells[1].result.mean, 100 * cells[1].result.ci95,
          100 * cells[0].result.mean)


def sensitivity_sweep(base: Config, workdir: str, *,
                      gammas: Sequence[float], ks: Sequence[float],
                      attack: AttackSpec, num_episodes: int = 600,
                      inner_steps: int = 10, seed: int = 0,
                      progress: bool = True, log: Log = print) -> SweepResult:
  """Trains TAFL at every (γ, k) (resumable, `workdir/gamma<γ>_k<k>` each),
  meta-tests clean and attacked query accuracy on the same episodes of the
  validation classes (the test classes when the dataset has none), chooses
  the point of highest robust accuracy there and reports its test accuracy
  separately; writes the heatmap, sweep.json and sweep.md to `workdir`."""
  if base.learner != "tafl":
    raise ConfigError(f"the sensitivity sweep trains TAFL; got --learner="
                      f"{base.learner}.")
  if not gammas or not ks:
    raise ConfigError("the sweep needs at least one γ and one k.")
  train_data = builders.load_split(base, "train")
  test_data = builders.load_split(base, "test")
  val_data = validation_split(base)
  selection_split = "test" if val_data is None else "val"
  if val_data is None:
    log(f"== {base.data.dataset} has no validation classes: the grid is "
        "scored on the test classes, so the chosen point is not held out.")
  robust = np.zeros((len(gammas), len(ks)))
  robust_ci = np.zeros_like(robust)
  clean = np.zeros_like(robust)
  runs = {}
  for i, gamma in enumerate(gammas):
    for j, k in enumerate(ks):
      config = base.replace(tafl_gamma=float(gamma),
                            tafl_k=float(k)).validate()
      rundir = os.path.join(workdir, f"gamma{gamma:g}_k{k:g}")
      log(f"== TAFL γ={gamma:g} k={k:g} in {rundir}")
      state = training.train(config, rundir, train_split=train_data,
                             progress=progress)
      runs[i, j] = Run(f"γ={gamma:g},k={k:g}", config, state.meta_test_params)
      robust[i, j], robust_ci[i, j], clean[i, j] = _score(
          runs[i, j], attack, val_data or test_data,
          num_episodes=num_episodes, inner_steps=inner_steps, seed=seed,
          log=log)
  best = np.unravel_index(int(np.argmax(robust)), robust.shape)
  chosen = (float(gammas[best[0]]), float(ks[best[1]]))
  if val_data is None:
    chosen_test = (robust[best], robust_ci[best], clean[best])
  else:
    log(f"== the chosen γ={chosen[0]:g} k={chosen[1]:g} on the test classes")
    chosen_test = _score(runs[best], attack, test_data,
                         num_episodes=num_episodes, inner_steps=inner_steps,
                         seed=seed, log=log)
  report = reports.write_sweep(
      workdir, gammas=gammas, ks=ks, robust=robust, robust_ci95=robust_ci,
      clean=clean, attack=attack.label, num_episodes=num_episodes,
      selection_split=selection_split, chosen=chosen,
      chosen_test=chosen_test)
  return SweepResult(
      tuple(map(float, gammas)), tuple(map(float, ks)), attack.label,
      num_episodes, robust, clean, robust_ci, report.files["heatmap"],
      report.markdown, report.files, selection_split, chosen,
      tuple(map(float, chosen_test)))
