"""The PyTorch variants of the benchmark compute what advmeta_jax computes.

Train step (torch_variants.py, torch_data_parallel.py): each variant's
meta-loss and meta-gradient equal the plain loop's in float64 (to rounding)
and advmeta_jax's in float32. Meta-test (torch_metatest.py): the adapted
logits equal advmeta_jax's, PGD from the same start equals
`attacks.pgd_iterations` element-wise, and the three ways agree.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

from advmeta_jax import training
from advmeta_jax.attacks import linf
from advmeta_jax.benchmarks import benchmark
from advmeta_jax.benchmarks import metatest_speed
from advmeta_jax.benchmarks import torch_baseline
from advmeta_jax.benchmarks import torch_metatest
from advmeta_jax.benchmarks import torch_variants
from advmeta_jax.config import Config
from advmeta_jax.core import episodes
from advmeta_jax.core import models

# 3-way 2-shot, 3 queries per class, 3 tasks, 16×16, F = 4, 2 inner steps.
TINY = dict(size=16, n_way=3, k_shot=2, q_query=3, task_batch_size=3)
LR, STEPS = 0.1, 2
ATTACK = dict(eps=8 / 255, step_size=2 / 255, steps=3)


def _float64_problem():
  params = [p.detach().double() for p in torch_baseline.init_params(
      filters=4, channels=3, image_size=16, num_classes=3)]
  return params, torch_baseline.random_tasks(TINY, dtype=torch.float64)


def _plain(params, tasks, **kw):
  return torch_baseline.meta_loss_and_grads(
      [p.clone().requires_grad_() for p in params], tasks, inner_lr=LR,
      steps=STEPS, **kw)


def _assert_same(loss, grads, want_loss, want_grads, rtol):
  loss = float(loss.detach()) if torch.is_tensor(loss) else loss
  np.testing.assert_allclose(loss, want_loss, rtol=rtol)
  for got, want in zip(grads, want_grads):
    scale = float(want.abs().max())
    np.testing.assert_allclose(got.detach().numpy(), want.numpy(),
                               rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("variant", [
    "func_vmap", "grouped",
    # spawns two processes
    pytest.param("two_process", marks=pytest.mark.integration),
    # torch.compile: minutes of compilation on 2 cores
    pytest.param("compiled", marks=pytest.mark.slow)])
def test_a_variant_computes_the_plain_loops_maml_step_in_float64(variant):
  params, tasks = _float64_problem()
  want_loss, want = _plain(params, tasks)
  loss, grads = torch_variants.meta_loss_and_grads(
      variant, params, tasks, inner_lr=LR, steps=STEPS)
  _assert_same(loss, grads, want_loss, want, rtol=1e-11)


@pytest.mark.parametrize("variant", ["func_vmap", "grouped"])
def test_a_variant_computes_the_plain_loops_aq_step_in_float64(variant):
  """AQ: the same PGD random starts (drawn as the plain loop draws them),
  so the same adversarial queries and meta-gradient."""
  params, tasks = _float64_problem()
  want_loss, want = _plain(params, tasks, learner="aq", attack=ATTACK,
                           generator=torch.Generator().manual_seed(5))
  theta = [p.clone().requires_grad_() for p in params]
  step = torch_variants.make_step(variant, theta, inner_lr=LR, steps=STEPS,
                                  learner="aq", attack=ATTACK)
  starts = torch_variants.pgd_starts(tasks, ATTACK,
                                     torch.Generator().manual_seed(5))
  loss, grads = step(theta, tasks, starts)
  _assert_same(loss, grads, want_loss, want, rtol=1e-11)


def test_the_tuned_loops_channels_last_layout_computes_the_same_step():
  """The tuned variant's channels-last tasks and kernels change the memory
  layout only."""
  params, tasks = _float64_problem()
  want_loss, want = _plain(params, tasks)
  nhwc = torch_variants._nhwc  # pylint: disable=protected-access
  cl_tasks = tuple(nhwc(t) if t.dim() == 5 else t for t in tasks)
  assert cl_tasks[0][0].is_contiguous(memory_format=torch.channels_last)
  cl_params = [p.contiguous(memory_format=torch.channels_last)
               if p.dim() == 4 else p for p in params]
  loss, grads = _plain(cl_params, cl_tasks)
  _assert_same(loss, grads, want_loss, want, rtol=1e-11)


@pytest.mark.slow   # torch.compile: a minute or more of compilation
def test_compiling_the_plain_loop_fails_at_the_double_backward():
  """Where torch.compile stops: conv4 compiled, then differentiated twice
  (the plain loop's meta-gradient) raises `COMPILE_FAILURE`."""
  params = torch_baseline.init_params(filters=4, channels=3, image_size=16,
                                      num_classes=3)
  x, y = torch.rand(6, 3, 16, 16), torch.arange(6) % 3
  logits = torch.compile(torch_baseline.conv4)(params, x)
  grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y),
                              params, create_graph=True)
  with pytest.raises(RuntimeError) as e:
    sum((g ** 2).sum() for g in grads).backward()
  assert str(e.value).splitlines()[0] in torch_variants.COMPILE_FAILURE


