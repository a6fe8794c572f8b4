r"""Benchmarks the meta-train step: time per step, tasks/s, compile time, memory.

  python -m launch.benchmark --sizes=32,84 --shots=1,5 --conv_impls=matmul
  python -m launch.benchmark --section=attacks --sizes=32,84

Each configuration runs in a fresh subprocess so that its peak resident memory
(RSS, on the CPU) or its peak device memory (GPU/TPU) is its own. Prints a
Markdown table and writes JSON to --out. Second-order MAML, conv4 F=32, 5-way,
15 queries per class, task batch 4, 5 inner steps unless flags say otherwise.

FLOPs per step are counted analytically for MAML: with f the FLOPs of one
image through conv4 (`models.conv4_forward_flops`), S support and Q query
images per task, a second-order step costs B·(9·steps·S + 3·Q)·f (each inner
step is a forward and backward pass, 3f per image, differentiated again by the
meta-gradient, ×3; the query is one forward and backward). XLA's own cost
analysis is reported beside it but undercounts: it counts the body of the
inner `lax.scan` once. Achieved FLOP/s are divided by a float32 matmul peak
measured in the same process (model FLOP utilization, MFU).

`--section=attacks` measures attack throughput instead: images per second of
each attack in `--attacks` on conv4 (F=32) at each image size, on a batch of
`--attack_batch` images (75 = one 5-way 15-query query set), jitted, after a
warm-up call. Throughput does not depend on the weights, so the model is at
its initialisation.
"""

import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from advmeta_jax import models

flags.DEFINE_enum("section", "train", ["train", "attacks"],
                  "What to measure: the meta-train step or attack throughput.")
flags.DEFINE_list("attacks", ["pgd", "cw_l2"], "Attacks (section=attacks).")
flags.DEFINE_integer("attack_batch", 75, "Images per attack call.")
flags.DEFINE_integer("pgd_steps", 20, "PGD steps (section=attacks).")
flags.DEFINE_integer("cw_steps", 100, "C&W Adam steps (section=attacks).")
flags.DEFINE_list("sizes", ["32", "84"], "Image sides (32: CIFAR-FS, 84: "
                  "MiniImageNet).")
flags.DEFINE_list("shots", ["1", "5"], "K values.")
flags.DEFINE_list("conv_impls", ["matmul"], "Convolution formulations.")
flags.DEFINE_list("learners", ["maml"], "Learners.")
flags.DEFINE_integer("n_way", 5, "N.")
flags.DEFINE_integer("q_query", 15, "Queries per class.")
flags.DEFINE_integer("task_batch_size", 4, "B.")
flags.DEFINE_integer("inner_steps", 5, "Inner steps.")
flags.DEFINE_integer("filters", 32, "conv4 filters.")
flags.DEFINE_bool("first_order", False, "First-order MAML.")
flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
flags.DEFINE_string("out", "benchmark.json", "JSON output path.")
flags.DEFINE_string("single", None, "Internal: run one configuration (JSON) "
                    "and print its result as JSON.")
