"""The launch scripts as a user runs them: `python -m launch.train ...`
(integration tier).

Each run is a fresh Python process (a few seconds of imports); the end-to-end
run is shared by the tests that inspect it. The refusals of bad flags are the
table of tests/test_bad_input.py.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from advmeta_jax import training
from advmeta_jax.config import autotune

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 300
TINY_RUN = ("--filters=8", "--q_query=3", "--task_batch_size=2",
            "--inner_steps=1", "--num_steps=3", "--log_every=1",
            "--checkpoint_every=2", "--eval_episodes=10",
            "--eval_inner_steps=2", "--eval_batch_size=5")
ROW = re.compile(r"^\| maml \| digits \| 5-way 1-shot \| "
                 r"(\d+\.\d\d) ± (\d+\.\d\d) \| 10 \|$", re.MULTILINE)


def _start(module, *args):
  return subprocess.Popen(
      [sys.executable, "-m", module, *map(str, args)], cwd=REPO,
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _finish(process):
  try:
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    process.kill()
    process.communicate()
    raise
  return subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                     stderr)


def _run(module, *args):
  return _finish(_start(module, *args))


def _assert_ok(result):
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr


def _assert_refused(result, line_start, *fragments):
  """Non-zero exit, no traceback, and one message line naming `fragments`."""
  assert result.returncode != 0, result.stdout + result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith(line_start)]
  assert len(lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])
  assert "|" not in result.stdout          # no results table
  return lines[0]


# --- a tiny run, end to end -------------------------------------------------

def _flat_config(text):
  """config.json's fields by flat name (the file nests them in sections)."""
  return {name: value for section in json.loads(text).values()
          for name, value in section.items()}


def _snapshot(workdir):
  checkpoints = workdir / "checkpoints"
  return {"config": (workdir / "config.json").read_text(),
          "metrics": (workdir / "metrics.jsonl").read_text(),
          "checkpoints": sorted(p.name for p in checkpoints.iterdir())}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """`launch.train` of TINY_RUN: `(workdir, result, snapshot of its files)`."""
  workdir = tmp_path_factory.mktemp("tiny_run") / "run"
  result = _run("launch.train", f"--workdir={workdir}", *TINY_RUN)
  _assert_ok(result)
  return workdir, result, _snapshot(workdir)


def test_train_prints_the_table_and_writes_the_run(tiny_run):
  workdir, result, snapshot = tiny_run
  assert "| learner | dataset | task | accuracy % (± 95% CI) | episodes |" in (
      result.stdout)
  row = ROW.search(result.stdout)
  assert row, result.stdout
  accuracy, ci = float(row[1]), float(row[2])
  assert 0 <= accuracy <= 100 and ci > 0

  config = _flat_config(snapshot["config"])
  for flag in TINY_RUN:
    name, value = flag[2:].split("=")
    assert config[name] == int(value), name
  assert config["dataset"] == "digits" and config["learner"] == "maml"

  lines = snapshot["metrics"].splitlines()
  assert len(lines) == 3
  metrics = [json.loads(l) for l in lines]
  assert [m["step"] for m in metrics] == [1, 2, 3]
  for m in metrics:
    assert {"step", "loss", "query_accuracy", "steps_per_sec"} <= set(m)
    assert np.isfinite(m["loss"]) and 0 <= m["query_accuracy"] <= 1
    assert m["steps_per_sec"] > 0

  # Saved at checkpoint_every=2 and at the end.
  assert snapshot["checkpoints"] == ["2", "3"]
  assert (workdir / "eval_test.md").read_text().strip() == (
      result.stdout.strip())
  summary = json.loads((workdir / "eval_test.json").read_text())["maml"]
  assert summary["episodes"] == 10
  assert f"{100 * summary['accuracy']:.2f}" == row[1]
  assert f"{100 * summary['accuracy_ci95']:.2f}" == row[2]

  # TensorBoard (WORKDIR/tb), read back with TensorBoard's own reader: the
  # logged steps of metrics.jsonl and the meta-test.
  scalars = training.read_scalars(str(workdir / "tb"))
  assert scalars["train/loss"] == {
      m["step"]: pytest.approx(m["loss"]) for m in metrics}
  assert set(scalars["train/step_time_s"]) == {1, 2, 3}
  assert scalars["test/accuracy"] == {3: pytest.approx(float(row[1]),
                                                       abs=0.01)}


def test_evaluate_reproduces_the_table_of_the_run(tiny_run, tmp_path):
  workdir, trained, _ = tiny_run
  out = tmp_path / "eval"
  result = _run("launch.evaluate", f"--workdir={workdir}", "--episodes=10",
                "--cases=clean/clean", f"--out={out}")
  _assert_ok(result)
  assert f"checkpoint: step 3 of {workdir}" in result.stdout
  # The same checkpoint on the same seeded episodes: the same accuracy.
  trained_row = ROW.search(trained.stdout)
  pivot = re.compile(r"^\| maml \| (\d+\.\d\d) ± (\d+\.\d\d) \|$",
                     re.MULTILINE)
  for text in (result.stdout, (out / "report.md").read_text()):
    row = pivot.search(text)
    assert row, text
    assert row.groups() == trained_row.groups()
  cells = json.loads((out / "results.json").read_text())["cells"]
  assert [(c["learner"], c["case"], c["episodes"]) for c in cells] == [
      ("maml", "clean/clean", 10)]
  assert (out / "results.csv").read_text().startswith("learner,case,")


def test_evaluate_refuses_the_40_percent_case_for_one_shot(tiny_run):
  workdir, _, _ = tiny_run
  result = _run("launch.evaluate", f"--workdir={workdir}", "--episodes=2",
                "--cases=all")
  _assert_refused(result, "error: ", "40%-adversarial support",
                  "k_shot=1")


