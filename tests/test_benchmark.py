"""advmeta_jax.benchmark runs and reports every field (no timing is asserted)."""

import json
import math

import pytest

from advmeta_jax.benchmarks import benchmark
from advmeta_jax.config import Config


@pytest.mark.integration   # times a compiled train step
def test_train_step_benchmark_reports_its_fields():
  r = benchmark.run_single(dict(
      learner="maml", conv_impl="matmul", size=16, k_shot=1, n_way=3,
      q_query=2, task_batch_size=2, inner_steps=1, filters=4,
      first_order=False, steps=1))
  assert r["loss_finite"]
  for key in ("compile_s", "step_s", "tasks_per_s", "matmul_peak_flops",
              "peak_memory_bytes", "mfu"):
    assert math.isfinite(r[key]) and r[key] > 0, key
  # B·(9·steps·S + 3·Q)·f with S = 3, Q = 6 images per task.
  f = benchmark.models.conv4_forward_flops(image_size=16, channels=3,
                                           filters=4, num_classes=3)
  assert r["flops_per_step"] == 2 * (9 * 1 * 3 + 3 * 6) * f


def test_attack_benchmark_reports_throughput():
  r = benchmark.run_attack_single(dict(
      attack="pgd", hparams={"eps": "8/255", "step_size": "2/255",
                             "num_steps": 2},
      size=16, batch=4, filters=4, steps=1))
  assert r["images_per_s"] > 0 and r["call_s"] > 0


def test_analytic_flops_count_the_attack_and_first_order():
  cfg = dict(learner="maml", size=16, filters=4, n_way=3, k_shot=1, q_query=2,
             inner_steps=2, task_batch_size=2, attack_steps=3)
  f = benchmark.models.conv4_forward_flops(image_size=16, channels=3,
                                           filters=4, num_classes=3)
  assert benchmark.analytic_step_flops(cfg) == 2 * (9 * 2 * 3 + 3 * 6) * f
  assert benchmark.analytic_step_flops(dict(cfg, first_order=True)) == (
      2 * (3 * 2 * 3 + 3 * 6) * f)
  assert benchmark.analytic_step_flops(dict(cfg, learner="aq")) == (
      2 * (9 * 2 * 3 + 2 * 3 * 6 + 4 * 6) * f)


def test_variants_parse_and_unknown_options_are_refused():
  assert benchmark.variant_fields("remat+bf16") == dict(
      remat=True, first_order=False, compute_dtype="bfloat16",
      parallel_tasks=0)
  assert benchmark.variant_fields("base") == dict(
      remat=False, first_order=False, compute_dtype="float32",
      parallel_tasks=0)
  assert benchmark.variant_fields("p1+remat")["parallel_tasks"] == 1
  with pytest.raises(Exception, match="unknown option"):
    benchmark.variant_fields("fp8")


def test_pytorch_baseline_computes_the_same_meta_gradient():
  """The baseline is the same second-order MAML: same meta-loss and
  meta-gradient as advmeta_jax from the same parameters and tasks."""
  torch = pytest.importorskip("torch")
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from advmeta_jax.core import episodes  # pylint: disable=g-import-not-at-top
  from advmeta_jax.benchmarks import torch_baseline  # pylint: disable=g-import-not-at-top
  from advmeta_jax import training  # pylint: disable=g-import-not-at-top
  from advmeta_jax.config import Config  # pylint: disable=g-import-not-at-top
  exp = training.build(Config.make(
      learner="maml", dataset="cifar_fs", image_size=16, n_way=3, filters=4,
      inner_lr=0.1, inner_steps=2))
  params = benchmark.models.init_params(exp.model, jax.random.key(0),
                                        (16, 16, 3))
  k = jax.random.split(jax.random.key(1), 2)
  tasks = episodes.Task(
      jax.random.uniform(k[0], (2, 6, 16, 16, 3)),
      jax.numpy.tile(jax.numpy.arange(6) % 3, (2, 1)),
      jax.random.uniform(k[1], (2, 9, 16, 16, 3)),
      jax.numpy.tile(jax.numpy.arange(9) % 3, (2, 1)))
  (loss, _), grads = jax.value_and_grad(
      training.batch_outer_loss(exp.learner), has_aux=True)(
          params, tasks, jax.random.key(2))
  nchw = lambda a: torch.tensor(np.transpose(np.asarray(a), (0, 1, 4, 2, 3)))
  t_loss, t_grads = torch_baseline.meta_loss_and_grads(
      torch_baseline.params_from_jax(params),
      (nchw(tasks.support_images), torch.tensor(np.asarray(
          tasks.support_labels)).long(), nchw(tasks.query_images),
       torch.tensor(np.asarray(tasks.query_labels)).long()),
      inner_lr=0.1, steps=2)
  np.testing.assert_allclose(t_loss, float(loss), rtol=1e-5)
  expected = [g.detach().numpy() for g in torch_baseline.params_from_jax(
      grads)]
  for got, want in zip(t_grads, expected):
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-4, atol=2e-6)


