r"""Benchmarks the meta-train step: time per step, tasks/s, compile time, memory.

  python -m launch.benchmark --sizes=32,84 --shots=1,5 --conv_impls=matmul
  python -m launch.benchmark --section=attacks --sizes=32,84

Each configuration runs in a fresh subprocess so that its peak resident memory
(RSS, on the CPU) or its peak device memory (GPU/TPU) is its own. Prints a
Markdown table and writes JSON to --out. Second-order MAML, conv4 F=32, 5-way,
15 queries per class, task batch 4, 5 inner steps unless flags say otherwise.

  python -m launch.benchmark --learners=maml,aq --sizes=84 --shots=1 \
      --variants=base,remat,p1+remat,bf16,first_order --torch

FLOPs per step are counted analytically (`analytic_step_flops`): with f the
FLOPs of one image through conv4 (`models.conv4_forward_flops`), S support
and Q query images per task, a second-order MAML step costs
B·(9·steps·S + 3·Q)·f (each inner step is a forward and backward pass, 3f per
image, differentiated again by the meta-gradient, ×3; the query is one forward
and backward); the robust learners add their attacks. XLA's own cost analysis
is reported beside it but undercounts: it counts the body of the inner
`lax.scan` (and of an attack's loop) once. Achieved FLOP/s are divided by a
matmul peak measured in the same process with the step's compute dtype
(float32 or bfloat16 inputs, float32 accumulation): model FLOP utilization,
MFU. Memory: the process's peak RSS on the CPU (it includes the runtime,
~0.2 GiB, and the compiler's own peak), its RSS after the timed steps, peak
device memory elsewhere, and XLA's own figure for the compiled step
(arguments + outputs + temporaries).

`--variants` trades memory and precision: `remat` rematerializes the inner
steps (`jax.checkpoint`), `pN` adapts N tasks at a time in
rematerialized rounds (`--parallel_tasks`), `bf16` feeds the convolutions bfloat16 (float32
accumulation and parameters), `first_order` is FOMAML. `--torch` adds the
plain PyTorch baseline (`launch/torch_baseline.py`: loop over tasks,
`autograd.grad(create_graph=True)`, 2 threads) for maml and aq, and the ratio
of tasks/s to it.

`--section=conv` times each of conv4's four convolutions alone, forward and
backward (input and kernel gradients: the unit every MAML step is made of),
in each `--conv_impls` formulation and, when torch imports, PyTorch's
`conv2d` (oneDNN) on the same shapes and threads; the formulations are first
checked to compute the same outputs and gradients. It separates the cost of
the convolution kernels from the rest of a step.

  python -m launch.benchmark --section=conv --sizes=32,84 --conv_impls=matmul,xla

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

flags.DEFINE_enum("section", "train", ["train", "attacks", "conv"],
                  "What to measure: the meta-train step, attack throughput, "
                  "or conv4's convolutions one by one (forward + backward).")
flags.DEFINE_integer("conv_images", 75, "Images per convolution call "
                     "(section=conv; 75 = one 5-way 15-query query set).")
flags.DEFINE_list("attacks", ["pgd", "cw_l2"], "Attacks (section=attacks).")
flags.DEFINE_integer("attack_batch", 75, "Images per attack call.")
flags.DEFINE_integer("pgd_steps", 20, "PGD steps (section=attacks).")
flags.DEFINE_integer("cw_steps", 100, "C&W Adam steps (section=attacks).")
flags.DEFINE_list("sizes", ["32", "84"], "Image sides (32: CIFAR-FS, 84: "
                  "MiniImageNet).")
flags.DEFINE_list("shots", ["1", "5"], "K values.")
flags.DEFINE_list("conv_impls", ["matmul"], "Convolution formulations.")
flags.DEFINE_list("learners", ["maml"], "Learners (maml, maml_ad, adml, aq, "
                  "tafl).")
flags.DEFINE_integer("n_way", 5, "N.")
flags.DEFINE_integer("q_query", 15, "Queries per class.")
flags.DEFINE_integer("task_batch_size", 4, "B.")
flags.DEFINE_integer("inner_steps", 5, "Inner steps.")
flags.DEFINE_integer("filters", 32, "conv4 filters.")
flags.DEFINE_list("variants", ["base"],
                  "Memory/precision variants, each '+'-joined options of: "
                  "base, remat (rematerialized inner steps), bf16 (bfloat16 "
                  "convolution inputs), first_order, pN (N tasks at a time, "
                  "rematerialized rounds: --parallel_tasks).")
flags.DEFINE_integer("attack_steps", 7, "PGD steps of the aq/tafl training "
                     "attack (section=train).")
flags.DEFINE_bool("torch", False, "Also run the plain PyTorch second-order "
                  "MAML/AQ baseline (launch/torch_baseline.py) on each "
                  "configuration, when torch is importable.")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads of the "
                     "baseline.")
flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
flags.DEFINE_string("out", "benchmark.json", "JSON output path.")
flags.DEFINE_string("single", None, "Internal: run one configuration (JSON) "
                    "and print its result as JSON.")
flags.DEFINE_string("single_attack", None, "Internal: time one attack (JSON).")
flags.DEFINE_string("single_torch", None, "Internal: time the PyTorch "
                    "baseline on one configuration (JSON).")
FLAGS = flags.FLAGS


def matmul_peak_flops(n: int = 2048, repeats: int = 10,
                      dtype: str = "float32") -> float:
  """FLOP/s of an n×n matmul with `dtype` inputs (float32 accumulation),
  best of `repeats`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def analytic_step_flops(cfg: dict) -> float:
  """Matmul FLOPs of one meta-train step, counted by hand (module docstring).

  With f the FLOPs of one image through conv4, T inner steps, A attack steps,
  S support and Q query images per task, per task:
    maml:        9·T·S + 3·Q
    aq, tafl:    9·T·S + 2·A·Q (PGD at θ', input gradient only) + 3·Q
                 (adversarial query, differentiated) + Q (clean query)
    maml_ad:     2·S (FGSM at θ) + 9·T·2S + 2·Q (FGSM at θ') + 3·2Q
    adml:        2·S + 2·9·T·S + 2·Q + 3·2·Q + Q
  (first-order: 3 instead of 9 per inner image-step), times B·f.
  """
  f = models.conv4_forward_flops(image_size=cfg["size"], channels=3,
                                 filters=cfg["filters"],
                                 num_classes=cfg["n_way"])
  t, a = cfg["inner_steps"], cfg.get("attack_steps", 7)
  s, q = cfg["n_way"] * cfg["k_shot"], cfg["n_way"] * cfg["q_query"]
  inner = 3 if cfg.get("first_order") else 9
  per_task = {
      "maml": inner * t * s + 3 * q,
      "aq": inner * t * s + 2 * a * q + 4 * q,
      "tafl": inner * t * s + 2 * a * q + 4 * q,
      "maml_ad": 2 * s + inner * t * 2 * s + 2 * q + 6 * q,
      "adml": 2 * s + 2 * inner * t * s + 2 * q + 7 * q,
  }.get(cfg["learner"])
  if per_task is None:
    return float("nan")
  return float(cfg["task_batch_size"] * per_task * f)


