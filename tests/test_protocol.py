"""The meta-test protocol: cases, CI, identical episodes, reports, configs."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advmeta_jax.learners import adaptations
from advmeta_jax.core import episodes
from advmeta_jax import evaluation
from advmeta_jax import experiments
from advmeta_jax import learners
from advmeta_jax.core import models
from advmeta_jax.evaluation import plots
from advmeta_jax.evaluation import protocol
from advmeta_jax.evaluation import reports
from advmeta_jax.experiments import reproduction
from advmeta_jax.errors import ConfigError
from advmeta_jax.evaluation import AttackSpec
from advmeta_jax.evaluation import TestCase

from conftest import tiny_config

FGSM = AttackSpec.of("fgsm", eps="8/255")


def test_confidence_interval_against_a_hand_computation():
  values = [1.0, 0.0, 1.0, 1.0]
  # mean .75; sample std sqrt(((.25)^2*3 + .75^2)/3) = 0.5; 1.96*0.5/sqrt(4).
  assert evaluation.confidence_interval_95(values) == pytest.approx(0.49)
  assert evaluation.confidence_interval_95([0.3]) == 0.0


def test_parse_cases():
  assert evaluation.parse_cases("all") == evaluation.ALL_CASES
  assert len(evaluation.ALL_CASES) == 6
  assert evaluation.parse_cases("clean/adv, mixed/clean") == (
      TestCase("clean", "adv"), TestCase("mixed", "clean"))
  with pytest.raises(ConfigError, match="support/query"):
    evaluation.parse_cases("clean")
  with pytest.raises(ConfigError, match="unknown support mode 'dirty'"):
    evaluation.parse_cases("dirty/clean")


def test_forty_percent_of_each_class_is_adversarial_at_five_shots():
  labels = jnp.repeat(jnp.arange(5), 5)
  mask = evaluation.mixed_support_mask(labels, 5, 5)
  assert np.asarray(mask).reshape(5, 5).sum(1).tolist() == [2] * 5
  # Shuffled labels: still 2 per class.
  perm = jax.random.permutation(jax.random.key(0), 25)
  mask = evaluation.mixed_support_mask(labels[perm], 5, 5)
  assert [int(mask[labels[perm] == c].sum()) for c in range(5)] == [2] * 5


def test_forty_percent_case_is_refused_at_one_shot():
  with pytest.raises(ConfigError, match=r"40%-adversarial.*k_shot=1"):
    evaluation.mixed_support_mask(jnp.arange(5), 5, 1)
  assert evaluation.mixed_adv_count(1) is None
  assert evaluation.mixed_adv_count(5) == 2


@pytest.fixture(scope="module")
def tiny_model():
  model = models.make_conv4(num_classes=5, filters=4, image_size=16)
  apply_fn = models.make_apply_fn(model)
  params = [models.init_params(model, jax.random.key(i), (16, 16, 1))
            for i in range(2)]
  return apply_fn, params


@pytest.fixture(scope="module")
def test_source(digits_test):
  return episodes.make_source(digits_test)


def test_mixed_support_attacks_exactly_the_masked_images(tiny_model,
                                                         test_source):
  apply_fn, (params, _) = tiny_model
  adaptation = adaptations.gradient_adaptation(apply_fn, inner_lr=0.01)
  task = episodes.sample_task(jax.random.key(1), test_source, n_way=5,
                              k_shot=5, q_query=2)
  xs = jax.jit(lambda p, t, k: evaluation.attack_support(
      adaptation, p, t, k, mode="mixed", attack=FGSM.build(), n_way=5))(
          params, task, jax.random.key(2))
  changed = np.abs(np.asarray(xs - task.support_images)).reshape(25, -1).max(1)
  mask = np.asarray(evaluation.mixed_support_mask(task.support_labels, 5, 5))
  assert (changed[~mask] == 0).all()
  assert (changed[mask] > 0).all()
  assert changed.max() <= 8 / 255 + 1e-6


class _PixelAdaptation:
  """A fake learner whose logits ignore the parameters: per-episode results
  then depend on the episode only."""

  @staticmethod
  def make():
    w = jax.random.normal(jax.random.key(3), (256, 5))
    logits = lambda state, x: x.reshape(x.shape[0], -1) @ w
    adapt = lambda params, xs, ys, *, num_steps, track_fn=None: (params, {})
    initial = lambda params, xs, ys, x: logits(params, x)
    return adaptations.Adaptation(adapt, logits, initial)


def test_same_seed_gives_every_learner_the_same_episodes(test_source):
  adaptation = _PixelAdaptation.make()
  kwargs = dict(case=TestCase("clean", "adv"), attack=FGSM.build(), n_way=5,
                k_shot=1, q_query=2, inner_steps=1, num_episodes=6)
  a = evaluation.run_case(adaptation, {"p": jnp.zeros(())}, test_source,
                          batch_size=3, **kwargs)
  b = evaluation.run_case(adaptation, {"p": jnp.ones(())}, test_source,
                          batch_size=2, **kwargs)   # other params and batches
  np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
  c = evaluation.run_case(adaptation, {"p": jnp.zeros(())}, test_source,
                          batch_size=3, seed=1, **kwargs)
  assert not np.allclose(a.loss, c.loss)


def test_episodes_at_once_changes_no_result(test_source):
  """The meta-test's episodes one at a time, in rounds of two (the last
  round short) or all vmapped give the same adapted and attacked results."""
  model = models.make_conv4(num_classes=5, filters=4, image_size=16,
                            conv_impl="hybrid")   # per-episode kernels
  params = models.init_params(model, jax.random.key(0), (16, 16, 1))
  adaptation = adaptations.gradient_adaptation(models.make_apply_fn(model),
                                               inner_lr=0.1)
  kwargs = dict(case=TestCase("clean", "adv"), n_way=5, k_shot=1, q_query=2,
                inner_steps=1, num_episodes=3, batch_size=3,
                attack=evaluation.default_test_attack("pgd", "8/255",
                                                     num_steps=1).build())
  runs = [evaluation.run_case(adaptation, params, test_source,
                              episodes_at_once=n, **kwargs) for n in (0, 1, 2)]
  for other in runs[1:]:
    np.testing.assert_array_equal(other.accuracy, runs[0].accuracy)
    np.testing.assert_allclose(other.loss, runs[0].loss, rtol=1e-5)
    np.testing.assert_allclose(other.clean_loss, runs[0].clean_loss,
                               rtol=1e-5)
  assert evaluation.resolve_episodes_at_once(None) == 1   # the cpu entry
  with pytest.raises(ConfigError, match="episodes_at_once must be"):
    evaluation.resolve_episodes_at_once(-1)


@pytest.fixture(scope="module")
def two_runs(tiny_model):
  _, (p0, p1) = tiny_model
  config = tiny_config(filters=4, k_shot=5, q_query=2, eval_batch_size=4)
  return [protocol.Run("maml", config, p0),
          protocol.Run("aq", config.replace(learner="aq"), p1)]


# Every support mode, both query modes and the KDE's clean/adv; all six
# cases run end to end in the integration tier (ADML's Table 1, shrunk, and
# the analysis notebook).
CASES = evaluation.parse_cases("clean/clean,clean/adv,adv/clean,mixed/adv")


@pytest.fixture(scope="module")
def case_cells(two_runs, digits_test):
  return protocol.evaluate_runs(
      two_runs, cases=CASES, attack_specs=(FGSM,),
      num_episodes=4, inner_steps=1, curves=True, adversarial_curves=True,
      data=digits_test,
      log=lambda _: None)


def test_the_cases_give_a_cell_each_per_learner(case_cells):
  assert [c.name for c in evaluation.ALL_CASES] == [
      "clean/clean", "clean/adv", "adv/clean", "adv/adv", "mixed/clean",
      "mixed/adv"]
  per_learner = {}
  for cell in case_cells:
    per_learner.setdefault(cell.run, []).append(cell.case.name)
  assert per_learner == {name: [c.name for c in CASES]
                         for name in ("maml", "aq")}
  for cell in case_cells:
    assert cell.result.num_episodes == 4
    assert cell.result.step_accuracy.shape == (4, 2)   # before + 1 step
    if cell.case.query == "clean":
      np.testing.assert_array_equal(cell.result.loss, cell.result.clean_loss)


def test_reports_are_written(case_cells, tmp_path):
  report = reports.write_reports(case_cells, str(tmp_path), curves=True,
                                 kde=True, kde_threshold=0.1)
  assert isinstance(report, reports.Report)
  written = report.files
  for key in ("report", "csv", "json", "kde", "ecdf", "paired csv"):
    assert (tmp_path / written[key].split("/")[-1]).stat().st_size > 0
  assert any(k.startswith("curves") for k in written)
  pngs = sorted(tmp_path.glob("*.png"))   # curves, KDE, ECDF
  assert len(pngs) == 3 and all(p.stat().st_size > 5000 for p in pngs)
  rows = json.loads((tmp_path / "results.json").read_text())["cells"]
  assert len(rows) == 8
  csv_lines = (tmp_path / "results.csv").read_text().splitlines()
  assert len(csv_lines) == 9
  text = (tmp_path / "report.md").read_text()
  assert text == report.markdown + "\n"
  assert "| maml |" in text and "mixed/adv (fgsm ε=8/255)" in text
  assert "share of tasks > 0.1" in text
  assert "| aq − maml | clean/clean |" in text   # every row against the first
  assert "## Worst tasks" in text


def test_runs_with_different_episode_shapes_are_refused(two_runs):
  other = protocol.Run("x", two_runs[0].config.replace(k_shot=1),
                       two_runs[0].params)
  with pytest.raises(ConfigError, match="cannot share a table"):
    protocol.evaluate_runs([two_runs[0], other], cases=(TestCase(),),
                           attack_specs=())


def test_the_test_episodes_take_the_protocols_query_count(two_runs,
                                                         digits_test,
                                                         monkeypatch):
  """`q_query` sets the queries per class of the test episodes (trained
  with 2 here); without it, the runs' own."""
  seen = []
  real = evaluation.run_case
  def recording(*args, **kwargs):
    seen.append(kwargs["q_query"])
    return real(*args, **kwargs)
  monkeypatch.setattr(protocol.evaluation, "run_case", recording)
  for q_query in (1, None):
    (cell,) = protocol.evaluate_runs(
        two_runs[:1], cases=(TestCase(),), attack_specs=(), num_episodes=2,
        inner_steps=1, data=digits_test, log=lambda _: None, q_query=q_query)
    assert cell.result.num_episodes == 2
  assert seen == [1, 2]