def test_conv_section_checks_and_times_every_formulation():
  assert benchmark.conv_layer_shapes(84, filters=32) == [
      (0, 84, 3), (1, 42, 32), (2, 21, 32), (3, 10, 32)]
  r = benchmark.run_conv_layer(dict(
      layer=1, size=16, side=8, channels=4, filters=4, images=3,
      conv_impls=["matmul", "xla", "hybrid"], torch=True, steps=1))
  # forward, input gradient and kernel gradient: 3 × 2·N·H·W·9·C·F
  assert r["flops"] == 3 * 2 * 3 * 8 * 8 * 9 * 4 * 4
  assert {"matmul", "xla", "hybrid"} <= set(r["ms"])
  assert all(math.isfinite(t) and t > 0 for t in r["ms"].values())
  assert benchmark.conv_layer_shapes is benchmark.models.conv4_layer_shapes


def test_step_config_is_the_library_config_of_a_benchmark_row():
  """A row's config builds conv4 with the row's shape and the bound learner
  with the variant's memory options."""
  config = benchmark.step_config(dict(
      learner="aq", conv_impl="matmul", size=32, k_shot=5, n_way=5, q_query=15,
      task_batch_size=4, inner_steps=5, filters=32, attack_steps=3,
      **benchmark.variant_fields("p2+remat+bf16")))
  assert (config.image_size, config.k_shot, config.conv_impl) == (
      32, 5, "matmul")
  assert (config.remat, config.parallel_tasks, config.compute_dtype) == (
      True, 2, "bfloat16")
  assert config.train_attack_steps == 3
  exp = benchmark.training.build(config)
  assert exp.image_shape == (32, 32, 3)
  assert exp.learner.learner.name == "aq"


def test_unknown_section_and_attack_are_refused():
  from advmeta_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="unknown section"):
    benchmark.run(benchmark.Options(section="gpu"))
  with pytest.raises(ConfigError, match="no benchmark settings for 'foo'"):
    benchmark.attack_hparams("foo")


@pytest.mark.integration
def test_a_configuration_runs_in_its_own_process(tmp_path, capsys):
  """run() drives the children (python -m advmeta_jax.benchmarks.benchmark MODE JSON),
  prints the table and writes the JSON."""
  out = tmp_path / "bench.json"
  payload = benchmark.run(benchmark.Options(
      section="attacks", attacks=("fgsm",), sizes=(16,), attack_batch=2,
      filters=4, steps=1, out=str(out)))
  assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
  (r,) = payload["attack_results"]
  assert r["attack"] == "fgsm" and r["images_per_s"] > 0
  assert "| fgsm | eps=8/255 | 16 |" in capsys.readouterr().out


