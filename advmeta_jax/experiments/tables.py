"""The seeds' experiments as ready configs, with the papers' numbers.

An `ExperimentConfig` names the learners of a table (each a set of
`config.Config` overrides (flat field names)), the meta-test protocol (test cases, attacks, ε,
episodes, test-time inner steps) and the published accuracies
(`PaperResult`), so that `python -m launch.reproduce --experiment=NAME` trains
every learner, runs the protocol and prints the paper's number beside ours.
Every experiment has a `shrink` form: the same pipeline at toy scale on the
offline `digits` dataset, which the tests run end to end in seconds.

The papers' numbers were transcribed from the seeds' text (ADML Tables 1-4,
TAFL Table 1) by a script that parsed the tables; a test checks their count and
a few values. ADML's "ε = 2" and "ε = 0.2" are on the 0-255 scale:
2/255 and 0.2/255 here. The TAFL paper gives no attack budgets; its code
trains every defense with PGD ε 8/255 (7 steps of 2/255) and tests with
PGD-20 and MI-FGSM at 8/255 and advertorch's C&W-L2 (c0 = 1e-3, 10
iterations, 9 binary-search steps), which `tafl_table1` runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.evaluation import default_test_attack
from advmeta_jax.evaluation import parse_cases
from advmeta_jax.evaluation import TestCase


@dataclasses.dataclass(frozen=True)
class PaperResult:
  """One published cell: accuracy and 95% CI in percent."""
  table: str
  dataset: str
  k_shot: int
  learner: str
  attack: str
  eps: Optional[str]
  support: str
  query: str
  accuracy: float
  ci95: Optional[float]

  @property
  def case(self) -> str:
    return f"{self.support}/{self.query}"


# ADML (Yin et al. 2018), Tables 1-4: 5-way, FGSM at test, meta-trained with
# FGSM ε = 2/255. support "adv" = "Adversarial", "mixed" = "40%"; the
# learner "matchingnet" is the paper's Matching Nets (FCE variant).
def _adml_table(number: int, dataset: str, k_shot: int, rows
                ) -> Tuple[PaperResult, ...]:
  """Rows `(learner, support, cells)`, cells in the paper's column order:
  ε=2 clean query, ε=2 adversarial query, ε=0.2 clean, ε=0.2 adversarial."""
  columns = (("2/255", "clean"), ("2/255", "adv"), ("0.2/255", "clean"),
             ("0.2/255", "adv"))
  return tuple(
      PaperResult(f"ADML Table {number}", dataset, k_shot, learner, "fgsm",
                  eps, support, query, acc, ci)
      for learner, support, cells in rows
      for (eps, query), (acc, ci) in zip(columns, cells))


ADML_RESULTS: Tuple[PaperResult, ...] = (
    _adml_table(1, "mini_imagenet", 1, (
        ("maml", "clean", ((48.47, 1.78), (28.63, 1.54), (48.47, 1.78), (42.13, 1.75))),
        ("maml", "adv", ((28.93, 1.62), (30.73, 1.66), (42.23, 1.85), (40.17, 1.76))),
        ("maml_ad", "clean", ((43.13, 1.88), (32.33, 1.74), (43.13, 1.88), (36.8, 1.76))),
        ("maml_ad", "adv", ((32.47, 1.6), (37.87, 1.74), (37.63, 1.64), (37.13, 1.75))),
        ("adml", "clean", ((48.0, 1.87), (43.0, 1.88), (48.0, 1.87), (43.2, 1.7))),
        ("adml", "adv", ((40.1, 1.73), (40.7, 1.74), (44.0, 1.83), (41.2, 1.75))),
        ("matchingnet", "clean", ((43.87, 0.41), (30.02, 0.39), (43.88, 0.48), (36.14, 0.4))),
        ("matchingnet", "adv", ((30.45, 0.44), (30.8, 0.43), (36.58, 0.49), (35.03, 0.39))),
    )) +
    _adml_table(2, "mini_imagenet", 5, (
        ("maml", "clean", ((61.45, 0.91), (36.65, 0.88), (61.47, 0.91), (53.05, 0.86))),
        ("maml", "mixed", ((56.74, 0.93), (43.05, 0.86), (61.98, 0.89), (54.67, 0.91))),
        ("maml", "adv", ((41.49, 0.95), (45.46, 0.97), (55.19, 0.95), (53.33, 0.92))),
        ("maml_ad", "clean", ((57.13, 0.96), (41.65, 0.92), (57.09, 0.96), (49.71, 0.88))),
        ("maml_ad", "mixed", ((54.07, 0.91), (48.74, 0.91), (56.52, 0.9), (52.08, 0.9))),
        ("maml_ad", "adv", ((43.21, 0.91), (52.07, 0.96), (51.23, 0.9), (51.36, 0.94))),
        ("adml", "clean", ((59.38, 0.99), (57.03, 0.98), (59.4, 0.99), (56.07, 0.96))),
        ("adml", "mixed", ((58.12, 0.9), (55.22, 0.98), (59.67, 0.89), (56.49, 0.92))),
        ("adml", "adv", ((58.06, 0.96), (55.27, 0.92), (57.44, 0.88), (54.47, 0.93))),
        ("matchingnet", "clean", ((55.99, 0.47), (33.73, 0.39), (55.55, 0.44), (44.91, 0.4))),
        ("matchingnet", "mixed", ((49.88, 0.45), (35.67, 0.44), (52.72, 0.45), (45.65, 0.42))),
        ("matchingnet", "adv", ((36.24, 0.45), (37.91, 0.4), (47.77, 0.45), (46.19, 0.44))),
    )) +
    _adml_table(3, "cifar_fs", 1, (
        ("maml", "clean", ((57.67, 1.76), (26.4, 1.55), (57.67, 1.76), (43.3, 1.68))),
        ("maml", "adv", ((28.13, 1.56), (28.23, 1.64), (43.03, 1.76), (39.0, 1.7))),
        ("maml_ad", "clean", ((52.7, 1.89), (36.2, 1.65), (52.7, 1.89), (39.17, 1.82))),
        ("maml_ad", "adv", ((37.27, 1.72), (41.67, 1.86), (37.8, 1.7), (37.6, 1.78))),
        ("adml", "clean", ((55.7, 2.0), (50.9, 1.84), (55.7, 2.0), (49.3, 1.76))),
        ("adml", "adv", ((54.5, 1.69), (50.6, 1.83), (52.9, 1.92), (45.0, 1.79))),
        ("matchingnet", "clean", ((47.94, 0.56), (25.06, 0.36), (47.68, 0.52), (39.03, 0.51))),
        ("matchingnet", "adv", ((24.82, 0.46), (27.72, 0.43), (40.08, 0.57), (37.79, 0.44))),
    )) +
    _adml_table(4, "cifar_fs", 5, (
        ("maml", "clean", ((74.03, 0.89), (31.29, 0.78), (74.03, 0.89), (54.15, 1.0))),
        ("maml", "mixed", ((65.69, 0.92), (36.14, 0.84), (68.99, 0.94), (55.79, 0.98))),
        ("maml", "adv", ((33.34, 0.9), (43.66, 0.86), (59.08, 1.0), (53.93, 0.96))),
        ("maml_ad", "clean", ((67.71, 0.96), (44.61, 0.9), (67.73, 0.96), (56.07, 0.95))),
        ("maml_ad", "mixed", ((64.85, 0.9), (53.59, 0.88), (65.93, 0.93), (57.96, 0.93))),
        ("maml_ad", "adv", ((48.37, 0.99), (58.92, 0.97), (59.45, 1.0), (56.33, 0.98))),
        ("adml", "clean", ((69.9, 0.88), (65.68, 0.87), (69.9, 0.88), (59.15, 0.9))),
        ("adml", "mixed", ((67.61, 0.93), (62.83, 0.88), (68.24, 0.89), (60.44, 0.93))),
        ("adml", "adv", ((65.26, 0.96), (64.18, 0.86), (61.93, 0.95), (59.8, 0.84))),
        ("matchingnet", "clean", ((62.95, 0.46), (28.14, 0.37), (62.58, 0.49), (47.14, 0.45))),
        ("matchingnet", "mixed", ((54.39, 0.48), (28.64, 0.36), (57.86, 0.48), (47.01, 0.48))),
        ("matchingnet", "adv", ((29.4, 0.44), (32.77, 0.42), (53.34, 0.52), (46.5, 0.46))),
    ))
)

# TAFL (Hou et al.), Table 1: MiniImageNet 5-way 1-shot, robust accuracy
# (clean support, attacked query).
TAFL_RESULTS: Tuple[PaperResult, ...] = tuple(
    PaperResult("TAFL Table 1", "mini_imagenet", 1, learner, attack, eps,
                "clean", "adv", acc, ci)
    for learner, cells in (
        ("maml", ((0.42, 0.06), (0.01, 0.01), (14.38, 0.36))),
        ("adml", ((28.53, 0.48), (28.19, 0.56), (26.77, 0.41))),
        ("aq", ((28.20, 0.48), (27.94, 0.54), (26.82, 0.42))),
        ("tafl", ((29.53, 0.60), (28.94, 0.61), (27.75, 0.44))))
    for (attack, eps), (acc, ci) in zip(
        (("pgd", "8/255"), ("mi_fgsm", "8/255"), ("cw_l2", None)), cells))


# --- experiment configs -----------------------------------------------------

# The toy scale of every experiment's `shrink` form (offline digits, seconds).
SHRINK_TRAIN = dict(dataset="digits", data_dir=None, image_size=None,
                    num_steps=3, filters=4, task_batch_size=2, q_query=3,
                    train_attack_steps=2, log_every=1, checkpoint_every=3,
                    eval_batch_size=4)
SHRINK_PROTOCOL = dict(episodes=4, inner_steps=2, attack_steps=2,
                       square_queries=10)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """A table of a seed (or of this project's README) as a ready config.

  Attributes:
    name: the `--experiment` value.
    description: what the table is.
    train: `config.Config` fields (flat names) shared by every row.
    rows: `(row name, config overrides)`; the row name is the learner
      name the paper's numbers use.
    cases: test cases (`evaluation.parse_cases` syntax).
    attacks: `(attack name, ε or None)` of the meta-test, whose other
      hyperparameters follow `evaluation.default_test_attack`, or an
      `AttackSpec` with all of them.
    attack_steps: iterations of PGD and MI-FGSM at test.
    apgd_steps: iterations of APGD, APGD-T and FAB-T at test, alone and in
      AutoAttack (its 100).
    square_queries: queries of Square at test, alone and in AutoAttack (its
      5000).
    episodes: meta-test episodes per cell.
    inner_steps: test-time adaptation steps.
    paper: the published cells.
    curves: write the per-inner-step curves (ADML Figs. 2-5).
    adversarial_curves: curves of the attacked-query cases too (re-attacks
      at every inner step: affordable with FGSM, heavy with PGD-20).
    kde: draw the TAFL figure (KDE of L_AR over tasks) for the first ε attack.
    masking_check: run the gradient-masking checks for each ε attack.
  """
  name: str
  description: str
  train: Dict[str, Any]
  rows: Tuple[Tuple[str, Dict[str, Any]], ...]
  cases: str = "robust"
  attacks: Tuple[Any, ...] = (("pgd", "8/255"),)
  attack_steps: int = 20
  apgd_steps: int = 100
  square_queries: int = 5000
  episodes: int = 600
  inner_steps: int = 10
  paper: Tuple[PaperResult, ...] = ()
  curves: bool = False
  adversarial_curves: bool = False
  kde: bool = False
  masking_check: bool = True

  @property
  def row_names(self) -> Tuple[str, ...]:
    return tuple(name for name, _ in self.rows)

  def train_fields(self, row: str, *, shrink: bool = False,
                   **overrides) -> Dict[str, Any]:
    """The flat config fields of `row` (at toy scale with `shrink`)."""
    rows = dict(self.rows)
    if row not in rows:
      raise ConfigError(f"experiment {self.name!r} has no row {row!r}; rows: "
                        f"{', '.join(self.row_names)}.")
    fields = {**self.train, **rows[row]}
    if shrink:
      fields.update(SHRINK_TRAIN)
      fields["k_shot"] = min(fields.get("k_shot", 1), 5)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return fields

  def test_cases(self) -> Tuple[TestCase, ...]:
    return parse_cases(self.cases)

  def test_attacks(self, *, shrink: bool = False,
                   extra: Sequence[Any] = ()) -> Tuple[AttackSpec, ...]:
    """The meta-test attacks, then `extra` ones (`(name, ε or None)` or a
    name, which takes the ε of the experiment's first ε attack): attacks
    beyond the paper's, e.g. AutoAttack, whose cells have no paper value."""
    steps = SHRINK_PROTOCOL["attack_steps"] if shrink else self.attack_steps
    apgd_steps = SHRINK_PROTOCOL["attack_steps"] if shrink else self.apgd_steps
    queries = (SHRINK_PROTOCOL["square_queries"] if shrink
               else self.square_queries)
    first_eps = next((a[1] for a in self.attacks
                      if not isinstance(a, AttackSpec) and a[1] is not None),
                     "8/255")
    specs = []
    for attack in tuple(self.attacks) + tuple(
        (a, first_eps) if isinstance(a, str) else a for a in extra):
      spec = attack if isinstance(attack, AttackSpec) else default_test_attack(
          *attack, num_steps=steps, apgd_steps=apgd_steps,
          square_queries=queries)
      if shrink and spec.name == "cw_l2":   # a few Adam steps, same settings
        spec = AttackSpec(spec.name, tuple(
            (k, min(v, 5) if k in ("num_steps", "binary_search_steps") else v)
            for k, v in spec.hparams), spec.tag)
      specs.append(spec)
    return tuple(specs)

  def protocol(self, *, shrink: bool = False) -> Dict[str, int]:
    if shrink:
      return {"episodes": SHRINK_PROTOCOL["episodes"],
              "inner_steps": SHRINK_PROTOCOL["inner_steps"]}
    return {"episodes": self.episodes, "inner_steps": self.inner_steps}

  def paper_result(self, row: str, attack: Optional[AttackSpec],
                   case: TestCase) -> Optional[PaperResult]:
    """The published cell for (row, attack, case), if the paper has one."""
    for r in self.paper:
      if r.learner != row or r.case != case.name:
        continue
      if case.needs_attack or r.attack is not None:
        if attack is None:
          # A clean/clean cell is shared by the paper's ε columns: take the
          # first.
          if case.needs_attack:
            continue
          return r
        if r.attack != attack.kind or r.eps != attack.eps:
          continue
      return r
    return None


# ADML's Matching Nets are the FCE version of the implementation it cites
# (fce.py, --fce=adml).
_ADML_LEARNERS = (("maml", dict(learner="maml")),
                  ("maml_ad", dict(learner="maml_ad")),
                  ("adml", dict(learner="adml")),
                  ("matchingnet", dict(learner="matchingnet", fce="adml")))
# MAML's MiniImageNet/CIFAR-FS setup, which ADML follows: 60k meta-iterations,
# 4 tasks per batch for 1-shot and 2 for 5-shot, 5 inner steps (10 at test),
# α = 0.01, β = 1e-3, 15 queries per class; FGSM ε = 2/255 in meta-training.
_PAPER_TRAIN = dict(n_way=5, q_query=15, inner_lr=0.01, inner_steps=5,
                    meta_lr=1e-3, filters=32, num_steps=60000,
                    checkpoint_every=1000, log_every=100,
                    train_eps="2/255")


def _adml_experiment(table: int, dataset: str, k_shot: int
                     ) -> ExperimentConfig:
  return ExperimentConfig(
      name=f"adml_table{table}",
      description=(f"ADML Table {table}: {dataset}, 5-way {k_shot}-shot; "
                   "MAML, MAML-AD, ADML, Matching Nets; FGSM ε 2/255 and "
                   "0.2/255; all support × query cases."),
      train=dict(_PAPER_TRAIN, dataset=dataset, k_shot=k_shot,
                 task_batch_size=4 if k_shot == 1 else 2),
      rows=_ADML_LEARNERS,
      cases="all",
      attacks=(("fgsm", "2/255"), ("fgsm", "0.2/255")),
      episodes=600, inner_steps=10,
      paper=tuple(r for r in ADML_RESULTS
                  if r.table == f"ADML Table {table}"),
      curves=True, adversarial_curves=True, kde=False, masking_check=True)


_TAFL_TRAIN = dict(_PAPER_TRAIN, dataset="mini_imagenet", k_shot=1,
                   task_batch_size=4, train_eps="")

# The offline digits tables (digits_robust, digits_beyond): sized to run end
# to end (8 rows: training, 150 episodes per cell, masking checks) in under
# 20 minutes on 2 CPU cores. eval_batch_size 5: on the CPU, small batches of
# per-task (grouped) convolutions ran faster than batches of 20.
_DIGITS = dict(
    train=dict(dataset="digits", n_way=5, k_shot=1, q_query=15,
               num_steps=100, task_batch_size=4, eval_batch_size=5),
    cases="robust", attacks=(("pgd", "8/255"),), episodes=150,
    inner_steps=10, curves=True, kde=True, masking_check=True)

EXPERIMENTS: Dict[str, ExperimentConfig] = {
    e.name: e for e in (
        ExperimentConfig(
            name="digits_robust",
            description=("The README's results table: every learner on the "
                         "offline digits (meta-train on 0-4, meta-test on "
                         "5-9), 5-way 1-shot, clean and PGD-20 query "
                         "accuracy at ε 8/255."),
            rows=(("maml", dict(learner="maml")),
                  ("maml_ad", dict(learner="maml_ad")),
                  ("adml", dict(learner="adml")),
                  ("aq", dict(learner="aq")),
                  ("tafl", dict(learner="tafl")),
                  ("protonet", dict(learner="protonet")),
                  ("protonet+tafl", dict(learner="protonet", robust="tafl")),
                  ("matchingnet", dict(learner="matchingnet", fce="adml"))),
            **_DIGITS),
        ExperimentConfig(
            name="digits_beyond",
            description=("Learners beyond the seeds on the offline digits "
                         "(as digits_robust): R2-D2, ANIL and R-MAML's "
                         "TRADES, with AQ/TAFL on top, beside MAML and AQ; "
                         "5-way 1-shot, clean and PGD-20 query accuracy at "
                         "ε 8/255."),
            # ANIL's head-only inner loop takes α = 0.1: at MAML's 0.01 the
            # head on digits' 32-d embedding barely moved (24% clean).
            rows=(("maml", dict(learner="maml")),
                  ("aq", dict(learner="aq")),
                  ("r2d2", dict(learner="r2d2")),
                  ("r2d2+aq", dict(learner="r2d2", robust="aq")),
                  ("r2d2+tafl", dict(learner="r2d2", robust="tafl")),
                  ("anil", dict(learner="anil", inner_lr=0.1)),
                  ("anil+aq", dict(learner="anil", robust="aq",
                                   inner_lr=0.1)),
                  ("maml+trades", dict(learner="maml", robust="trades"))),
            **_DIGITS),
        _adml_experiment(1, "mini_imagenet", 1),
        _adml_experiment(2, "mini_imagenet", 5),
        _adml_experiment(3, "cifar_fs", 1),
        _adml_experiment(4, "cifar_fs", 5),
        ExperimentConfig(
            name="tafl_table1",
            description=("TAFL Table 1: MiniImageNet 5-way 1-shot robust "
                         "accuracy (clean support, attacked query) of MAML, "
                         "ADML, AQ and TAFL under PGD, MI-FGSM and C&W-L2; "
                         "plus the KDE of L_AR over tasks."),
            train=_TAFL_TRAIN,
            # The TAFL code trains every defense against one adversary: PGD
            # ε 8/255, 7 steps of 2/255 from a random start. ADML's support
            # attack (against θ) and query attack (against θ'_c) are that
            # PGD too. The TAFL code's own ADML reuses AQ's predictions, so
            # the paper's ADML row is close to its AQ row; ours is ADML's
            # Algorithm 1.
            rows=(("maml", dict(learner="maml")),
                  ("adml", dict(learner="adml", train_attack="pgd",
                                train_eps="8/255")),
                  ("aq", dict(learner="aq", train_attack="pgd",
                              train_eps="8/255")),
                  ("tafl", dict(learner="tafl", train_attack="pgd",
                                train_eps="8/255"))),
            cases="clean/clean,clean/adv",
            # The table's C&W is the TAFL code's (advertorch's
            # CarliniWagnerL2Attack, these settings); our stronger C&W is an
            # extra column, cw_l2_strong.
            attacks=(("pgd", "8/255"), ("mi_fgsm", "8/255"),
                     AttackSpec.of("cw_l2", c=1e-3, num_steps=10,
                                   binary_search_steps=9, learning_rate=0.01,
                                   confidence=0.0, abort_early=True,
                                   batch_consistent=False),
                     AttackSpec.of("cw_l2", tag="cw_l2_strong", c=1.0,
                                   num_steps=100, batch_consistent=True)),
            episodes=2000, inner_steps=10, paper=TAFL_RESULTS, curves=False,
            kde=True, masking_check=True),
    )}


def names() -> Tuple[str, ...]:
  return tuple(EXPERIMENTS)


def get(name: str) -> ExperimentConfig:
  if name not in EXPERIMENTS:
    raise ConfigError(f"unknown experiment {name!r}; choose one of: "
                      f"{', '.join(EXPERIMENTS)}.")
  return EXPERIMENTS[name]