def test_adml_tables_test_on_k_queries_per_class_as_finns_code():
  """Finn's MAML code, which ADML ran, draws k support + k query images per
  class at test (600 episodes) and 15 queries in MiniImageNet training."""
  for table, k_shot in ((1, 1), (2, 5), (3, 1), (4, 5)):
    exp = experiments.get(f"adml_table{table}")
    assert exp.protocol().test_q_query == k_shot
    assert exp.protocol(shrink=True).test_q_query == k_shot
    assert exp.episodes == 600
    for row in exp.row_names:
      assert exp.train_fields(row)["q_query"] == 15
  # The paper's CI of MAML's clean 1-shot cell fits 5 queries per task:
  # 1.96·√(p(1−p)/5)/√600 with p = 48.47%.
  p = 0.4847
  assert round(100 * 1.96 * np.sqrt(p * (1 - p) / 5) / np.sqrt(600), 2) == \
      pytest.approx(1.78, abs=0.02)


def test_masking_check_warns_on_an_untrained_model(two_runs, digits_test,
                                                   tmp_path):
  checks = protocol.masking_checks(
      two_runs[:1], (AttackSpec.of("pgd", eps="8/255", step_size=2 / 255,
                                   num_steps=5),), data=digits_test,
      inner_steps=1)
  (report,) = checks.values()
  assert set(report.accuracies) >= {"clean", "fgsm", "pgd5", "pgd20"}
  reports.write_reports([], str(tmp_path), masking=checks)
  text = (tmp_path / "report.md").read_text()
  assert "Gradient-masking checks" in text
  assert ("WARNING maml" in text) == (not report.ok)