flags.DEFINE_string("single_attack", None, "Internal: time one attack (JSON).")
FLAGS = flags.FLAGS


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of an n×n float32 matmul, best of `repeats`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def run_single(cfg: dict) -> dict:
  """Compiles and times one configuration in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  from advmeta_jax import episodes, learners, training  # pylint: disable=g-import-not-at-top
  size, k_shot = cfg["size"], cfg["k_shot"]
  model = models.make_conv4(num_classes=cfg["n_way"], filters=cfg["filters"],
                            conv_impl=cfg["conv_impl"], image_size=size)
  apply_fn = models.make_apply_fn(model)
  config = learners.LearnerConfig(apply_fn=apply_fn, inner_lr=0.01,
                                  inner_steps=cfg["inner_steps"],
                                  first_order=cfg["first_order"])
  optimizer = training.make_optimizer(1e-3)
  params = models.init_params(model, jax.random.key(0), (size, size, 3))
  state = training.init_state(params, optimizer)
  step = jax.jit(training.make_train_step(learners.get(cfg["learner"]), config,
                                          optimizer), donate_argnums=0)
  b, n, q = cfg["task_batch_size"], cfg["n_way"], cfg["q_query"]
  keys = jax.random.split(jax.random.key(1), 3)
  tasks = episodes.Task(
      jax.random.uniform(keys[0], (b, n * k_shot, size, size, 3)),
      jax.numpy.tile(jax.numpy.repeat(jax.numpy.arange(n), k_shot), (b, 1)),
      jax.random.uniform(keys[1], (b, n * q, size, size, 3)),
      jax.numpy.tile(jax.numpy.repeat(jax.numpy.arange(n), q), (b, 1)))
  t = time.perf_counter()
  compiled = step.lower(state, tasks, keys[2]).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  f = models.conv4_forward_flops(image_size=size, channels=3,
                                 filters=cfg["filters"], num_classes=n)
  flops = float(b * (9 * cfg["inner_steps"] * n * k_shot + 3 * n * q) * f)
  if cfg["learner"] != "maml":
    flops = float("nan")  # the analytic count above is MAML's
  state, m = step(state, tasks, keys[2])          # warm-up
  jax.block_until_ready(m)
  times = []
  for i in range(cfg["steps"]):
    t = time.perf_counter()
    state, m = step(state, tasks, jax.random.fold_in(keys[2], i))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  device = jax.devices()[0]
  mem = None
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    mem = stats.get("peak_bytes_in_use")
  else:
    mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  peak = matmul_peak_flops()
  return {**cfg, "compile_s": compile_s, "step_s": step_s,
          "tasks_per_s": b / step_s, "flops_per_step": flops,
          "xla_cost_analysis_flops": xla_flops,
          "achieved_flops": flops / step_s, "matmul_peak_flops": peak,
          "mfu": flops / step_s / peak, "peak_memory_bytes": mem,
          "memory_kind": "peak RSS" if device.platform == "cpu"
                         else "peak device memory",
          "device": f"{device.platform}: {device.device_kind}",
          "loss_finite": bool(np.isfinite(float(m["loss"])))}


ATTACK_HPARAMS = {
    "fgsm": lambda: {"eps": "8/255"},
    "pgd": lambda: {"eps": "8/255", "step_size": "2/255",
                    "num_steps": FLAGS.pgd_steps},
    "mi_fgsm": lambda: {"eps": "8/255", "num_steps": FLAGS.pgd_steps},
    "cw_l2": lambda: {"c": 1.0, "num_steps": FLAGS.cw_steps},
    "apgd": lambda: {"eps": "8/255", "num_steps": FLAGS.pgd_steps},
}


def run_attack_single(cfg: dict) -> dict:
  """Times one attack on conv4 in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  from advmeta_jax import attacks  # pylint: disable=g-import-not-at-top
  size, n = cfg["size"], cfg["batch"]
  model = models.make_conv4(num_classes=5, filters=cfg["filters"],
                            image_size=size)
  apply_fn = models.make_apply_fn(model)
  params = models.init_params(model, jax.random.key(0), (size, size, 3))
  attack = attacks.make_attack(cfg["attack"], cfg["hparams"])
  run = jax.jit(lambda p, x, y, key: attack(lambda z: apply_fn(p, z), x, y,
                                            key=key))
  keys = jax.random.split(jax.random.key(1), 3)
  x = jax.random.uniform(keys[0], (n, size, size, 3))
  y = jax.random.randint(keys[1], (n,), 0, 5)
  t = time.perf_counter()
  compiled = run.lower(params, x, y, keys[2]).compile()
  compile_s = time.perf_counter() - t
  compiled(params, x, y, keys[2]).block_until_ready()
  times = []
  for i in range(cfg["steps"]):
    t = time.perf_counter()
    compiled(params, x, y, jax.random.fold_in(keys[2], i)).block_until_ready()
    times.append(time.perf_counter() - t)
  call_s = float(np.median(times))
  device = jax.devices()[0]
  return {**cfg, "compile_s": compile_s, "call_s": call_s,
          "images_per_s": n / call_s,
          "device": f"{device.platform}: {device.device_kind}"}


