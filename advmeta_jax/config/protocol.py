"""The meta-test protocol's settings, declared once (`ProtocolConfig`), as
training's are in settings.py: launch.evaluate, launch.sweep and
launch.reproduce generate their meta-test flags from it
(`flags.define_protocol_flags`)."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from advmeta_jax.config.settings import attack_budget
from advmeta_jax.config.settings import choices
from advmeta_jax.config.settings import description
from advmeta_jax.config.settings import integer
from advmeta_jax.config.settings import positive_int
from advmeta_jax.config.settings import Section
from advmeta_jax.config.settings import setting
from advmeta_jax.errors import ConfigError
def _optional_positive_int(value, name: str) -> None:
  if value is not None:
    positive_int(value, name)


def _comma_list(value) -> Tuple[str, ...]:
  """A list flag's value: a comma-separated string or a sequence of strings."""
  if isinstance(value, str):
    return tuple(v.strip() for v in value.split(",") if v.strip())
  return tuple(value)


def _non_empty_list(value, name: str) -> None:
  if not _comma_list(value):
    raise ConfigError(f"{name} must name at least one value, got {value!r}.")


def _eps_list(value, name: str) -> None:
  _non_empty_list(value, name)
  for eps in _comma_list(value):
    attack_budget(eps, name)


@dataclasses.dataclass(frozen=True)
class ProtocolConfig(Section):
  """The meta-test protocol of trained runs: test cases, attacks and their
  budgets, episodes, test-time inner steps and the seed of the episodes.

  One declaration for every launcher that meta-tests (launch.evaluate,
  launch.sweep, launch.reproduce): each field is a flag of the same name
  with the same meaning wherever it appears (`flags.define_protocol_flags`).
  A run's own meta-test after training is `EvalConfig` (`eval_*`), the
  default of `test_episodes` and `test_inner_steps`.
  """
  cases: str = setting(
      "robust", "Test cases: 'all' (the six of ADML), 'robust' (clean/clean, "
      "clean/adv) or a comma-separated list of support/query with support in "
      "clean, adv, mixed (40% adversarial, K >= 2) and query in clean, adv.")
  attacks: Tuple[str, ...] = setting(
      ("pgd",), lambda: "Test-time attacks (comma-separated): " + ", ".join(
          f"{n} ({description('test_attack', n)})"
          if description("test_attack", n) else n
          for n in choices("test_attack")) + ".",
      check=_non_empty_list, kind=list)
  eps: Tuple[str, ...] = setting(
      ("8/255",), "Budgets (comma-separated): L-inf eps in [0, 1] (8/255, "
      "2/255) or L2 radii written l2:R in [0, 1]-pixel units (l2:0.5; at "
      "most sqrt(d)), e.g. 8/255,l2:0.5. Each eps attack runs at each, in "
      "its norm (an L-inf-only attack refuses an L2 budget); attacks "
      "without an eps ignore them.",
      check=_eps_list, kind=list)
  attack_steps: int = setting(
      20, "Iterations of PGD and MI-FGSM at test time.", check=positive_int)
  apgd_steps: int = setting(
      100, "Iterations of APGD, APGD-T and FAB-T at test time, alone and in "
      "autoattack (AutoAttack's 100).", check=positive_int)
  square_queries: int = setting(
      5000, "Queries of the Square attack at test time, alone and in "
      "autoattack (AutoAttack's 5000).", check=positive_int)
  test_episodes: Optional[int] = setting(
      None, "Meta-test episodes per cell (default: the run's eval_episodes, "
      "or the experiment's).", check=_optional_positive_int, kind=int)
  test_inner_steps: Optional[int] = setting(
      None, "Test-time inner steps (default: the run's eval_inner_steps, or "
      "the experiment's).", check=_optional_positive_int, kind=int)
  test_q_query: Optional[int] = setting(
      None, "Query images per class in a meta-test episode (default: the "
      "run's q_query, or the experiment's).", check=_optional_positive_int,
      kind=int)
  test_seed: int = setting(
      0, "Seed of the test episodes and attack random starts (the same for "
      "every learner).", check=integer)

  @property
  def attack_names(self) -> Tuple[str, ...]:
    return _comma_list(self.attacks)

  @property
  def eps_values(self) -> Tuple[str, ...]:
    return _comma_list(self.eps)