def test_plots_are_written_and_non_empty(tmp_path):
  rng = np.random.default_rng(0)
  curves = {"clean/clean": {"maml": {"loss": [2, 1, .5],
                                     "accuracy": [.2, .5, .7]}}}
  paths = [
      plots.plot_curves(curves, str(tmp_path / "c.png")),
      plots.plot_kde({"aq": rng.gamma(2, .5, 100), "tafl": rng.gamma(2, .3, 100),
                      "floor": np.full(10, 1e-3)}, str(tmp_path / "k.png"),
                     threshold=1.0),
      plots.plot_heatmap(rng.uniform(20, 40, (2, 3)), [0, 2], [.5, 1, 2],
                         str(tmp_path / "h.png")),
      plots.plot_training(
          {"maml": [{"step": 1, "loss": 1.5, "query_accuracy": .4},
                    {"step": 2, "loss": 1.2, "query_accuracy": .5}],
           "tafl": [{"step": 1, "loss": 2.0, "query_accuracy": .3,
                     "adv_query_accuracy": .1}]}, str(tmp_path / "t.png"))]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert plots.share_above([0.5, 1.5, 2.0, 1.0], 1.0) == 0.5


def test_paper_numbers_were_transcribed():
  assert len(experiments.ADML_RESULTS) == 160     # 4 tables, 4 learners
  assert len(experiments.TAFL_RESULTS) == 12
  table1 = experiments.get("adml_table1")
  cell = table1.paper_result(
      "adml", AttackSpec.of("fgsm", eps="2/255"), TestCase("adv", "adv"))
  assert (cell.accuracy, cell.ci95) == (40.70, 1.74)
  tafl = experiments.get("tafl_table1")
  cell = tafl.paper_result("tafl", evaluation.default_test_attack("cw_l2", None),
                           TestCase("clean", "adv"))
  assert cell.accuracy == 27.75
  assert tafl.paper_result("maml", None, TestCase()) is None


