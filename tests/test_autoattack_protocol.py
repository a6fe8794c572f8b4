"""AutoAttack and its components as attacks of the meta-test protocol:
protocol defaults, the per-stage report of a cell, the report section, the
launchers' flags and the reproduction configs' extra attacks."""

import json

from absl import flags
import jax
import numpy as np
import pytest

from advmeta_jax import attacks
from advmeta_jax.training import builders
from advmeta_jax import evaluation
from advmeta_jax import experiments
from advmeta_jax.core import models
from advmeta_jax.evaluation import protocol
from advmeta_jax.evaluation import reports
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.evaluation import TestCase

from conftest import tiny_config

# Small budgets: the protocol plumbing, not the attacks' strength, is tested.
SMALL = dict(apgd_steps=3, square_queries=6)


@pytest.mark.parametrize("name,expected", [
    ("apgd_t", AttackSpec.of("apgd_t", eps="8/255", num_steps=100)),
    ("fab", AttackSpec.of("fab", eps="8/255", num_steps=100, targeted=True)),
    ("fab_t", AttackSpec.of("fab", eps="8/255", num_steps=100, targeted=True)),
    ("square", AttackSpec.of("square", eps="8/255", num_queries=5000)),
    ("autoattack", AttackSpec.of("autoattack", eps="8/255",
                                 version="standard", num_steps=100,
                                 num_queries=5000)),
])
def test_protocol_defaults_are_autoattacks_settings(name, expected):
  spec = evaluation.default_test_attack(name, "8/255")
  assert spec == expected
  assert callable(spec.build())
  assert spec.label == f"{expected.name} ε=8/255"


def test_unknown_test_attack_lists_the_choices():
  with pytest.raises(ConfigError, match="unknown attack 'aa'; choose one of: "
                     "apgd, apgd_t, autoattack, cw_l2, fab, fgsm"):
    evaluation.default_test_attack("aa", "8/255")


def test_autoattack_attack_carries_its_report():
  attack = evaluation.default_test_attack("autoattack", "8/255",
                                          **SMALL).build()
  assert callable(attack.with_report)
  assert not hasattr(evaluation.default_test_attack("pgd", "8/255").build(),
                     "with_report")


@pytest.fixture(scope="module")
def cells(digits_test):
  config = tiny_config(filters=4, k_shot=1, q_query=3, eval_batch_size=2)
  exp = builders.build(config)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  runs = [protocol.Run("maml", config, params)]
  specs = (evaluation.default_test_attack("autoattack", "8/255", **SMALL),
           evaluation.default_test_attack("pgd", "8/255", num_steps=2))
  return protocol.evaluate_runs(
      runs, cases=(TestCase(), TestCase("clean", "adv")), attack_specs=specs,
      num_episodes=4, inner_steps=1, data=digits_test, log=lambda _: None)


def test_a_cell_under_autoattack_has_its_stages_in_order(cells):
  staged = [c for c in cells if c.result.stages]
  assert [(c.case.name, c.attack.name) for c in staged] == [
      ("clean/adv", "autoattack")]
  result = staged[0].result
  assert list(result.stages) == ["clean", "apgd-ce", "apgd-t", "fab-t",
                                 "square"]
  values = np.stack(list(result.stages.values()))       # [stages, episodes]
  assert values.shape == (5, 4)
  assert (np.diff(values, axis=0) <= 1e-6).all()         # monotone per episode
  clean = [c for c in cells if c.case.name == "clean/clean"][0]
  np.testing.assert_allclose(result.stages["clean"], result.clean_accuracy)
  np.testing.assert_allclose(result.stages["clean"], clean.result.accuracy)
  summary = result.summary()["stages"]
  assert summary["square"]["accuracy"] == pytest.approx(
      float(result.stages["square"].mean()))
  for c in cells:
    if c.attack is None or c.attack.name != "autoattack":
      assert c.result.stages is None and "stages" not in c.result.summary()


def test_report_has_the_stage_table(cells, tmp_path):
  report = reports.write_reports(cells, str(tmp_path))
  text = report.markdown
  assert "## AutoAttack, robust accuracy after each stage" in text
  assert ("| learner | support/query | attack | clean % | after apgd-ce % | "
          "after apgd-t % | after fab-t % | after square % | "
          "re-evaluated % |") in text
  payload = json.loads((tmp_path / "results.json").read_text())
  (entry,) = payload["autoattack_stages"]
  assert entry["learner"] == "maml" and entry["attack"] == "autoattack ε=8/255"
  assert [s["stage"] for s in entry["stages"]] == [
      "clean", "apgd-ce", "apgd-t", "fab-t", "square"]
  accuracies = [s["accuracy"] for s in entry["stages"]]
  assert accuracies == sorted(accuracies, reverse=True)


def test_launcher_flags_build_autoattack_with_its_budgets():
  from advmeta_jax.cli import common  # pylint: disable=g-import-not-at-top
  specs = common.attack_specs(
      ["autoattack", "square", "apgd_t", "fab", "cw_l2"], ["4/255", "8/255"],
      attack_steps=3, apgd_steps=7, square_queries=11)
  assert [(s.name, s.eps) for s in specs] == [
      ("autoattack", "4/255"), ("autoattack", "8/255"), ("square", "4/255"),
      ("square", "8/255"), ("apgd_t", "4/255"), ("apgd_t", "8/255"),
      ("fab", "4/255"), ("fab", "8/255"), ("cw_l2", None)]
  assert dict(specs[0].hparams) == dict(eps="4/255", version="standard",
                                        num_steps=7, num_queries=11)
  assert dict(specs[2].hparams)["num_queries"] == 11
  assert dict(specs[4].hparams)["num_steps"] == 7
  with pytest.raises(ConfigError, match="unknown attack 'deepfool'"):
    common.attack_specs(["deepfool"], ["8/255"])
  flag_values = flags.FlagValues()
  common.define_protocol_flags(flag_values=flag_values)
  text = flag_values["attacks"].help    # the registry's test attacks
  for name in ("apgd_t (APGD-T", "fab (FAB-T", "square (Square",
               "autoattack (AutoAttack", "cw_l2_strong (C&W-L2"):
    assert name in text
  assert "AutoAttack's 5000" in flag_values["square_queries"].help


def test_experiments_take_extra_attacks_at_their_first_eps():
  exp = experiments.get("tafl_table1")
  specs = exp.test_attacks(extra=("autoattack",))
  assert specs[:-1] == exp.test_attacks()
  assert specs[-1] == evaluation.default_test_attack("autoattack", "0.05")
  shrunk = exp.test_attacks(shrink=True, extra=("autoattack",))[-1]
  assert dict(shrunk.hparams)["num_queries"] == (
      experiments.SHRINK_PROTOCOL["square_queries"])
  adml = experiments.get("adml_table1").test_attacks(extra=("square",))
  assert adml[-1] == evaluation.default_test_attack("square", "2/255")


def test_registry_canonical_names():
  assert attacks.canonical_name("apgd_ce") == "apgd"
  assert attacks.canonical_name("fab-t") == "fab"
  assert attacks.canonical_name("autoattack") == "autoattack"
  with pytest.raises(ConfigError, match="unknown attack"):
    attacks.canonical_name("deepfool")