def _learner_config(cfg: dict, apply_fn):
  """The `LearnerConfig` of a benchmark configuration (the learner's default
  training attack, `attack_steps` steps)."""
  from advmeta_jax import learners, training  # pylint: disable=g-import-not-at-top
  attack = training.make_train_attack(training.TrainConfig(
      learner=cfg["learner"], train_attack_steps=cfg.get("attack_steps", 7)))
  return learners.LearnerConfig(
      apply_fn=apply_fn, inner_lr=0.01, inner_steps=cfg["inner_steps"],
      first_order=cfg["first_order"], remat=cfg.get("remat", False),
      train_attack=attack)


def _current_rss_bytes() -> float:
  """This process's resident memory now (Linux), NaN elsewhere."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return float(line.split()[1]) * 1024
  except OSError:
    pass
  return float("nan")


def run_single(cfg: dict) -> dict:
  """Compiles and times one configuration in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  from advmeta_jax import episodes, learners, training  # pylint: disable=g-import-not-at-top
  jax.numpy.zeros(()).block_until_ready()   # the runtime, before any step
  runtime_rss = _current_rss_bytes()
  size, k_shot = cfg["size"], cfg["k_shot"]
  dtype = cfg.get("compute_dtype", "float32")
  model = models.make_conv4(num_classes=cfg["n_way"], filters=cfg["filters"],
                            conv_impl=cfg["conv_impl"], image_size=size,
                            compute_dtype=dtype)
  apply_fn = models.make_apply_fn(model)
  config = _learner_config(cfg, apply_fn)
  optimizer = training.make_optimizer(1e-3)
  params = models.init_params(model, jax.random.key(0), (size, size, 3))
  state = training.init_state(params, optimizer)
  step = jax.jit(training.make_train_step(
      learners.get(cfg["learner"]), config, optimizer,
      parallel_tasks=cfg.get("parallel_tasks", 0)), donate_argnums=0)
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
  program_bytes = float("nan")
  try:
    mem = compiled.memory_analysis()
    program_bytes = float(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                          + mem.output_size_in_bytes - mem.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    pass   # not every backend reports it
  flops = analytic_step_flops(cfg)
  state, m = step(state, tasks, keys[2])          # warm-up
  jax.block_until_ready(m)
  times = []
  for i in range(cfg["steps"]):
    t = time.perf_counter()
    state, m = step(state, tasks, jax.random.fold_in(keys[2], i))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  rss_after_steps = _current_rss_bytes()
  device = jax.devices()[0]
  mem = None
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    mem = stats.get("peak_bytes_in_use")
  else:
    mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  peaks = {d: matmul_peak_flops(dtype=d) for d in ("float32", "bfloat16")}
  peak = peaks[dtype]
  return {**cfg, "compile_s": compile_s, "step_s": step_s,
          "tasks_per_s": b / step_s, "flops_per_step": flops,
          "xla_cost_analysis_flops": xla_flops,
          "achieved_flops": flops / step_s, "matmul_peak_flops": peak,
          "matmul_peak_flops_float32": peaks["float32"],
          "matmul_peak_flops_bfloat16": peaks["bfloat16"],
          "mfu": flops / step_s / peak, "peak_memory_bytes": mem,
          "memory_kind": "peak RSS" if device.platform == "cpu"
                         else "peak device memory",
          "xla_program_bytes": program_bytes,
          "runtime_rss_bytes": runtime_rss,
          "rss_after_steps_bytes": rss_after_steps,
          "device": f"{device.platform}: {device.device_kind}",
          "load_average_1m": os.getloadavg()[0],
          "loss_finite": bool(np.isfinite(float(m["loss"])))}


def run_torch_single(cfg: dict) -> dict:
  """The PyTorch baseline (`launch/torch_baseline.py`) on one configuration."""
  from launch import torch_baseline  # pylint: disable=g-import-not-at-top
  r = torch_baseline.benchmark(cfg, threads=FLAGS.torch_threads)
  r["flops_per_step"] = analytic_step_flops(cfg)
  r["achieved_flops"] = r["flops_per_step"] / r["step_s"]
  r["load_average_1m"] = os.getloadavg()[0]
  return r


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
          "python": platform.python_version(), "command": " ".join(sys.argv),
          "load_average": os.getloadavg()}


