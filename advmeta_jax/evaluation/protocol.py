"""The meta-test protocol over trained runs: learners × test cases × attacks.

    workdir ──load_run──▶ Run(name, config, params)   (load_runs: several)
    runs ──evaluate_runs──▶ [Cell(run, learner, case, attack, MetaTestResult)]
    runs ──masking_checks──▶ {(run, attack): attacks.StrengthReport}
    runs ──default_pairs──▶ [(row a, row b)] the paired comparisons of a report

`evaluate_runs` gives every run the same episodes and the same attack keys (one
seed), so the rows of a table are comparable. One learner's meta-test is
`evaluation.run_case`; the cells are formatted and written by reports.py
(`reports.write_reports`), and the drivers that train and then evaluate
(`reproduce`, the TAFL γ × k sweep) are in experiments/reproduction.py. The
imports go one way: metatest ← protocol ← reports ← experiments.reproduction.

These are drivers: they run jitted functions and return NumPy results, and are
not meant to be traced.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np

from advmeta_jax import attacks
from advmeta_jax import learners
from advmeta_jax.training import builders
from advmeta_jax.core import episodes
from advmeta_jax.evaluation import metatest as evaluation
from advmeta_jax import training
from advmeta_jax.config import Config
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation.metatest import AttackSpec
from advmeta_jax.evaluation.metatest import TestCase


@dataclasses.dataclass
class Run:
  """A trained learner: its name in the tables, its config and parameters
  (with the BatchNorm running averages of a `--batchnorm=running` run,
  `TrainState.meta_test_params`)."""
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
  return Run(name or config.learner_label, config, state.meta_test_params,
             int(state.step))


def load_runs(workdirs: Sequence[str], *,
              names: Optional[Sequence[Optional[str]]] = None,
              step: Optional[int] = None, data_dir: Optional[str] = None,
              log: Callable[[str], None] = logging.info) -> List[Run]:
  """The runs of `workdirs` (`load_run` each), one row name per workdir
  (`names`; None: each run's learner), logging the checkpoint loaded; one
  line when there are none, the names do not match the workdirs, or two
  rows share a name."""
  if not workdirs:
    raise ConfigError("no training workdirs given.")
  names = list(names or [None] * len(workdirs))
  if len(names) != len(workdirs):
    raise ConfigError(f"--names has {len(names)} entries for "
                      f"{len(workdirs)} workdirs.")
  runs = [load_run(w, name=n, step=step, data_dir=data_dir)
          for w, n in zip(workdirs, names)]
  for w, run in zip(workdirs, runs):
    log(f"checkpoint: step {run.step} of {w} ({run.name})")
  if len({r.name for r in runs}) < len(runs):
    raise ConfigError("two runs share a row name; give --names.")
  return runs


@dataclasses.dataclass
class Cell:
  """One learner under one test case and attack (None for clean/clean).

  `n_way` gives chance accuracy (1/N) to the worst-task statistics;
  `train_seed` is the run's training seed when a report holds several seeds
  of each row (None: one)."""
  run: str
  learner: str
  case: TestCase
  attack: Optional[AttackSpec]
  result: evaluation.MetaTestResult
  n_way: Optional[int] = None
  train_seed: Optional[int] = None

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
                  data=None, log: Callable[[str], None] = logging.info,
                  q_query: Optional[int] = None) -> List[Cell]:
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
    q_query: query images per class of the test episodes (default: the
      runs' training q_query).

  Returns:
    The cells, learner-major.
  """
  _check_comparable(runs, cases, attack_specs)
  first = runs[0].config
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
            n_way=first.n_way, k_shot=first.k_shot,
            q_query=q_query or first.q_query,
            inner_steps=inner_steps, num_episodes=num_episodes,
            batch_size=batch_size, seed=seed,
            curves=curves and (case.query == "clean" or adversarial_curves))
        cell = Cell(run.name, run.config.learner, case, spec, result,
                    n_way=first.n_way)
        log(f"{run.name:>12} {case.name:>12} {cell.attack_label:>16}: "
            f"{evaluation.format_accuracy(result.mean, result.ci95)} "
            f"({time.perf_counter() - t0:.1f} s)")
        cells.append(cell)
  return cells


