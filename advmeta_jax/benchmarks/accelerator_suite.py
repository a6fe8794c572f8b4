r"""The accelerator suite: one prepared command for the first GPU or TPU lent.

    python -m launch.benchmark --suite=accelerator --out=DIR

On whatever backend it finds, it measures within `BUDGET_S` of wall time
(compilation and process starts included; what is left when the budget is
spent is listed as skipped, so the command ends in under 8 minutes):

  * the meta-train step (s/step, tasks/s, compile s, MFU against a matmul
    peak measured in the same child process, peak device memory from
    `device.memory_stats()`, XLA's figure for the compiled step) of MAML, AQ
    and TAFL at 32×32 and 84×84, 1- and 5-shot, B = 4 and a large B
    (`LARGE_B`, to fill the device), each conv_impl, and the base / remat /
    bf16 / parallel_tasks variants: the budgeted subset `PLAN`, most
    important first (second-order MAML 84×84 1-shot B = 4 in every
    formulation and variant, then AQ and TAFL, then 32×32, 5-shot, large B);
  * attack throughput on conv4 (images/s on a batch of 75): PGD-20, C&W-L2
    (100 steps) and AutoAttack standard, at 32×32 and 84×84;
  * ResNet-12 train steps (ProtoNet clean and with AQ, MAML rematerialized)
    at 84×84 1-shot;
  * the meta-test (`metatest_speed.py`): episodes/s of 10 adaptation steps,
    the attack on the query against the adapted classifier and the score,
    20 episodes per call: MAML conv4 under PGD-20 at 32×32 and 84×84, 1-
    and 5-shot, ProtoNet ResNet-12 under PGD-20, MAML under AutoAttack.

Each row runs in its own process (`benchmark.run_in_subprocess`), so its
peak memory is its own; a row that fails (e.g. out of memory) is recorded
with its error. It writes DIR/accelerator_suite.json and
DIR/accelerator_suite.md, and prints the `autotune.TABLE` entry it would
choose for the backend: the fastest formulation and memory option of MAML
84×84 1-shot B = 4 in float32.

`tiny=True` (`--tiny`) runs a few rows at toy sizes on any backend, so a
CPU test runs the suite end to end; its figures mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from typing import List, Optional, Sequence, Tuple

import jax
import numpy as np

from advmeta_jax.benchmarks import benchmark
from advmeta_jax.benchmarks import metatest_speed

# Wall-time budget of the whole suite, compile included (the issue: < 8 min).
BUDGET_S = 450.0
# The largest a single row may take, and the least left to start one.
ROW_LIMIT_S = 150.0
MIN_LEFT_S = 25.0
# The large task batch of each image size (B = 4: 4.0 GiB at 84×84 1-shot by
# XLA's figure on the CPU; these fill roughly half of an H200).
LARGE_B = {32: 256, 84: 64}


def _train(learner, size, shot, impl, variant, b=4, backbone="conv4",
           robust="none"):
  return ("train", dict(learner=learner, size=size, k_shot=shot,
                        conv_impl=impl, variant=variant, task_batch_size=b,
                        backbone=backbone, robust=robust))


def _metatest(learner, size, shot, attack, backbone="conv4", at_once=None):
  return ("metatest", dict(learner=learner, size=size, k_shot=shot,
                           attack=attack, backbone=backbone,
                           episodes_at_once=at_once))


def _attack(name, size):
  return ("attack", dict(attack=name, size=size))


# Most important first; the budget cuts from the end. AQ and TAFL run in
# the unmeasured accelerator entry's setting (xla, the whole batch vmapped).
PLAN: Tuple[tuple, ...] = (
    _train("maml", 84, 1, "matmul", "base"),
    _train("maml", 84, 1, "xla", "base"),
    _train("maml", 84, 1, "matmul", "bf16"),
    _train("maml", 84, 1, "xla", "bf16"),
    _train("maml", 84, 1, "xla", "remat"),
    _train("maml", 84, 1, "matmul", "p1+remat"),
    _train("maml", 84, 1, "hybrid", "p1+remat"),
    _train("aq", 84, 1, "xla", "base"),
    _train("tafl", 84, 1, "xla", "base"),
    _attack("pgd", 84),
    _metatest("maml", 84, 1, "pgd", at_once=0),
    _metatest("maml", 84, 1, "pgd", at_once=1),
    _train("protonet", 84, 1, "xla", "base", backbone="resnet12"),
    _train("protonet", 84, 1, "xla", "base", backbone="resnet12",
           robust="aq"),
    _train("maml", 84, 1, "xla", "remat", backbone="resnet12"),
    _metatest("maml", 32, 1, "pgd"),
    _metatest("maml", 84, 5, "pgd"),
    _metatest("protonet", 84, 1, "pgd", backbone="resnet12"),
    _metatest("maml", 32, 1, "autoattack"),
    _metatest("maml", 32, 5, "pgd"),
    _train("maml", 84, 1, "matmul", "base", b=LARGE_B[84]),
    _train("maml", 32, 1, "matmul", "base"),
    _train("maml", 84, 5, "matmul", "base"),
    _attack("pgd", 32),
    _attack("cw_l2", 32),
    _attack("autoattack", 32),
    _train("maml", 32, 1, "xla", "base"),
    _train("maml", 32, 1, "matmul", "base", b=LARGE_B[32]),
    _train("aq", 84, 1, "matmul", "p1+remat"),
    _train("aq", 32, 1, "matmul", "base"),
    _train("tafl", 32, 1, "matmul", "base"),
    _train("maml", 32, 5, "matmul", "base"),
    _train("aq", 84, 5, "matmul", "base"),
    _train("maml", 84, 1, "matmul", "p2"),
    _train("maml", 84, 1, "hybrid", "base"),
    _train("maml", 84, 1, "matmul", "bf16", b=LARGE_B[84]),
    _train("maml", 84, 5, "xla", "base"),
    _attack("cw_l2", 84),
    _attack("autoattack", 84),
    _train("tafl", 84, 5, "matmul", "base"),
    _train("aq", 84, 1, "matmul", "base", b=LARGE_B[84]),
)

# The rows of a tiny run (indices into PLAN): matmul and xla, a memory
# variant, a robust learner (AQ; TAFL's step is AQ's with weights) and
# AutoAttack. Each row is a process of its own, so the tiny run stays short.
TINY_ROWS = (0, 1, 7, 10, 25)


@dataclasses.dataclass(frozen=True)
class Shape:
  """The task shape and model of the rows; `size_map` maps the nominal
  image side (32, 84) to the one run (itself, or 16 in a tiny run)."""
  n_way: int = 5
  q_query: int = 15
  inner_steps: int = 5
  filters: int = 32
  attack_steps: int = 7          # PGD steps of AQ/TAFL's training attack
  steps: int = 10                # timed steps (after a warm-up)
  attack_batch: int = 75
  attack_calls: int = 3
  pgd_steps: int = 20
  cw_steps: int = 100
  autoattack_steps: int = 100
  autoattack_queries: int = 5000
  autoattack_targets: int = 9
  eval_inner_steps: int = 10     # meta-test rows: adaptation steps
  episodes_batch: int = 20       # meta-test rows: episodes per call
  tiny: bool = False

  def size(self, nominal: int) -> int:
    return 16 if self.tiny else nominal

  def batch(self, b: int) -> int:
    return (2 if b == 4 else 4) if self.tiny else b


FULL = Shape()
TINY = Shape(n_way=3, q_query=2, inner_steps=1, filters=4, attack_steps=1,
             steps=1, attack_batch=4, attack_calls=1, pgd_steps=2, cw_steps=2,
             autoattack_steps=2, autoattack_queries=4, autoattack_targets=2,
             eval_inner_steps=1, episodes_batch=2, tiny=True)


def row_config(row: tuple, shape: Shape) -> Tuple[str, dict]:
  """The child mode and configuration of one row of `PLAN`."""
  kind, f = row
  if kind == "train":
    return "single", dict(
        learner=f["learner"], size=shape.size(f["size"]),
        nominal_size=f["size"], k_shot=f["k_shot"], n_way=shape.n_way,
        q_query=shape.q_query, task_batch_size=shape.batch(
            f["task_batch_size"]), inner_steps=shape.inner_steps,
        filters=shape.filters, attack_steps=shape.attack_steps,
        steps=shape.steps, conv_impl=f["conv_impl"], variant=f["variant"],
        backbone=f["backbone"], robust=f["robust"],
        **benchmark.variant_fields(f["variant"]))
  if kind == "metatest":
    cfg = metatest_speed.row(
        f["learner"], shape.size(f["size"]), f["k_shot"], f["attack"],
        backbone=f["backbone"], n_way=shape.n_way, q_query=shape.q_query,
        filters=shape.filters, eval_inner_steps=shape.eval_inner_steps,
        episodes_batch=shape.episodes_batch, calls=shape.attack_calls,
        pgd_steps=shape.pgd_steps, apgd_steps=shape.autoattack_steps,
        square_queries=shape.autoattack_queries,
        episodes_at_once=f.get("episodes_at_once"))
    return "single_metatest", dict(cfg, nominal_size=f["size"])
  hparams = benchmark.attack_hparams(
      f["attack"], pgd_steps=shape.pgd_steps, cw_steps=shape.cw_steps,
      autoattack_steps=shape.autoattack_steps,
      autoattack_queries=shape.autoattack_queries,
      autoattack_targets=shape.autoattack_targets)
  return "single_attack", dict(
      attack=f["attack"], hparams=hparams, size=shape.size(f["size"]),
      nominal_size=f["size"], batch=shape.attack_batch,
      filters=shape.filters, steps=shape.attack_calls)


def _commit() -> str:
  try:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True,
        text=True, check=True, timeout=10,
        cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except Exception:  # pylint: disable=broad-except  (no git, no repository)
    return "unknown"


def _episodes_at_once(metatest_results: Sequence[dict]) -> int:
  """`episodes_at_once` of the fastest MAML conv4 84×84 1-shot PGD meta-test
  row (nominal size); 0 (the call vmapped) without one."""
  rows = [r for r in metatest_results if "error" not in r
          and r["learner"] == "maml" and r.get("nominal_size") == 84
          and r.get("backbone", "conv4") == "conv4" and r["k_shot"] == 1
          and r["attack"] == "pgd"]
  if not rows:
    return 0
  best = max(rows, key=lambda r: r["episodes_per_s"])
  return int(best["resolved"]["episodes_at_once"])


def choose_entry(results: Sequence[dict],
                 metatest_results: Sequence[dict] = ()) -> Optional[dict]:
  """The `autotune.TABLE` entry of the fastest float32 second-order MAML
  84×84 1-shot B = 4 row (nominal sizes), or None without one; its
  `episodes_at_once` from the fastest of the MAML 84×84 1-shot PGD
  meta-test rows."""
  rows = [r for r in results if r.get("kind") == "train" and "error" not in r
          and r["learner"] == "maml" and r["nominal_size"] == 84
          and r.get("backbone", "conv4") == "conv4"
          and r["k_shot"] == 1 and r["compute_dtype"] == "float32"
          and not r["first_order"] and r["batch_label"] == "B=4"]
  if not rows:
    return None
  best = max(rows, key=lambda r: r["tasks_per_s"])
  res = best["resolved"]
  others = "; ".join(f"{benchmark.resolved_label(r)} {r['step_s']:.4f}"
                     for r in rows if r is not best)
  return dict(
      conv_impl=res["conv_impl"], tasks_per_device=int(res["parallel_tasks"]),
      remat=bool(res["remat"]),
      episodes_at_once=_episodes_at_once(metatest_results),
      figure=(f"maml 84x84 1-shot B=4: {benchmark.resolved_label(best)} "
              f"{best['step_s']:.4f} s/step ({others})"))


def entry_text(backend: str, entry: dict, commit: str, device: str) -> str:
  """The entry as Python source for autotune.TABLE."""
  return (
      f'    "{backend}": Entry(\n'
      f'        conv_impl="{entry["conv_impl"]}", '
      f'tasks_per_device={entry["tasks_per_device"]}, '
      f'remat={entry["remat"]},\n'
      f'        episodes_at_once={entry["episodes_at_once"]},\n'
      f'        source=("`python -m launch.benchmark --suite=accelerator '
      f'--out=DIR`, commit {commit}, {device}: {entry["figure"]}")),')


def _gib(x) -> str:
  return "–" if x is None or not np.isfinite(x) else f"{x / 2**30:.2f}"


def markdown(payload: dict) -> str:
  """The suite's tables: train rows, attack rows, the chosen entry."""
  m = payload["machine"]
  lines = [f"# Accelerator suite: {payload['device']}", "",
           f"Commit {payload['commit']}, jax {payload['jax']}, backend "
           f"{payload['backend']}, wall time {payload['wall_s']:.0f} s "
           f"(budget {payload['budget_s']:.0f} s), load average "
           f"{m['load_average'][0]:.2f}; command `{m['command']}`."
           + (" Tiny sizes: the figures mean nothing." if payload["tiny"]
              else ""), "",
           "| learner | image | shot | B | impl | variant | s/step | tasks/s "
           "| compile s | MFU % | peak mem GiB | XLA GiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in payload["train_results"]:
    if "error" in r:
      lines.append(f"| {_learner(r)} | {r['nominal_size']} | {r['k_shot']} "
                   f"| {r['task_batch_size']} | {r['conv_impl']} | "
                   f"{r['variant']} | failed: {r['error']} | | | | | |")
      continue
    lines.append(
        f"| {_learner(r)} | {r['nominal_size']} | {r['k_shot']} | "
        f"{r['task_batch_size']} | {benchmark.resolved_label(r)} | "
        f"{r['variant']} | {r['step_s']:.4f} | {r['tasks_per_s']:.1f} | "
        f"{r['compile_s']:.1f} | {100 * r['mfu']:.1f} | "
        f"{_gib(r['peak_memory_bytes'])} | {_gib(r['xla_program_bytes'])} |")
  lines += ["", "| attack | image | images/s | s per batch | compile s | "
            "peak mem GiB |", "|---|---|---|---|---|---|"]
  for r in payload["attack_results"]:
    if "error" in r:
      lines.append(f"| {r['attack']} | {r['nominal_size']} | failed: "
                   f"{r['error']} | | | |")
      continue
    lines.append(f"| {r['attack']} | {r['nominal_size']} | "
                 f"{r['images_per_s']:.1f} | {r['call_s']:.4f} | "
                 f"{r['compile_s']:.1f} | {_gib(r['peak_memory_bytes'])} |")
  lines += ["", "Meta-test (clean support, attacked query, "
            f"{payload['metatest_inner_steps']} adaptation steps, ε 8/255; "
            f"PGD-{payload['metatest_pgd_steps']}, AutoAttack standard):", "",
            metatest_speed.table([dict(r, size=r["nominal_size"])
                                  for r in payload["metatest_results"]])]
  lines += ["", "Goals (not asserted): " + goals(payload)]
  if payload["skipped"]:
    lines += ["", "Skipped (budget spent): " + "; ".join(payload["skipped"])]
  if payload["entry_text"]:
    lines += ["", "autotune.TABLE entry this run chooses:", "", "```python",
              payload["entry_text"], "```"]
  return "\n".join(lines) + "\n"


def goals(payload: dict) -> str:
  """Where the best rows stand against the issue's accelerator goals:
  second-order MAML 84×84 1-shot B = 4 step <= 30 ms, AQ <= 100 ms, MFU
  >= 40%."""
  ok = [r for r in payload["train_results"] if "error" not in r]
  def best(learner):
    rows = [r["step_s"] for r in ok if r["learner"] == learner
            and r.get("backbone", "conv4") == "conv4"
            and r.get("robust", "none") == "none"
            and r["nominal_size"] == 84 and r["k_shot"] == 1
            and r["batch_label"] == "B=4" and r["compute_dtype"] == "float32"]
    return min(rows) if rows else None
  parts = []
  for learner, goal in (("maml", 0.030), ("aq", 0.100)):
    b = best(learner)
    parts.append(f"{learner} 84x84 1-shot B=4 step <= {1e3 * goal:.0f} ms: "
                 + ("unmeasured" if b is None else
                    f"{1e3 * b:.1f} ms ({'met' if b <= goal else 'not met'})"))
  mfu = max((r["mfu"] for r in ok), default=None)
  parts.append("MFU >= 40%: " + ("unmeasured" if mfu is None else
                                  f"best {100 * mfu:.1f}% ("
                                  f"{'met' if mfu >= 0.4 else 'not met'})"))
  return "; ".join(parts) + "."


def _learner(r: dict) -> str:
  """`maml`, `protonet+aq resnet12`: the learner, its robust objective and
  its backbone where they are not the defaults."""
  name = r["learner"] + (f"+{r['robust']}" if r.get("robust", "none")
                         != "none" else "")
  backbone = r.get("backbone", "conv4")
  return name if backbone == "conv4" else f"{name} {backbone}"


def _describe(row: tuple) -> str:
  kind, f = row
  if kind == "train":
    return (f"{_learner(f)} {f['size']} {f['k_shot']}-shot "
            f"B={f['task_batch_size']} {f['conv_impl']} {f['variant']}")
  if kind == "metatest":
    at_once = f.get("episodes_at_once")
    return (f"meta-test {_learner(f)} {f['size']} {f['k_shot']}-shot "
            f"{f['attack']}" + ("" if at_once is None
                                else f" {at_once} at once"))
  return f"{f['attack']} {f['size']}"


def run(out_dir: str, *, tiny: bool = False,
        budget_s: float = BUDGET_S) -> dict:
  """Runs the suite (tiny: `TINY_ROWS` at `TINY` sizes) and writes
  `out_dir`/accelerator_suite.json and .md; returns the JSON written."""
  start = time.perf_counter()
  os.makedirs(out_dir, exist_ok=True)
  shape = TINY if tiny else FULL
  plan = [PLAN[i] for i in TINY_ROWS] if tiny else list(PLAN)
  train_results: List[dict] = []
  attack_results: List[dict] = []
  metatest_results: List[dict] = []
  skipped: List[str] = []
  for row in plan:
    left = budget_s - (time.perf_counter() - start)
    if left < MIN_LEFT_S:
      skipped.append(_describe(row))
      continue
    mode, cfg = row_config(row, shape)
    r = benchmark.run_child_process(mode, cfg,
                                    timeout_s=min(ROW_LIMIT_S, left))
    r["kind"] = row[0]
    if row[0] == "train":
      r["batch_label"] = "B=4" if row[1]["task_batch_size"] == 4 else "large"
      train_results.append(r)
    elif row[0] == "metatest":
      metatest_results.append(r)
    else:
      attack_results.append(r)
    print(_describe(row) + ": " + (
        f"failed ({r['error']})" if "error" in r else
        f"{r['step_s']:.4f} s/step, MFU {100 * r['mfu']:.1f}%"
        if row[0] == "train" else
        f"{r['episodes_per_s']:.2f} episodes/s" if row[0] == "metatest"
        else f"{r['images_per_s']:.1f} images/s"), flush=True)
  backend = jax.default_backend()
  device = benchmark.device_name()  # pylint: disable=protected-access
  commit = _commit()
  entry = choose_entry(train_results, metatest_results)
  payload = {
      "machine": benchmark.machine(), "device": device, "backend": backend,
      "jax": jax.__version__, "commit": commit, "tiny": tiny,
      "budget_s": budget_s, "wall_s": time.perf_counter() - start,
      "train_results": train_results, "attack_results": attack_results,
      "metatest_results": metatest_results,
      "metatest_inner_steps": shape.eval_inner_steps,
      "metatest_pgd_steps": shape.pgd_steps,
      "skipped": skipped, "entry": entry,
      "entry_text": (entry_text(backend, entry, commit, device)
                     if entry else None)}
  with open(os.path.join(out_dir, "accelerator_suite.json"), "w") as f:
    json.dump(payload, f, indent=2)
  text = markdown(payload)
  with open(os.path.join(out_dir, "accelerator_suite.md"), "w") as f:
    f.write(text)
  print(text)
  return payload


__all__ = ["BUDGET_S", "FULL", "LARGE_B", "PLAN", "TINY", "TINY_ROWS",
           "choose_entry", "entry_text", "markdown", "row_config", "run"]