def _run_and_print(mode: str, cfg: dict, describe, into: list) -> None:
  """Runs one configuration in a subprocess; on success appends its result to
  `into` and prints `describe(result)`."""
  r = _run_in_subprocess(mode, cfg)
  if r is not None:
    into.append(r)
    print(describe(r), flush=True)


def _save_and_print(table: str, rows: list, **payload) -> None:
  """Writes `payload` and the machine to --out as JSON, prints the table and
  the device (that of `rows[0]`)."""
  machine = _machine()
  with open(FLAGS.out, "w") as f:
    json.dump({"machine": machine, **payload}, f, indent=2)
  print(table)
  print(f"device: {rows[0]['device'] if rows else '?'}; {machine}")


def attacks_main():
  results = []
  for name, size in itertools.product(FLAGS.attacks, FLAGS.sizes):
    if name not in ATTACK_HPARAMS:
      raise app.UsageError(f"--attacks: no benchmark settings for {name!r}; "
                           f"choose from {sorted(ATTACK_HPARAMS)}.")
    cfg = dict(attack=name, hparams=ATTACK_HPARAMS[name](), size=int(size),
               batch=FLAGS.attack_batch, filters=FLAGS.filters,
               steps=FLAGS.steps)
    _run_and_print("single_attack", cfg, lambda r: (
        f"{r['attack']} {r['size']}x{r['size']}: {r['images_per_s']:.1f} "
        f"images/s ({r['call_s']:.3f} s per batch of {r['batch']}, compile "
        f"{r['compile_s']:.1f} s)"), results)
  lines = ["| attack | hyperparameters | image | images/s | s per batch | "
           "compile s |", "|---|---|---|---|---|---|"]
  for r in results:
    hp = ", ".join(f"{k}={v}" for k, v in r["hparams"].items())
    lines.append(f"| {r['attack']} | {hp} | {r['size']} | "
                 f"{r['images_per_s']:.1f} | {r['call_s']:.3f} | "
                 f"{r['compile_s']:.1f} |")
  _save_and_print("\n".join(lines), results, attack_results=results)