@pytest.fixture(scope="module")
def ours():
  """advmeta_jax's MAML (the library's learner and config) on 2 tasks: the
  experiment, θ, the tasks and the jitted meta-loss and meta-gradient."""
  exp = training.build(Config.make(
      learner="maml", dataset="cifar_fs", image_size=16, n_way=3, filters=4,
      inner_lr=LR, inner_steps=STEPS))
  params = models.init_params(exp.model, jax.random.key(0), (16, 16, 3))
  k = jax.random.split(jax.random.key(1), 2)
  labels = lambda per: jnp.tile(jnp.arange(3 * per) % 3, (2, 1))
  tasks = episodes.Task(
      jax.random.uniform(k[0], (2, 6, 16, 16, 3)), labels(2),
      jax.random.uniform(k[1], (2, 9, 16, 16, 3)), labels(3))
  (loss, _), grads = jax.jit(jax.value_and_grad(
      training.batch_outer_loss(exp.learner), has_aux=True))(
          params, tasks, jax.random.key(2))
  return exp, params, tasks, float(loss), grads


def test_the_variants_compute_our_meta_gradient_in_float32(ours):
  _, params, tasks, loss, grads = ours
  nchw = lambda a: torch.tensor(np.transpose(np.asarray(a), (0, 1, 4, 2, 3)))
  t_tasks = (nchw(tasks.support_images),
             torch.tensor(np.asarray(tasks.support_labels)).long(),
             nchw(tasks.query_images),
             torch.tensor(np.asarray(tasks.query_labels)).long())
  want = [g.detach() for g in torch_baseline.params_from_jax(grads)]
  for variant in ("func_vmap", "grouped"):
    t_loss, t_grads = torch_variants.meta_loss_and_grads(
        variant, torch_baseline.params_from_jax(params), t_tasks,
        inner_lr=LR, steps=STEPS)
    _assert_same(t_loss, t_grads, loss, want, rtol=2e-4)


def test_the_pytorch_metatest_adapts_and_attacks_as_we_do(ours):
  """One episode: the adapted classifier's logits equal ours (float32
  rounding), and 20 PGD steps from the same start land on the same
  images, element for element."""
  exp, params = ours[:2]
  adaptation = exp.learner.adaptation
  cfg = dict(episodes_batch=1, n_way=3, k_shot=2, q_query=3, size=16)
  (xs, ys, xq, yq), starts = torch_metatest.random_episodes(cfg, 0)
  nhwc = lambda t: jnp.asarray(t[0].permute(0, 2, 3, 1).numpy())
  state, _ = jax.jit(lambda p, x, y: adaptation.adapt(p, x, y, num_steps=3))(
      params, nhwc(xs), jnp.asarray(ys[0].numpy()))
  t_params = [p.detach() for p in torch_baseline.params_from_jax(params)]
  adapted = torch_metatest.adapt(t_params, xs[0], ys[0], inner_lr=LR,
                                 steps=3)
  np.testing.assert_allclose(
      torch_baseline.conv4(adapted, xq[0]).numpy(),
      np.asarray(adaptation.logits(state, nhwc(xq))), rtol=1e-5, atol=1e-5)
  want = jax.jit(lambda s, x, y, x0: linf.pgd_iterations(
      lambda z: adaptation.logits(s, z), x, y, x0, eps=8 / 255,
      step_size=2 / 255, num_steps=20))(
          state, nhwc(xq), jnp.asarray(yq[0].numpy()), nhwc(starts))
  got = torch_metatest.pgd(adapted, xq[0], yq[0], starts[0], eps=8 / 255,
                           step_size=2 / 255, steps=20)
  np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(),
                                np.asarray(want))