def check_same_episodes(runs: Sequence[Run]) -> None:
  """Refuses no runs, or runs that cannot share a table (other datasets or
  episode shapes)."""
  if not runs:
    raise ConfigError("no runs to evaluate.")
  shapes = {_episode_shape(r.config) for r in runs}
  if len(shapes) > 1:
    raise ConfigError(
        "runs with different datasets or episode shapes cannot share a table: "
        + "; ".join(f"{r.name}: dataset={r.config.dataset} "
                    f"n_way={r.config.n_way} k_shot={r.config.k_shot} "
                    f"q_query={r.config.q_query}" for r in runs))


def _check_comparable(runs: Sequence[Run], cases: Sequence[TestCase],
                      attack_specs: Sequence[AttackSpec]) -> None:
  """Refuses runs that cannot share a table (other datasets or episode
  shapes), a mixed support the shot count cannot give, and adversarial cases
  without an attack, before any data is loaded."""
  check_same_episodes(runs)
  first = runs[0].config
  for case in cases:
    if case.support == "mixed" and evaluation.mixed_adv_count(
        first.k_shot) is None:
      evaluation.mixed_support_mask(np.zeros(first.n_way * first.k_shot,
                                             np.int32), first.n_way,
                                    first.k_shot)   # raises the clear error
  if any(c.needs_attack for c in cases) and not attack_specs:
    raise ConfigError("adversarial test cases need at least one attack.")


def default_pairs(runs: Sequence[Run]) -> List[Tuple[str, str]]:
  """The paired comparisons `(a, b)` (a − b) a report makes by default: each
  robust row (one trained with an attack) against the first row, and each
  row trained with TAFL's loss against the row trained with AQ's on the
  same adaptation (`tafl` − `aq`, `r2d2+tafl` − `r2d2+aq`)."""
  kinds = {}
  for run in runs:
    entry = learners.get(run.config.learner, run.config.robust)
    kinds[run.name] = (entry.objective.name, entry.adaptation.name)
  names = [r.name for r in runs]
  pairs = [(n, names[0]) for n in names[1:]
           if kinds[n][0] != "clean"]
  for a in names:
    for b in names:
      if (kinds[a][0], kinds[b][0]) == ("tafl", "aq") and (
          kinds[a][1] == kinds[b][1]) and (a, b) not in pairs:
        pairs.append((a, b))
  return pairs


# --- gradient-masking checks ------------------------------------------------

def masking_checks(runs: Sequence[Run], attack_specs: Sequence[AttackSpec], *,
                   data, seed: int = 0, inner_steps: int = 10
                   ) -> Dict[Tuple[str, str], attacks.StrengthReport]:
  """`attacks.check_attack_strength` on each run's adapted classifier.

  For every run and every ε of the attacks (once per ε, labelled with the
  first attack that has it): adapt to the clean support of the
  protocol's episode 0 and check the query attack against that classifier
  (PGD 5 vs 20 steps, FGSM, APGD, Square, noise, an ε sweep). A failed check is logged
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
    checked = set()
    for spec in attack_specs:
      # The checks depend on the budget only: once per norm and ε (the first
      # attack with it).
      if spec.eps is None:
        continue
      norm, eps = attacks.parse_budget(spec.eps)
      if (norm, eps) in checked:
        continue
      checked.add((norm, eps))
      report = attacks.check_attack_strength(
          logits_fn, task.query_images, task.query_labels, eps=eps,
          norm=norm, key=attack_key)
      if not report.ok:
        logging.warning("gradient-masking check failed for %s under %s:\n%s",
                        run.name, spec.label, report)
      out[(run.name, spec.label)] = report
  return out