def conv_layer_shapes(size: int, channels: int = 3, filters: int = 32):
  """`(layer, side, input channels)` of conv4's four convolutions."""
  shapes, side, c = [], size, channels
  for layer in range(4):
    shapes.append((layer, side, c))
    side, c = side // 2, filters
  return shapes


def _median_time(fn, steps: int) -> float:
  fn()   # warm-up (and compilation)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def _check_close(name: str, got, want, cfg: dict) -> None:
  """Raises unless each of `got` is within 1e-4 (relative to its max) of the
  matching `want` (the input and kernel gradients of `lax.conv`)."""
  for g, w in zip(got, want):
    g, w = np.asarray(g), np.asarray(w)
    err = float(np.max(np.abs(g - w)) / (np.max(np.abs(w)) + 1e-12))
    if err > 1e-4:
      raise AssertionError(f"{name} disagrees with lax.conv on {cfg}: "
                           f"relative error {err:.2e}")


def run_conv_layer(cfg: dict) -> dict:
  """Times one 3×3 convolution's forward + backward (input and kernel
  gradients of a fixed random projection of the output) in every formulation
  of `cfg["conv_impls"]`, and in PyTorch when `cfg["torch"]` and torch
  imports. Checks first that all of them agree with `conv3x3_xla`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, side, c, f = cfg["images"], cfg["side"], cfg["channels"], cfg["filters"]
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (n, side, side, c))
  kernel = jax.random.normal(keys[1], (3, 3, c, f)) / np.sqrt(9 * c)
  proj = jax.random.normal(keys[2], (n, side, side, f))
  impls = {"matmul": models.conv3x3_matmul, "xla": models.conv3x3_xla}

  def grads_of(conv):
    return jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) * proj),
                            argnums=(0, 1)))
  fns = {name: grads_of(impls[name])
         for name in dict.fromkeys([*cfg["conv_impls"], "xla"])}
  reference = fns["xla"](x, kernel)
  flops = 3 * 2 * n * side * side * 9 * c * f   # forward, dx, dkernel
  out = {**cfg, "flops": flops, "ms": {}}
  for name in cfg["conv_impls"]:
    fn = fns[name]
    _check_close(f"conv_impl {name}", fn(x, kernel), reference, cfg)
    out["ms"][name] = 1e3 * _median_time(
        lambda: jax.block_until_ready(fn(x, kernel)), cfg["steps"])
  if cfg.get("torch") and _torch_available():
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(cfg.get("torch_threads", 2))
    nchw = lambda a: torch.tensor(np.transpose(np.asarray(a), (0, 3, 1, 2)))
    tx = nchw(x).requires_grad_()
    tk = torch.tensor(np.transpose(np.asarray(kernel), (3, 2, 0, 1))
                      ).requires_grad_()
    tproj = nchw(proj)

    def torch_step():
      y = torch.nn.functional.conv2d(tx, tk, padding=1)
      return torch.autograd.grad((y * tproj).sum(), (tx, tk))
    gx, gk = torch_step()
    _check_close("torch conv2d", (gx.numpy().transpose(0, 2, 3, 1),
                                  gk.numpy().transpose(2, 3, 1, 0)),
                 reference, cfg)
    out["ms"]["pytorch"] = 1e3 * _median_time(torch_step, cfg["steps"])
    out["torch_version"] = torch.__version__
  device = jax.devices()[0]
  out["device"] = f"{device.platform}: {device.device_kind}"
  return out


def conv_main():
  rows = []
  for size in FLAGS.sizes:
    for layer, side, c in conv_layer_shapes(int(size), filters=FLAGS.filters):
      rows.append(run_conv_layer(dict(
          layer=layer, size=int(size), side=side, channels=c,
          filters=FLAGS.filters, images=FLAGS.conv_images,
          conv_impls=FLAGS.conv_impls, torch=FLAGS.torch,
          torch_threads=FLAGS.torch_threads, steps=FLAGS.steps)))
  impls = list(rows[0]["ms"]) if rows else []
  lines = ["| image | layer | input | " + " | ".join(
      f"{i} ms (GFLOP/s)" for i in impls) + " |",
           "|" + "---|" * (3 + len(impls))]
  for r in rows:
    cells = [f"{r['ms'][i]:.2f} ({r['flops'] / r['ms'][i] / 1e6:.0f})"
             for i in impls]
    lines.append(f"| {r['size']} | conv{r['layer']} | {r['images']}×"
                 f"{r['side']}×{r['side']}×{r['channels']} | "
                 + " | ".join(cells) + " |")
  for size in FLAGS.sizes:
    sub = [r for r in rows if r["size"] == int(size)]
    lines.append(f"| {size} | all four | | " + " | ".join(
        f"{sum(r['ms'][i] for r in sub):.2f}" for i in impls) + " |")
  _save_and_print("\n".join(lines), rows, conv_results=rows)


VARIANT_OPTIONS = ("base", "remat", "bf16", "first_order")


def variant_fields(variant: str) -> dict:
  """`remat`, `compute_dtype`, `first_order`, `parallel_tasks` of a
  '+'-joined variant name ("pN": N tasks at a time, in rounds)."""
  parts = variant.split("+")
  parallel = [int(p[1:]) for p in parts if p[:1] == "p" and p[1:].isdigit()]
  unknown = [p for p in parts if p not in VARIANT_OPTIONS and not (
      p[:1] == "p" and p[1:].isdigit())]
  if unknown:
    raise app.UsageError(f"--variants: unknown option(s) {unknown} in "
                         f"{variant!r}; choose from {VARIANT_OPTIONS} and pN "
                         f"(N tasks at a time).")
  return dict(remat="remat" in parts, first_order="first_order" in parts,
              compute_dtype="bfloat16" if "bf16" in parts else "float32",
              parallel_tasks=parallel[0] if parallel else 0)


def _torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def _gib(x):
  return "–" if x is None or not np.isfinite(x) else f"{x / 2**30:.2f}"


def train_table(results, torch_results) -> str:
  """The Markdown table of the train section (ratio to PyTorch if any)."""
  def key(r):
    return (r["learner"], r["size"], r["k_shot"])
  torch_by = {key(r): r for r in torch_results}
  header = ("learner", "impl", "variant", "image", "shot", "s/step", "tasks/s",
            "× torch", "compile s", "GFLOP/step", "MFU %", "peak RSS GiB",
            "RSS after GiB", "XLA GiB")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results + torch_results:
    ref = torch_by.get(key(r))
    ratio = (f"{r['tasks_per_s'] / ref['tasks_per_s']:.2f}"
             if ref is not None and r.get("impl") != "pytorch" else "–")
    impl = (f"pytorch {r['torch_version']}" if r.get("impl") == "pytorch"
            else f"jax {r['conv_impl']}")
    mfu = r.get("mfu")
    lines.append(
        f"| {r['learner']} | {impl} | {r.get('variant', '–')} | {r['size']} | "
        f"{r['k_shot']} | {r['step_s']:.3f} | {r['tasks_per_s']:.2f} | "
        f"{ratio} | {r.get('compile_s', float('nan')):.1f} | "
        f"{r['flops_per_step'] / 1e9:.1f} | "
        f"{'–' if mfu is None else f'{100 * mfu:.1f}'} | "
        f"{_gib(r['peak_memory_bytes'])} | "
        f"{_gib(r.get('rss_after_steps_bytes'))} | "
        f"{_gib(r.get('xla_program_bytes'))} |")
  return "\n".join(lines)


def main(argv):
  del argv
  if FLAGS.single:
    print("RESULT " + json.dumps(run_single(json.loads(FLAGS.single))))
    return
  if FLAGS.single_attack:
    print("RESULT " + json.dumps(run_attack_single(
        json.loads(FLAGS.single_attack))))
    return
  if FLAGS.single_torch:
    print("RESULT " + json.dumps(run_torch_single(
        json.loads(FLAGS.single_torch))))
    return
  if FLAGS.section == "attacks":
    attacks_main()
    return
  if FLAGS.section == "conv":
    conv_main()
    return
  variants = {v: variant_fields(v) for v in FLAGS.variants}
  results, torch_results = [], []
  for learner, size, shot in itertools.product(FLAGS.learners, FLAGS.sizes,
                                               FLAGS.shots):
    base = dict(learner=learner, size=int(size), k_shot=int(shot),
                n_way=FLAGS.n_way, q_query=FLAGS.q_query,
                task_batch_size=FLAGS.task_batch_size,
                inner_steps=FLAGS.inner_steps, filters=FLAGS.filters,
                attack_steps=FLAGS.attack_steps, steps=FLAGS.steps)
    for impl, (variant, fields) in itertools.product(FLAGS.conv_impls,
                                                     variants.items()):
      cfg = dict(base, conv_impl=impl, variant=variant, **fields)
      _run_and_print("single", cfg, lambda r: (
          f"{_name(r)} {r['conv_impl']} {r['variant']}: {r['step_s']:.3f} "
          f"s/step, {r['tasks_per_s']:.2f} tasks/s, compile "
          f"{r['compile_s']:.1f} s, MFU {100 * r['mfu']:.1f}%, "
          f"{r['memory_kind']} {_gib(r['peak_memory_bytes'])} GiB, XLA "
          f"{_gib(r['xla_program_bytes'])} GiB"), results)
    if FLAGS.torch and learner in ("maml", "aq") and _torch_available():
      _run_and_print("single_torch", dict(base, first_order=False), lambda r: (
          f"{_name(r)} pytorch: {r['step_s']:.3f} s/step, "
          f"{r['tasks_per_s']:.2f} tasks/s, peak RSS "
          f"{_gib(r['peak_memory_bytes'])} GiB"), torch_results)
  if FLAGS.torch and not _torch_available():
    print("--torch: torch is not importable here; no baseline.",
          file=sys.stderr)
  _save_and_print(train_table(results, torch_results), results,
                  results=results, torch_results=torch_results)


def _name(r: dict) -> str:
  return f"{r['learner']} {r['size']}x{r['size']} {r['k_shot']}-shot"


if __name__ == "__main__":
  app.run(main)