def test_unknown_experiment_lists_the_choices():
  with pytest.raises(ConfigError, match="adml_table1"):
    experiments.get("adml_table9")


# What each table's shrunk run must show beyond the common checks.
_SHRUNK_EXTRAS = {
    "tafl_table1": dict(files={"kde"}),
    "adml_table2": dict(cases={c.name for c in evaluation.ALL_CASES},
                        files={"curves"}),
}


def _shrunk_form(name: str) -> str:
  """What `launch.reproduce --shrink` runs for a table: its rows' toy
  configs, test cases, attacks and protocol."""
  e = experiments.get(name)
  return repr(([(r, sorted(e.train_fields(r, shrink=True).items()))
                for r in e.row_names], e.test_cases(),
               e.test_attacks(shrink=True), e.protocol(shrink=True)))


def _distinct_shrunk_tables() -> list:
  """Every table, less those whose shrunk run is another's (the AQ tables
  of MiniImageNet and CIFAR-FS differ only in the dataset, which --shrink
  replaces by the offline digits)."""
  seen, out = set(), []
  for name in experiments.names():
    form = _shrunk_form(name)
    if form not in seen:
      seen.add(form)
      out.append(name)
  return out


def test_tables_with_the_same_shrunk_run_differ_only_in_their_data():
  """The shrunk tables the slow test leaves out run exactly what one it
  keeps runs; at full scale they differ in the dataset alone."""
  kept = _distinct_shrunk_tables()
  for name in set(experiments.names()) - set(kept):
    twin = next(k for k in kept if _shrunk_form(k) == _shrunk_form(name))
    a, b = experiments.get(name), experiments.get(twin)
    fields = lambda e: [{k: v for k, v in e.train_fields(r).items()
                         if k not in ("dataset", "image_size")}
                        for r in e.row_names]
    assert fields(a) == fields(b) and a.row_names == b.row_names, (name, twin)