def test_rerunning_the_same_command_resumes(tiny_run):
  workdir, trained, snapshot = tiny_run
  result = _run("launch.train", f"--workdir={workdir}", *TINY_RUN)
  _assert_ok(result)
  # Nothing retrained: no step taken, so metrics and checkpoints are as they
  # were; the config is unchanged; the meta-test gives the same row.
  assert _snapshot(workdir) == snapshot
  assert ROW.search(result.stdout)[0] == ROW.search(trained.stdout)[0]


def test_rerunning_with_another_config_is_refused(tiny_run):
  workdir, _, _ = tiny_run
  before = _snapshot(workdir)
  result = _run("launch.train", f"--workdir={workdir}", *TINY_RUN,
                "--filters=16")
  _assert_refused(result, "error: ", repr(str(workdir)), "different config",
                  "filters: 8 -> 16")
  assert _snapshot(workdir) == before
  assert _flat_config(before["config"])["filters"] == 8


def test_a_test_split_too_small_is_refused_before_training(tmp_path):
  """n_way fits the 6 train classes but not the 3 test classes: refused at
  once, not after a whole training run."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, classes in (("train", 6), ("test", 3)):
    for c in range(classes):
      folder = tmp_path / "data" / split / f"{split}{c}"
      folder.mkdir(parents=True)
      for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(
            folder / f"{i}.png")
  workdir = tmp_path / "run"
  result = _run("launch.train", f"--workdir={workdir}",
                "--dataset=image_folder", f"--data_dir={tmp_path / 'data'}",
                "--image_size=16", "--n_way=6", "--q_query=3")
  _assert_refused(result, "error: ", "n_way=6",
                  "3 classes of image_folder/test")
  assert not (workdir / "checkpoints").exists()


def test_a_refused_run_does_not_block_the_corrected_command(tmp_path):
  workdir = tmp_path / "run"
  _assert_refused(_run("launch.train", f"--workdir={workdir}", "--n_way=6"),
                  "error: ", "n_way=6", "5 classes", "digits/train")
  # The user fixes n_way; the next problem reported must be the real one
  # (q_query is too large), not a conflict with the refused run's config.
  result = _run("launch.train", f"--workdir={workdir}", "--q_query=500")
  _assert_refused(result, "error: ", "k_shot + q_query = 501")


# --- every launcher ---------------------------------------------------------

@pytest.mark.parametrize("module", ["launch.train", "launch.evaluate",
                                    "launch.reproduce", "launch.sweep",
                                    "launch.benchmark", "launch.certify"])
def test_every_launcher_defines_its_flags(module):
  """`--help` imports the launcher and defines all its flags (a flag defined
  twice, e.g. by the training and the protocol flags, fails here)."""
  result = _run(module, "--help")
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "Error" not in result.stderr, result.stderr[-3000:]
  assert f"{module.replace('.', '/')}.py:" in result.stdout  # its flags


def test_benchmark_prints_the_table_and_writes_json(tmp_path):
  out = tmp_path / "bench.json"
  result = _run("launch.benchmark", "--sizes=16", "--shots=1", "--filters=4",
                "--q_query=2", "--steps=1", "--inner_steps=1", f"--out={out}")
  _assert_ok(result)
  # No variant flags: what launch.train runs (the CPU's auto settings).
  entry = autotune.TABLE["cpu"]
  label = f"{entry.conv_impl} p{entry.tasks_per_device}" + (
      "+remat" if entry.remat else "")
  assert f"| maml | jax {label} (auto) | default | 16 | 1 |" in (
      result.stdout), result.stdout
  saved = json.loads(out.read_text())
  assert {"machine", "results", "torch_results"} <= set(saved)
  assert saved["results"][0]["loss_finite"]


def test_sweep_trains_the_grid_and_draws_the_heatmap(tmp_path):
  result = _run("launch.sweep", f"--workdir={tmp_path}", "--gammas=0",
                "--ks=1", "--filters=4", "--q_query=3", "--task_batch_size=2",
                "--inner_steps=1", "--num_steps=2", "--log_every=1",
                "--checkpoint_every=2", "--train_attack_steps=1",
                "--eval_episodes=2", "--eval_inner_steps=1",
                "--eval_batch_size=2", "--attack_steps=2")
  _assert_ok(result)
  # Its cases are fixed (clean and adversarial query): no --cases to ignore.
  helpfull = _run("launch.sweep", "--helpfull").stdout
  assert "--attacks" in helpfull and "--cases" not in helpfull
  assert re.search(r"^\| 0 \| \d+\.\d\d ± \d+\.\d\d \|$", result.stdout,
                   re.MULTILINE), result.stdout
  assert (tmp_path / "sensitivity_heatmap.png").stat().st_size > 0
  sweep = json.loads((tmp_path / "sweep.json").read_text())
  assert sweep["episodes"] == 2 and sweep["gammas"] == [0.0]


def test_reproduce_shrunk_writes_the_report_with_the_papers_numbers(tmp_path):
  """One table as a user reproduces it (`--shrink`: toy scale on digits),
  two of its rows; every table's shrunk run is a slow test of
  tests/test_protocol.py."""
  result = _run("launch.reproduce", "--experiment=adml_table1", "--shrink",
                "--rows=maml,adml", f"--workdir={tmp_path}")
  _assert_ok(result)
  report = (tmp_path / "report" / "report.md").read_text()
  assert "ours − paper" in report and "| adml |" in report, report
  assert "total wall time:" in result.stdout
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adml", "maml",
                                                         "report"]