@pytest.mark.integration   # times the default (auto) train step
def test_the_default_variant_is_what_train_runs_by_default():
  """No --variants / --conv_impls: the `auto` settings, resolved as
  launch.train resolves them; the row reports what they resolved to."""
  from advmeta_jax.config import autotune  # pylint: disable=g-import-not-at-top
  o = benchmark.Options()
  assert o.variants == ("default",) and o.conv_impls == ("auto",)
  fields = benchmark.variant_fields("default")
  cfg = dict(learner="maml", conv_impl="auto", size=16, k_shot=1, n_way=3,
             q_query=2, task_batch_size=2, inner_steps=1, filters=4, steps=1,
             **fields)
  config = benchmark.step_config(cfg)
  # every loop setting at launch.train's default
  assert config.loop == Config().loop
  r = benchmark.run_single(cfg)
  want = autotune.resolve(config).loop
  assert r["resolved"] == {f: getattr(want, f) for f in autotune.AUTO_FIELDS}
  assert benchmark.resolved_label(r).endswith("(auto)")


def test_rows_name_configurations_beyond_the_product():
  assert benchmark.parse_rows(["maml:32:1", "aq:84:1"]) == [
      ("maml", 32, 1), ("aq", 84, 1)]
  with pytest.raises(Exception, match="not learner:size:shot"):
    benchmark.parse_rows(["maml:84"])


@pytest.mark.integration
def test_accelerator_suite_runs_tiny_and_writes_its_files(tmp_path):
  """The suite end to end at toy sizes on whatever backend is here (the
  CPU in CI): both files written and well formed, an auto entry printed."""
  from advmeta_jax.benchmarks import accelerator_suite  # pylint: disable=g-import-not-at-top
  payload = accelerator_suite.run(str(tmp_path), tiny=True)
  data = json.loads((tmp_path / "accelerator_suite.json").read_text())
  assert data == json.loads(json.dumps(payload))
  train, attack = data["train_results"], data["attack_results"]
  metatest = data["metatest_results"]
  assert len(train) + len(attack) + len(metatest) + len(
      data["skipped"]) == len(accelerator_suite.TINY_ROWS)
  (m,) = metatest
  assert "error" not in m, m
  assert m["episodes_per_s"] > 0 and m["accuracy_finite"]
  assert {r["learner"] for r in train} == {"maml", "aq"}
  assert {r["conv_impl"] for r in train} == {"matmul", "xla"}
  for r in train:
    assert "error" not in r, r
    for key in ("step_s", "tasks_per_s", "compile_s", "mfu",
                "peak_memory_bytes", "matmul_peak_flops"):
      assert math.isfinite(r[key]) and r[key] > 0, (key, r)
  assert [r["attack"] for r in attack] == ["autoattack"]
  assert attack[0]["images_per_s"] > 0
  md = (tmp_path / "accelerator_suite.md").read_text()
  assert md.startswith("# Accelerator suite: ")
  assert "| learner | image | shot | B | impl |" in md
  assert "| autoattack | 32 |" in md and "Goals (not asserted)" in md
  assert "| maml | conv4 | 84 | 1 | pgd |" in md
  assert data["entry"]["conv_impl"] in benchmark.models.CONV_IMPLS
  assert f'"{data["backend"]}": Entry(' in data["entry_text"]
  assert data["entry"]["episodes_at_once"] == 0   # the one meta-test row's
  assert "episodes_at_once=0" in data["entry_text"]
  assert data["entry_text"] in md


def test_every_accelerator_row_is_a_valid_configuration():
  """Each row of the suite's plan (full and tiny sizes) builds the library
  config its child process will run: backbone, robust objective and
  meta-test attack included; the ResNet-12 and meta-test rows are there."""
  from advmeta_jax.benchmarks import accelerator_suite  # pylint: disable=g-import-not-at-top
  from advmeta_jax.benchmarks import metatest_speed  # pylint: disable=g-import-not-at-top
  kinds = set()
  for row in accelerator_suite.PLAN:
    for shape in (accelerator_suite.FULL, accelerator_suite.TINY):
      mode, cfg = accelerator_suite.row_config(row, shape)
      assert mode in benchmark.CHILD_MODES
      if mode == "single_attack":
        continue
      config = benchmark.step_config(cfg)
      assert config.backbone == row[1].get("backbone", "conv4")
      if mode == "single_metatest":
        assert metatest_speed.test_attack(cfg).name == cfg["attack"]
    kinds.add((row[0], row[1].get("backbone", "conv4")))
  assert {("train", "resnet12"), ("metatest", "resnet12"),
          ("metatest", "conv4")} <= kinds


