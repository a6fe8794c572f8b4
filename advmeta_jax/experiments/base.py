"""What a paper table is as a config, and the registry of tables.

An `ExperimentConfig` names the learners of a table (each a set of
`config.Config` overrides, flat field names), the meta-test protocol (test
cases, attacks, ε, episodes, test-time inner steps) and the published
accuracies (`PaperResult`), so that `python -m launch.reproduce
--experiment=NAME` trains every learner, runs the protocol and prints the
paper's number beside ours. Every experiment has a `shrink` form
(`launch.reproduce --shrink`): the same pipeline at toy scale on the offline
`digits` dataset, which the tests run end to end in seconds.

Each paper's tables live in a module of their own in this package (adml.py,
tafl.py, digits.py), which registers them (`register`); a new table is one
module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

from advmeta_jax.config import ProtocolConfig
from advmeta_jax.core import models
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


# The toy scale of every experiment's `shrink` form (offline digits, seconds).
SHRINK_TRAIN = dict(dataset="digits", data_dir=None, image_size=None,
                    num_steps=3, filters=4, task_batch_size=2, q_query=3,
                    train_attack_steps=2, log_every=1, checkpoint_every=3,
                    eval_batch_size=4)
# ... and the fixed-width backbones (conv4_64, conv4_wide, resnet12) at this
# fraction of their channels (resnet12: 4-10-20-40), as filters=4 is conv4's.
SHRINK_BACKBONE_WIDTH = 1 / 16
SHRINK_PROTOCOL = dict(test_episodes=4, test_inner_steps=2, attack_steps=2,
                       apgd_steps=2, square_queries=10)


# The protocol's defaults (its one declaration, `config.ProtocolConfig`).
_PROTOCOL = ProtocolConfig()


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
    (The protocol fields' defaults are `config.ProtocolConfig`'s, the
    settings of `launch.evaluate`; a table sets what its paper ran.)
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
    test_q_query: query images per class of a test episode (None: the
      rows' training q_query).
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
  cases: str = _PROTOCOL.cases
  attacks: Tuple[Any, ...] = (("pgd", "8/255"),)
  attack_steps: int = _PROTOCOL.attack_steps
  apgd_steps: int = _PROTOCOL.apgd_steps
  square_queries: int = _PROTOCOL.square_queries
  episodes: int = 600
  inner_steps: int = 10
  test_q_query: Optional[int] = None
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
      if not models.get_backbone(fields.get("backbone", "conv4")).uses_filters:
        fields["backbone_width"] = SHRINK_BACKBONE_WIDTH
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
    apgd_steps = SHRINK_PROTOCOL["apgd_steps"] if shrink else self.apgd_steps
    queries = (SHRINK_PROTOCOL["square_queries"] if shrink
               else self.square_queries)
    budgets = (a.eps if isinstance(a, AttackSpec) else a[1]
               for a in self.attacks)
    first_eps = next((eps for eps in budgets if eps is not None), "8/255")
    specs = []
    for attack in tuple(self.attacks) + tuple(
        (a, first_eps) if isinstance(a, str) else a for a in extra):
      spec = attack if isinstance(attack, AttackSpec) else default_test_attack(
          *attack, num_steps=steps, apgd_steps=apgd_steps,
          square_queries=queries)
      if shrink:   # e.g. a few Adam steps of C&W, same settings
        spec = spec.shrunk()
      specs.append(spec)
    return tuple(specs)

  def protocol(self, *, shrink: bool = False) -> ProtocolConfig:
    """The table's meta-test settings as `config.ProtocolConfig` (its cases,
    episodes, test-time inner steps and attack budgets; toy scale with
    `shrink`). The attacks themselves are `test_attacks`."""
    p = ProtocolConfig(cases=self.cases, attack_steps=self.attack_steps,
                       apgd_steps=self.apgd_steps,
                       square_queries=self.square_queries,
                       test_episodes=self.episodes,
                       test_inner_steps=self.inner_steps,
                       test_q_query=self.test_q_query)
    return dataclasses.replace(p, **SHRINK_PROTOCOL) if shrink else p

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


EXPERIMENTS: Dict[str, ExperimentConfig] = {}


def register(experiment: ExperimentConfig) -> ExperimentConfig:
  """Adds a table to the registry (the `--experiment` choices); returns it."""
  EXPERIMENTS[experiment.name] = experiment
  return experiment


def names() -> Tuple[str, ...]:
  return tuple(EXPERIMENTS)


def get(name: str) -> ExperimentConfig:
  if name not in EXPERIMENTS:
    raise ConfigError(f"unknown experiment {name!r}; choose one of: "
                      f"{', '.join(EXPERIMENTS)}.")
  return EXPERIMENTS[name]
