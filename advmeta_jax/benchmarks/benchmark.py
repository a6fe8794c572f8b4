r"""Benchmarks of the meta-train step, of the attacks and of conv4's convolutions.

`run(Options(...))` is `python -m launch.benchmark`: it measures one section,
prints a Markdown table and writes the results as JSON (`Options.out`).

    train    s/step, tasks/s, compile time, FLOPs, MFU and memory per learner
             × image size × shots × conv formulation × variant, and with
             `Options.torch` the PyTorch step in each of
             `Options.torch_variants` (maml and aq): the plain loop over
             tasks (`torch_baseline.py`) and the faster ways to write it
             (`torch_variants.py`); our tasks/s over the fastest one's
    attacks  images/s of each attack on conv4 (a batch of `attack_batch`
             images, jitted, after a warm-up; the model at its initialisation)
    conv     each of conv4's four convolutions alone, forward + backward, in
             each formulation and PyTorch's `conv2d`, first checked to agree
    metatest episodes/s of adapt + attack + score (`metatest_speed.py`);
             with `Options.torch`, the same PGD workload in PyTorch
             (`torch_metatest.py`, maml conv4) and ours over the fastest

Each train and attack configuration runs in a fresh subprocess
(`python -m advmeta_jax.benchmarks.benchmark MODE JSON`), so that its peak memory (RSS
on the CPU, device memory elsewhere) is its own. Second-order MAML, conv4
F=32, 5-way, 15 queries per class, task batch 4, 5 inner steps unless the
options say otherwise.

FLOPs per step are counted analytically (`analytic_step_flops`): with f the
FLOPs of one image through conv4 (`models.conv4_forward_flops`), S support
and Q query images per task, a second-order MAML step costs
B·(9·steps·S + 3·Q)·f (each inner step is a forward and backward pass, 3f per
image, differentiated again by the meta-gradient, ×3; the query is one forward
and backward); the robust learners add their attacks. XLA's own cost analysis
is reported beside it but undercounts: it counts the body of the inner
`lax.scan` (and of an attack's loop) once. Achieved FLOP/s over a matmul peak
measured in the same process with the step's compute dtype is the model FLOP
utilization, MFU. Memory: peak RSS on the CPU (it includes the runtime,
~0.2 GiB, and the compiler's own peak), RSS after the timed steps, peak device
memory elsewhere, and XLA's own figure for the compiled step (arguments +
outputs + temporaries).

Variants (`variant_fields`): `remat` rematerializes the inner steps, `pN`
adapts N tasks at a time in rematerialized rounds (`parallel_tasks`), `bf16`
feeds the convolutions bfloat16 (float32 accumulation and parameters),
`first_order` is FOMAML.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax import attacks
from advmeta_jax.config import autotune
from advmeta_jax.core import models
from advmeta_jax import training
from advmeta_jax.config import AUTO
from advmeta_jax.errors import ConfigError
from advmeta_jax.benchmarks.configs import DEFAULT_VARIANT
from advmeta_jax.benchmarks.configs import VARIANT_OPTIONS
from advmeta_jax.benchmarks.configs import forward_flops
from advmeta_jax.benchmarks.configs import random_tasks
from advmeta_jax.benchmarks.configs import step_config
from advmeta_jax.benchmarks.configs import variant_fields
from advmeta_jax.benchmarks.conv import conv_section
from advmeta_jax.benchmarks.conv import run_conv_layer
from advmeta_jax.benchmarks import metatest_speed
from advmeta_jax.benchmarks import torch_metatest
from advmeta_jax.benchmarks import torch_variants
from advmeta_jax.benchmarks.measure import current_rss_bytes
from advmeta_jax.benchmarks.measure import device_name
from advmeta_jax.benchmarks.measure import machine
from advmeta_jax.benchmarks.measure import matmul_peak_flops
from advmeta_jax.benchmarks.measure import memory_kind
from advmeta_jax.benchmarks.measure import peak_memory_bytes
from advmeta_jax.benchmarks.measure import save_and_print
from advmeta_jax.benchmarks.measure import torch_available

SECTIONS = ("train", "attacks", "conv", "metatest")
# The modes of one configuration in its own process: what each times.
CHILD_MODES = ("single", "single_attack", "single_torch", "single_metatest",
               "single_torch_metatest")
# The side halving of conv4's blocks, shared with the model code.
conv_layer_shapes = models.conv4_layer_shapes


@dataclasses.dataclass(frozen=True)
class Options:
  """What to benchmark (the flags of launch.benchmark, same names)."""
  section: str = "train"
  sizes: Sequence[int] = (32, 84)
  shots: Sequence[int] = (1, 5)
  conv_impls: Sequence[str] = ("auto",)
  learners: Sequence[str] = ("maml",)
  # learner:size:shot entries measured instead of learners × sizes × shots
  rows: Sequence[str] = ()
  n_way: int = 5
  q_query: int = 15
  task_batch_size: int = 4
  inner_steps: int = 5
  filters: int = 32
  variants: Sequence[str] = ("default",)
  attack_steps: int = 7          # PGD steps of the aq/tafl training attack
  torch: bool = False
  torch_threads: int = 2
  torch_variants: Sequence[str] = tuple(torch_variants.VARIANTS)
  steps: int = 10                # timed steps, after one warm-up
  out: str = "benchmark.json"
  conv_images: int = 75          # section conv
  attacks: Sequence[str] = ("pgd", "cw_l2", "autoattack")   # section attacks
  attack_batch: int = 75
  pgd_steps: int = 20
  cw_steps: int = 100
  backbone: str = "conv4"        # sections train and metatest
  metatest_attacks: Sequence[str] = ("pgd",)   # section metatest
  eval_inner_steps: int = 10
  episodes_batch: int = 20
  # section metatest: "auto" (the backend's value) or a count (0: all)
  episodes_at_once: Sequence[str] = ("auto",)
  apgd_steps: int = 100
  square_queries: int = 5000


# --- FLOPs and memory -------------------------------------------------------

def analytic_step_flops(cfg: dict, f: Optional[float] = None) -> float:
  """Matmul FLOPs of one meta-train step, counted by hand (module docstring).

  With f the FLOPs of one image through the network (`forward_flops`), T
  inner steps, A attack steps, S support and Q query images per task, per
  task:
    maml:        9·T·S + 3·Q
    aq, tafl:    9·T·S + 2·A·Q (PGD at θ', input gradient only) + 3·Q
                 (adversarial query, differentiated) + Q (clean query)
    maml_ad:     2·S (FGSM at θ) + 9·T·2S + 2·Q (FGSM at θ') + 3·2Q
    adml:        2·S + 2·9·T·S + 2·Q + 3·2·Q + Q
    protonet, r2d2 (no inner loop; the head's solve not counted): 3·(S + Q),
                 under --robust=aq/tafl 3·S + 2·A·Q + 3·Q + Q
  (first-order: 3 instead of 9 per inner image-step), times B·f.
  """
  f = forward_flops(cfg) if f is None else f
  t, a = cfg["inner_steps"], cfg.get("attack_steps", 7)
  s, q = cfg["n_way"] * cfg["k_shot"], cfg["n_way"] * cfg["q_query"]
  inner = 3 if cfg.get("first_order") else 9
  robust = cfg.get("robust", "none") in ("aq", "tafl")
  metric = 3 * s + 2 * a * q + 4 * q if robust else 3 * (s + q)
  per_task = {
      "maml": (inner * t * s + 2 * a * q + 4 * q if robust
               else inner * t * s + 3 * q),
      "aq": inner * t * s + 2 * a * q + 4 * q,
      "tafl": inner * t * s + 2 * a * q + 4 * q,
      "maml_ad": 2 * s + inner * t * 2 * s + 2 * q + 6 * q,
      "adml": 2 * s + 2 * inner * t * s + 2 * q + 7 * q,
      "protonet": metric, "r2d2": metric,
  }.get(cfg["learner"])
  if per_task is None:
    return float("nan")
  return float(cfg["task_batch_size"] * per_task * f)


# --- one configuration of the train section ---------------------------------

def run_single(cfg: dict) -> dict:
  """Compiles and times one train-step configuration in this process."""
  jnp.zeros(()).block_until_ready()   # the runtime, before any step
  runtime_rss = current_rss_bytes()
  exp = training.build(step_config(cfg))
  config = exp.config   # `auto` settings resolved, as train resolves them
  optimizer = training.make_optimizer(config.meta.meta_lr)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  image_flops = forward_flops(cfg, exp.model, params)   # before donation
  state = training.init_state(params, optimizer)
  step = jax.jit(training.make_train_step(
      exp.learner, optimizer, parallel_tasks=config.loop.parallel_tasks),
                 donate_argnums=0)
  b, size = cfg["task_batch_size"], cfg["size"]
  keys = jax.random.split(jax.random.key(1), 3)
  tasks = random_tasks(keys[0], b, cfg["n_way"], cfg["k_shot"],
                        cfg["q_query"], size)
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
  flops = analytic_step_flops(cfg, image_flops)
  state, m = step(state, tasks, keys[2])          # warm-up
  jax.block_until_ready(m)
  times = []
  for i in range(cfg["steps"]):
    t = time.perf_counter()
    state, m = step(state, tasks, jax.random.fold_in(keys[2], i))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  rss_after_steps = current_rss_bytes()
  mem = peak_memory_bytes()
  peaks = {d: matmul_peak_flops(dtype=d) for d in ("float32", "bfloat16")}
  peak = peaks[config.model.compute_dtype]
  return {**cfg, "resolved": {f: getattr(config.loop, f) for f in
                              autotune.AUTO_FIELDS},
          "compile_s": compile_s, "step_s": step_s,
          "tasks_per_s": b / step_s, "flops_per_step": flops,
          "xla_cost_analysis_flops": xla_flops,
          "achieved_flops": flops / step_s, "matmul_peak_flops": peak,
          "matmul_peak_flops_float32": peaks["float32"],
          "matmul_peak_flops_bfloat16": peaks["bfloat16"],
          "mfu": flops / step_s / peak, "peak_memory_bytes": mem,
          "memory_kind": memory_kind(),
          "xla_program_bytes": program_bytes,
          "runtime_rss_bytes": runtime_rss,
          "rss_after_steps_bytes": rss_after_steps,
          "device": device_name(),
          "load_average_1m": os.getloadavg()[0],
          "loss_finite": bool(np.isfinite(float(m["loss"])))}


def run_torch_single(cfg: dict) -> dict:
  """The PyTorch step of `cfg["torch_variant"]` (default "plain", the
  baseline of `torch_baseline.py`) on one configuration, with
  `cfg["torch_threads"]` threads (default 2; `tuned` picks its own,
  `two_process` runs 1 per process)."""
  from advmeta_jax.benchmarks import torch_baseline  # pylint: disable=g-import-not-at-top
  variant = cfg.get("torch_variant", "plain")
  threads = cfg.get("torch_threads", 2)
  r = (dict(torch_baseline.benchmark(cfg, threads=threads),
            torch_variant="plain") if variant == "plain" else
       torch_variants.benchmark(cfg, variant, threads=threads))
  r["flops_per_step"] = analytic_step_flops(cfg)
  r["achieved_flops"] = r["flops_per_step"] / r["step_s"]
  r["load_average_1m"] = os.getloadavg()[0]
  return r


# --- one attack ---------------------------------------------------------------

def attack_hparams(name: str, *, pgd_steps: int = 20,
                   cw_steps: int = 100, autoattack_steps: int = 100,
                   autoattack_queries: int = 5000,
                   autoattack_targets: int = 9) -> dict:
  """The hyperparameters an attack is timed with: its registry entry's
  benchmark budget (ε 8/255; AutoAttack's own defaults unless told fewer
  steps, e.g. in a tiny test run)."""
  if name not in attacks.benchmark_attacks():
    raise ConfigError(f"--attacks: no benchmark settings for {name!r}; "
                      f"choose from {list(attacks.benchmark_attacks())}.")
  return attacks.get(name).benchmark(attacks.BenchmarkBudget(
      pgd_steps=pgd_steps, cw_steps=cw_steps,
      autoattack_steps=autoattack_steps,
      autoattack_queries=autoattack_queries,
      autoattack_targets=autoattack_targets))


def run_attack_single(cfg: dict) -> dict:
  """Times one attack on conv4 in this process."""
  size, n = cfg["size"], cfg["batch"]
  model = models.make_conv4(num_classes=5, filters=cfg["filters"],
                            image_size=size)
  apply_fn = models.make_apply_fn(model)
  params = models.init_params(model, jax.random.key(0), (size, size, 3))
  attack = attacks.make_attack(cfg["attack"], cfg["hparams"])
  run_attack = jax.jit(lambda p, x, y, key: attack(
      lambda z: apply_fn(p, z), x, y, key=key))
  keys = jax.random.split(jax.random.key(1), 3)
  x = jax.random.uniform(keys[0], (n, size, size, 3))
  y = jax.random.randint(keys[1], (n,), 0, 5)
  t = time.perf_counter()
  compiled = run_attack.lower(params, x, y, keys[2]).compile()
  compile_s = time.perf_counter() - t
  compiled(params, x, y, keys[2]).block_until_ready()
  times = []
  for i in range(cfg["steps"]):
    t = time.perf_counter()
    compiled(params, x, y, jax.random.fold_in(keys[2], i)).block_until_ready()
    times.append(time.perf_counter() - t)
  call_s = float(np.median(times))
  return {**cfg, "compile_s": compile_s, "call_s": call_s,
          "images_per_s": n / call_s, "device": device_name(),
          "peak_memory_bytes": peak_memory_bytes(),
          "memory_kind": memory_kind(),
          "load_average_1m": os.getloadavg()[0]}


# --- configurations in their own processes ------------------------------------

CHILD_RUNNERS: Dict[str, Callable[[dict], dict]] = {
    "single": run_single, "single_attack": run_attack_single,
    "single_torch": run_torch_single,
    "single_metatest": metatest_speed.run_metatest_single,
    "single_torch_metatest": lambda cfg: torch_metatest.benchmark(
        cfg, cfg["torch_variant"], threads=cfg.get("torch_threads", 2))}


def run_child(mode: str, cfg_json: str) -> None:
  """Runs one configuration (JSON) in this process and prints its result as
  one line `RESULT <json>`: the child's side of `run_in_subprocess`."""
  print("RESULT " + json.dumps(CHILD_RUNNERS[mode](json.loads(cfg_json))))


def run_child_process(mode: str, cfg: dict,
                      timeout_s: Optional[float] = None) -> dict:
  """The result of one configuration run in a fresh Python process, or `cfg`
  with "error" (the child's last stderr line, or the timeout) and
  "stderr" (its tail) when it failed."""
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
  try:
    proc = subprocess.run(
        [sys.executable, "-m", "advmeta_jax.benchmarks.benchmark", mode, json.dumps(cfg)],
        capture_output=True, text=True, check=False, env=env,
        timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return dict(cfg, error=f"timed out after {timeout_s:.0f} s", stderr="")
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not line:
    last = [l for l in proc.stderr.splitlines() if l.strip()]
    return dict(cfg, error=(last[-1][:300] if last else
                            f"exit code {proc.returncode}"),
                stderr=proc.stderr[-2000:])
  return json.loads(line[0][len("RESULT "):])


def run_in_subprocess(mode: str, cfg: dict) -> Optional[dict]:
  """The result of one configuration run in a fresh Python process; None
  (and its stderr on ours) when it failed."""
  r = run_child_process(mode, cfg)
  if "error" in r:
    print(f"{cfg}: failed\n{r['stderr']}", file=sys.stderr)
    return None
  return r


def _run_and_print(mode: str, cfg: dict, describe, into: list) -> None:
  """Runs one configuration in a subprocess; on success appends its result to
  `into` and prints `describe(result)`."""
  r = run_in_subprocess(mode, cfg)
  if r is not None:
    into.append(r)
    print(describe(r), flush=True)


# --- the sections ---------------------------------------------------------------

def _gib(x):
  return "–" if x is None or not np.isfinite(x) else f"{x / 2**30:.2f}"


def _name(r: dict) -> str:
  return f"{r['learner']} {r['size']}x{r['size']} {r['k_shot']}-shot"


def resolved_label(r: dict) -> str:
  """The conv formulation and memory options a row ran with, `auto` ones
  resolved: "hybrid p1+remat (auto)"."""
  res = r.get("resolved") or {}
  impl = res.get("conv_impl", r.get("conv_impl"))
  p, remat = res.get("parallel_tasks", 0), res.get("remat", False)
  opts = "+".join(([f"p{p}"] if p else []) + (["remat"] if remat else []))
  was_auto = AUTO in (r.get("conv_impl"), r.get("remat"),
                      r.get("parallel_tasks"))
  return f"{impl} {opts or 'p0'}" + (" (auto)" if was_auto else "")


def parse_rows(rows: Sequence[str]) -> List[tuple]:
  """`(learner, size, shot)` of each "learner:size:shot" entry."""
  out = []
  for row in rows:
    parts = row.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
      raise ConfigError(f"--rows: {row!r} is not learner:size:shot (e.g. "
                        "maml:84:1).")
    out.append((parts[0], int(parts[1]), int(parts[2])))
  return out


def fastest_torch(torch_results: List[dict], key) -> dict:
  """`{key(row): the fastest PyTorch row}` (most tasks/s or episodes/s)."""
  out = {}
  for r in torch_results:
    rate = r.get("tasks_per_s", r.get("episodes_per_s"))
    best = out.get(key(r))
    if best is None or rate > best.get("tasks_per_s",
                                       best.get("episodes_per_s")):
      out[key(r)] = r
  return out


def _torch_impl(r: dict) -> str:
  """"pytorch 2.13.0+cpu grouped, 2 threads" (and the tuned format)."""
  procs = r.get("processes")
  threads = (f"{procs} × 1 thread" if procs else
             f"{r.get('threads', '?')} thread"
             f"{'s' if r.get('threads') != 1 else ''}")
  fmt = (f", {r['memory_format']}" if r.get("memory_format") ==
         "channels_last" else "")
  return (f"pytorch {r['torch_version']} "
          f"{r.get('torch_variant', 'plain')}, {threads}{fmt}")


def train_table(results: List[dict], torch_results: List[dict]) -> str:
  """The Markdown table of the train section: with PyTorch rows, "× torch"
  is our tasks/s over the fastest PyTorch variant's on the same
  configuration (on a PyTorch row: its tasks/s over the fastest's)."""
  def key(r):
    return (r["learner"], r["size"], r["k_shot"])
  torch_by = fastest_torch(torch_results, key)
  header = ("learner", "impl", "variant", "image", "shot", "s/step", "tasks/s",
            "× torch", "compile s", "GFLOP/step", "MFU %", "peak RSS GiB",
            "RSS after GiB", "XLA GiB")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results + torch_results:
    ref = torch_by.get(key(r))
    ratio = (f"{r['tasks_per_s'] / ref['tasks_per_s']:.2f}"
             if ref is not None else "–")
    impl = (_torch_impl(r) if r.get("impl") == "pytorch"
            else f"jax {resolved_label(r)}")
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


def train_section(o: Options) -> dict:
  """Every learner × size × shots × conv formulation × variant (and the
  PyTorch baseline of maml and aq), each in its own process."""
  variants = {v: variant_fields(v) for v in o.variants}
  check_torch_variants(o.torch_variants)
  results, torch_results = [], []
  combos = (parse_rows(o.rows) if o.rows else
            itertools.product(o.learners, o.sizes, o.shots))
  for learner, size, shot in combos:
    base = dict(learner=learner, size=int(size), k_shot=int(shot),
                backbone=o.backbone, n_way=o.n_way, q_query=o.q_query,
                task_batch_size=o.task_batch_size,
                inner_steps=o.inner_steps, filters=o.filters,
                attack_steps=o.attack_steps, steps=o.steps)
    for impl, (variant, fields) in itertools.product(o.conv_impls,
                                                     variants.items()):
      cfg = dict(base, conv_impl=impl, variant=variant, **fields)
      _run_and_print("single", cfg, lambda r: (
          f"{_name(r)} {resolved_label(r)} {r['variant']}: {r['step_s']:.3f} "
          f"s/step, {r['tasks_per_s']:.2f} tasks/s, compile "
          f"{r['compile_s']:.1f} s, MFU {100 * r['mfu']:.1f}%, "
          f"{r['memory_kind']} {_gib(r['peak_memory_bytes'])} GiB, XLA "
          f"{_gib(r['xla_program_bytes'])} GiB"), results)
    if o.torch and torch_available():
      for variant in o.torch_variants:
        if learner not in torch_variants.VARIANTS[variant]:
          continue
        _run_and_print("single_torch", dict(
            base, first_order=False, torch_threads=o.torch_threads,
            torch_variant=variant), lambda r: (
                f"{_name(r)} {_torch_impl(r)}: {r['step_s']:.3f} s/step, "
                f"{r['tasks_per_s']:.2f} tasks/s, peak RSS "
                f"{_gib(r['peak_memory_bytes'])} GiB"), torch_results)
  if o.torch and not torch_available():
    print("--torch: torch is not importable here; no baseline.",
          file=sys.stderr)
  return save_and_print(o.out, train_table(results, torch_results), results,
                         results=results, torch_results=torch_results)


def attacks_section(o: Options) -> dict:
  """Each attack × image size, each in its own process."""
  results = []
  for name, size in itertools.product(o.attacks, o.sizes):
    cfg = dict(attack=name, hparams=attack_hparams(
        name, pgd_steps=o.pgd_steps, cw_steps=o.cw_steps), size=int(size),
               batch=o.attack_batch, filters=o.filters, steps=o.steps)
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
  return save_and_print(o.out, "\n".join(lines), results,
                         attack_results=results)


def check_torch_variants(names: Sequence[str]) -> None:
  """Raises ConfigError for a name not in `torch_variants.VARIANTS`."""
  unknown = [v for v in names if v not in torch_variants.VARIANTS]
  if unknown:
    raise ConfigError(f"--torch_variants: unknown {unknown}; choose from "
                      f"{list(torch_variants.VARIANTS)}.")


def _metatest_torch(o: Options, cfg: dict, into: list) -> None:
  """The PyTorch meta-test (`torch_metatest.py`) of a maml conv4 PGD row,
  in each of `o.torch_variants` it has, or of an AutoAttack row in `plain`
  (torchattacks), each in its own process."""
  if not (o.torch and torch_available() and cfg["learner"] == "maml"
          and cfg["backbone"] == "conv4"
          and cfg["attack"] in ("pgd", "autoattack")):
    return
  for variant in o.torch_variants:
    if variant in torch_metatest.VARIANTS and (
        cfg["attack"] == "pgd" or variant == "plain"):
      _run_and_print("single_torch_metatest", dict(
          cfg, torch_variant=variant, torch_threads=o.torch_threads),
          lambda r: (f"{metatest_speed.label(r)} {_torch_impl(r)}: "
                     f"{r['episodes_per_s']:.2f} episodes/s"), into)


def _count(name: str, value: str) -> int:
  """A flag's entry that must be an integer >= 0."""
  if not str(value).isdigit():
    raise ConfigError(f"--{name} takes auto or integers >= 0, got "
                      f"{value!r}.")
  return int(value)


def metatest_section(o: Options) -> dict:
  """Meta-test episodes/s of each learner × size × shots × attack
  (`metatest_speed.py`), each in its own process; with `o.torch` the
  PyTorch meta-test of the maml conv4 PGD rows."""
  check_torch_variants(o.torch_variants)
  results, torch_results = [], []
  combos = (parse_rows(o.rows) if o.rows else
            itertools.product(o.learners, o.sizes, o.shots))
  at_once = [None if a == "auto" else _count("episodes_at_once", a)
             for a in o.episodes_at_once]
  for (learner, size, shot), attack in itertools.product(
      list(combos), o.metatest_attacks):
    for a in at_once:
      cfg = metatest_speed.row(
          learner, int(size), int(shot), attack, backbone=o.backbone,
          n_way=o.n_way, q_query=o.q_query, filters=o.filters,
          eval_inner_steps=o.eval_inner_steps,
          episodes_batch=o.episodes_batch, calls=o.steps,
          pgd_steps=o.pgd_steps, apgd_steps=o.apgd_steps,
          square_queries=o.square_queries, conv_impl=o.conv_impls[0],
          episodes_at_once=a)
      _run_and_print("single_metatest", cfg, lambda r: (
          f"{metatest_speed.label(r)}: {r['episodes_per_s']:.2f} episodes/s "
          f"({r['call_s']:.3f} s per {r['episodes_batch']}, first call "
          f"{r['first_call_s']:.1f} s)"), results)
    _metatest_torch(o, cfg, torch_results)
  if o.torch and not torch_available():
    print("--torch: torch is not importable here; no baseline.",
          file=sys.stderr)
  return save_and_print(o.out, metatest_speed.table(results, torch_results),
                        results, metatest_results=results,
                        torch_metatest_results=torch_results)


def run(options: Options) -> dict:
  """Runs `options.section`, prints its table and writes `options.out`;
  returns the JSON written.

  Raises:
    ConfigError: an unknown section, variant option or attack.
  """
  sections = {"train": train_section, "attacks": attacks_section,
              "conv": conv_section, "metatest": metatest_section}
  if options.section not in sections:
    raise ConfigError(f"unknown section {options.section!r}; choose one of: "
                      f"{', '.join(SECTIONS)}.")
  return sections[options.section](options)



if __name__ == "__main__":
  run_child(*sys.argv[1:3])