def test_the_three_pytorch_metatests_agree_in_float64():
  cfg = dict(episodes_batch=3, n_way=3, k_shot=2, q_query=3, size=16)
  batch, starts = torch_metatest.random_episodes(cfg, 0)
  batch = tuple(t.double() if t.is_floating_point() else t for t in batch)
  params = [p.detach().double() for p in torch_baseline.init_params(
      filters=4, channels=3, image_size=16, num_classes=3)]
  out = {v: torch_metatest.run_episodes(v, params, batch, starts.double(),
                                        inner_lr=LR, steps=3, pgd_steps=5)
         for v in torch_metatest.VARIANTS}
  for v in ("grouped", "func_vmap"):
    for got, want in zip(out[v], out["plain"]):
      np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(),
                                 rtol=1e-10, atol=1e-10)


@pytest.mark.integration   # times each variant's steps
def test_the_pytorch_rows_time_their_steps_and_report_their_fields():
  """The train rows of the in-process variants and a meta-test row, tiny."""
  cfg = dict(learner="maml", size=16, k_shot=1, n_way=3, q_query=2,
             task_batch_size=2, inner_steps=1, filters=4, steps=1)
  for variant in ("plain", "tuned", "func_vmap", "grouped"):
    r = benchmark.run_torch_single(dict(cfg, torch_variant=variant))
    assert r["torch_variant"] == variant and r["impl"] == "pytorch"
    assert math.isfinite(r["step_s"]) and r["tasks_per_s"] > 0
  assert r["memory_format"] in ("contiguous", "channels_last")
  row = metatest_speed.row("maml", 16, 1, "pgd", n_way=3, q_query=2,
                           filters=4, eval_inner_steps=1, episodes_batch=2,
                           calls=1, pgd_steps=2)
  for variant in torch_metatest.VARIANTS:
    r = torch_metatest.benchmark(row, variant, threads=1)
    assert r["episodes_per_s"] > 0 and r["accuracy_finite"]


def test_the_pytorch_autoattack_metatest_row_runs_in_the_plain_way():
  """An AutoAttack meta-test row in PyTorch (torchattacks' standard
  ensemble against each adapted episode; its targeted DLR loss needs four
  classes or more), tiny; the other ways refuse it."""
  pytest.importorskip("torchattacks")
  row = metatest_speed.row("maml", 16, 1, "autoattack", n_way=5, q_query=2,
                           filters=4, eval_inner_steps=1, episodes_batch=2,
                           calls=1, apgd_steps=2, square_queries=4)
  r = torch_metatest.benchmark(row, "plain", threads=1)
  assert r["episodes_per_s"] > 0 and r["accuracy_finite"]
  with pytest.raises(Exception, match="autoattack in plain"):
    torch_metatest.benchmark(row, "grouped", threads=1)


def test_the_tables_compare_with_the_fastest_pytorch_variant():
  base = dict(learner="maml", size=32, k_shot=1, flops_per_step=1e9,
              peak_memory_bytes=2**30, torch_version="2.13.0+cpu",
              impl="pytorch", threads=2)
  plain = dict(base, torch_variant="plain", step_s=0.4, tasks_per_s=10.0)
  fast = dict(base, torch_variant="grouped", step_s=0.2, tasks_per_s=20.0)
  ours_row = dict(learner="maml", size=32, k_shot=1, step_s=0.25,
                  tasks_per_s=16.0, flops_per_step=1e9, mfu=0.1,
                  peak_memory_bytes=2**30, conv_impl="hybrid",
                  variant="default", compile_s=9.0)
  table = benchmark.train_table([ours_row], [plain, fast])
  assert "| 0.80 |" in table   # 16 / 20: over the fastest, not the plain
  assert "grouped, 2 threads" in table
  with pytest.raises(Exception, match="unknown"):
    benchmark.check_torch_variants(["jit"])
  m = dict(learner="maml", backbone="conv4", size=32, k_shot=1,
           attack="pgd", call_s=1.0, episodes_batch=20, first_call_s=1.0,
           peak_memory_bytes=2**30)
  md = metatest_speed.table(
      [dict(m, episodes_per_s=30.0, resolved={"conv_impl": "hybrid"})],
      [dict(m, episodes_per_s=20.0, impl="pytorch", torch_variant="plain",
            threads=2),
       dict(m, episodes_per_s=40.0, impl="pytorch", torch_variant="grouped",
            threads=2)])
  assert "jax hybrid | 0.75 |" in md
  assert "pytorch grouped, 2 threads | 1.00 |" in md