def test_flops_of_a_backbone_other_than_conv4_come_from_xla():
  """conv4's FLOPs are counted by hand; another backbone's are XLA's count
  of one image's forward pass, which for conv4 agrees with the hand count
  to within the few % of BatchNorm, ReLU and pooling it leaves out."""
  import jax  # pylint: disable=g-import-not-at-top
  cfg = dict(learner="maml", size=32, filters=32, n_way=5, k_shot=1,
             q_query=2, inner_steps=1, task_batch_size=2, conv_impl="xla")
  exp = benchmark.training.build(benchmark.step_config(cfg))
  params = benchmark.models.init_params(exp.model, jax.random.key(0),
                                        exp.image_shape)
  hand = benchmark.forward_flops(cfg)
  xla = benchmark.forward_flops(dict(cfg, backbone="conv4_64"), exp.model,
                                params)
  assert 0.9 * hand < xla < 1.1 * hand     # measured: 0.96
  assert math.isnan(benchmark.forward_flops(dict(cfg, backbone="resnet12")))
  # protonet: 3·(S + Q) forward-equivalents per task
  assert benchmark.analytic_step_flops(dict(cfg, learner="protonet"),
                                       10.0) == 2 * 3 * (5 + 10) * 10.0


@pytest.mark.integration
def test_the_metatest_section_times_adapt_attack_and_score(tmp_path, capsys):
  """--section=metatest: one row in its own process, episodes/s reported
  and the table printed."""
  out = tmp_path / "metatest.json"
  payload = benchmark.run(benchmark.Options(
      section="metatest", rows=("maml:16:1",), n_way=3, q_query=2,
      filters=4, eval_inner_steps=1, episodes_batch=2, steps=1, pgd_steps=2,
      episodes_at_once=("auto", "0"), out=str(out)))
  rows = payload["metatest_results"]
  assert [r["resolved"]["episodes_at_once"] for r in rows] == [1, 0]
  assert all(r["episodes_per_s"] > 0 and r["accuracy_finite"] for r in rows)
  printed = capsys.readouterr().out
  assert "| maml | conv4 | 16 | 1 | pgd |" in printed
  assert "| 2 | 1 |" in printed and "| 2 | 0 |" in printed


def test_the_suite_entry_takes_the_fastest_rows():
  """`choose_entry`: conv_impl, parallel_tasks and remat of the fastest
  MAML 84×84 1-shot B = 4 train row, episodes_at_once of the fastest MAML
  84×84 1-shot PGD meta-test row."""
  from advmeta_jax.benchmarks import accelerator_suite  # pylint: disable=g-import-not-at-top
  def train(impl, tasks_per_s):
    return dict(kind="train", learner="maml", nominal_size=84, k_shot=1,
                compute_dtype="float32", first_order=False, batch_label="B=4",
                tasks_per_s=tasks_per_s, step_s=4 / tasks_per_s,
                conv_impl=impl, variant="base",
                resolved=dict(conv_impl=impl, parallel_tasks=0, remat=False))
  def meta(at_once, episodes_per_s):
    return dict(learner="maml", nominal_size=84, k_shot=1, attack="pgd",
                episodes_per_s=episodes_per_s,
                resolved=dict(episodes_at_once=at_once))
  entry = accelerator_suite.choose_entry(
      [train("xla", 100.0), train("matmul", 150.0)],
      [meta(0, 9.0), meta(1, 12.0)])
  assert (entry["conv_impl"], entry["episodes_at_once"]) == ("matmul", 1)
  entry = accelerator_suite.choose_entry([train("xla", 1.0)],
                                         [meta(0, 9.0), meta(1, 2.0)])
  assert (entry["conv_impl"], entry["episodes_at_once"]) == ("xla", 0)
  assert accelerator_suite.choose_entry([train("xla", 1.0)])[
      "episodes_at_once"] == 0
  assert accelerator_suite.choose_entry([]) is None
