"""launch/benchmark.py runs and reports every field (no timing is asserted)."""

import math

from launch import benchmark


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