def _run_in_subprocess(mode: str, cfg: dict):
  proc = subprocess.run(
      [sys.executable, "-m", "launch.benchmark", f"--{mode}", json.dumps(cfg)],
      capture_output=True, text=True, check=False)
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not line:
    print(f"{cfg}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None
  return json.loads(line[0][len("RESULT "):])


def _machine():
  return {"platform": platform.platform(), "cpus": os.cpu_count(),
          "python": platform.python_version(), "command": " ".join(sys.argv)}


def attacks_main():
  results = []
  for name, size in itertools.product(FLAGS.attacks, FLAGS.sizes):
    if name not in ATTACK_HPARAMS:
      raise app.UsageError(f"--attacks: no benchmark settings for {name!r}; "
                           f"choose from {sorted(ATTACK_HPARAMS)}.")
    cfg = dict(attack=name, hparams=ATTACK_HPARAMS[name](), size=int(size),
               batch=FLAGS.attack_batch, filters=FLAGS.filters,
               steps=FLAGS.steps)
    r = _run_in_subprocess("single_attack", cfg)
    if r is None:
      continue
    results.append(r)
    print(f"{name} {size}x{size}: {r['images_per_s']:.1f} images/s "
          f"({r['call_s']:.3f} s per batch of {r['batch']}, compile "
          f"{r['compile_s']:.1f} s)", flush=True)
  machine = _machine()
  with open(FLAGS.out, "w") as f:
    json.dump({"machine": machine, "attack_results": results}, f, indent=2)
  print("| attack | hyperparameters | image | images/s | s per batch | "
        "compile s |\n|---|---|---|---|---|---|")
  for r in results:
    hp = ", ".join(f"{k}={v}" for k, v in r["hparams"].items())
    print(f"| {r['attack']} | {hp} | {r['size']} | {r['images_per_s']:.1f} | "
          f"{r['call_s']:.3f} | {r['compile_s']:.1f} |")
  print(f"device: {results[0]['device'] if results else '?'}; {machine}")


def main(argv):
  del argv
  if FLAGS.single:
    print("RESULT " + json.dumps(run_single(json.loads(FLAGS.single))))
    return
  if FLAGS.single_attack:
    print("RESULT " + json.dumps(run_attack_single(
        json.loads(FLAGS.single_attack))))
    return
  if FLAGS.section == "attacks":
    attacks_main()
    return
  results = []
  for learner, impl, size, shot in itertools.product(
      FLAGS.learners, FLAGS.conv_impls, FLAGS.sizes, FLAGS.shots):
    cfg = dict(learner=learner, conv_impl=impl, size=int(size),
               k_shot=int(shot), n_way=FLAGS.n_way, q_query=FLAGS.q_query,
               task_batch_size=FLAGS.task_batch_size,
               inner_steps=FLAGS.inner_steps, filters=FLAGS.filters,
               first_order=FLAGS.first_order, steps=FLAGS.steps)
    r = _run_in_subprocess("single", cfg)
    if r is None:
      continue
    results.append(r)
    print(f"{learner} {impl} {size}x{size} {shot}-shot: {r['step_s']:.3f} s/step,"
          f" {r['tasks_per_s']:.2f} tasks/s, compile {r['compile_s']:.1f} s, "
          f"MFU {100 * r['mfu']:.1f}%, {r['memory_kind']} "
          f"{r['peak_memory_bytes'] / 2**30:.2f} GiB", flush=True)
  machine = _machine()
  with open(FLAGS.out, "w") as f:
    json.dump({"machine": machine, "results": results}, f, indent=2)
  header = ("learner", "conv", "image", "shot", "s/step", "tasks/s",
            "compile s", "GFLOP/step", "MFU %", "peak mem GiB")
  print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
  for r in results:
    print(f"| {r['learner']} | {r['conv_impl']} | {r['size']} | {r['k_shot']} | "
          f"{r['step_s']:.3f} | {r['tasks_per_s']:.2f} | {r['compile_s']:.1f} | "
          f"{r['flops_per_step'] / 1e9:.1f} | {100 * r['mfu']:.1f} | "
          f"{r['peak_memory_bytes'] / 2**30:.2f} |")
  print(f"device: {results[0]['device'] if results else '?'}; {machine}")


if __name__ == "__main__":
  app.run(main)