@pytest.mark.slow
@pytest.mark.parametrize("name", _distinct_shrunk_tables())
def test_every_experiment_runs_end_to_end_shrunk(name, tmp_path):
  """Each table as a user reproduces it, `launch.reproduce --shrink`, in a
  process of its own (one table per process, as the launcher runs them):
  every learner row trained and tested, every cell finite, the paper's
  numbers beside ours, every file written and named in the output. Tables
  whose shrunk run is another's run once (`_distinct_shrunk_tables`)."""
  experiment = experiments.get(name)
  workdir = tmp_path / name
  result = subprocess.run(
      [sys.executable, "-m", "launch.reproduce", f"--experiment={name}",
       "--shrink", f"--workdir={workdir}"],
      cwd=pathlib.Path(__file__).parent.parent, capture_output=True,
      text=True, timeout=1800, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  report = (workdir / "report" / "report.md").read_text()
  assert report in result.stdout
  payload = json.loads((workdir / "report" / "results.json").read_text())
  cells = payload["cells"]
  assert {c["learner"] for c in cells} == {
      r for r in experiment.row_names
      if dict(experiment.rows)[r]["learner"] in learners.names()}
  assert all(np.isfinite(c["accuracy"]) for c in cells)
  attacks_run = {(c["attack"], c["eps"]) for c in cells} - {("none", "")}
  assert attacks_run == {(a.name, a.eps or "")
                         for a in experiment.test_attacks(shrink=True)}
  if experiment.paper:
    assert "ours − paper" in report
  written = result.stdout.split("written: ")[1].splitlines()[0].split(", ")
  for path in written:
    assert pathlib.Path(path).stat().st_size > 0, path
  extras = _SHRUNK_EXTRAS.get(name, {})
  if "cases" in extras:
    assert {c["case"] for c in cells} == extras["cases"]
  for kind in extras.get("files", ()):
    assert any(pathlib.Path(p).name.startswith(kind) for p in written), (
        kind, written)


@pytest.mark.integration   # launch.train's and launch.evaluate's library calls end to end
def test_train_and_test_writes_the_meta_test_and_evaluate_repeats_it(
    tmp_path):
  """launch.train's library call: trains, meta-tests, writes eval_test.md and
  eval_test.json; launch.evaluate's reads the run back and gets the same
  accuracy on the same episodes."""
  config = tiny_config(filters=4, num_steps=2, eval_episodes=4,
                       eval_batch_size=2)
  workdir = tmp_path / "run"
  out = reproduction.train_and_test(config, str(workdir), progress=False)
  assert isinstance(out, reproduction.TrainTestResult)
  assert int(out.state.step) == 2 and out.result.num_episodes == 4
  assert (workdir / "eval_test.md").read_text() == out.report.markdown + "\n"
  assert out.report.markdown.startswith(
      "| learner | dataset | task | accuracy % (± 95% CI) | episodes |")
  accuracy = evaluation.format_accuracy(out.result.mean, out.result.ci95)
  row = f"| maml | digits | 5-way 1-shot | {accuracy} | 4 |"
  assert row in out.report.markdown
  summary = json.loads((workdir / "eval_test.json").read_text())
  assert summary == {"maml": json.loads(json.dumps(out.result.summary()))}
  assert set(out.report.files) == {"report", "json"}

  logged = []
  evaluated = reproduction.evaluate_workdirs(
      [str(workdir)], cases=(TestCase(),), attack_specs=(),
      out=str(tmp_path / "eval"), log=logged.append)
  assert logged[0] == f"checkpoint: step 2 of {workdir} (maml)"
  (cell,) = evaluated.cells
  assert evaluated.masking is None and evaluated.runs[0].step == 2
  np.testing.assert_array_equal(cell.result.accuracy, out.result.accuracy)
  assert evaluated.report.markdown.startswith(
      "# Meta-test on digits (test classes), 5-way 1-shot")
  assert (tmp_path / "eval" / "report.md").read_text() == (
      evaluated.report.markdown + "\n")
  with pytest.raises(ConfigError, match="share a row name"):
    reproduction.evaluate_workdirs([str(workdir)] * 2, cases=(TestCase(),),
                                   attack_specs=(), log=lambda _: None)

  no_test = reproduction.train_and_test(config.replace(eval_episodes=0),
                                        str(workdir), progress=False)
  assert no_test.result is None and no_test.report is None


_PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "advmeta_jax"


def test_no_module_is_over_600_lines():
  for path in _PACKAGE.rglob("*.py"):
    assert len(path.read_text().splitlines()) <= 600, path
