r"""The two-process PyTorch variant: CPU data parallelism over the task batch.

What CPU DistributedDataParallel does, written out: `WORLD` processes of one
thread each (`torch.multiprocessing`, spawned), each holding the same
parameters and running the plain loop (`torch_baseline.meta_loss_and_grads`)
on its share of the task batch, then one `all_reduce` (gloo, over a file
store in a temporary directory) of the flattened gradients weighted by each
share's size, so every process holds the batch's mean meta-gradient and
takes the same Adam step. `tests/test_torch_variants.py` checks that it
computes the plain loop's meta-loss and meta-gradient.
"""

import os
import queue as queue_lib
import resource
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

from advmeta_jax.benchmarks import torch_baseline

__all__ = ["WORLD", "benchmark", "meta_loss_and_grads"]

WORLD = 2


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def _share(x, rank: int, world: int):
  """This process's tasks: the `rank`-th of `world` near-equal slices."""
  b = x.shape[0]
  lo, hi = rank * b // world, (rank + 1) * b // world
  return x[lo:hi]


def _mean_over_processes(loss: float, grads: List, share: int, total: int):
  """The batch's mean loss and gradients from each process's mean over its
  share: one `all_reduce` of the share-weighted flat vector."""
  torch = _torch()
  flat = torch.cat([torch.tensor([loss], dtype=grads[0].dtype)]
                   + [g.reshape(-1) for g in grads]) * (share / total)
  torch.distributed.all_reduce(flat)
  out, offset = [], 1
  for g in grads:
    out.append(flat[offset:offset + g.numel()].reshape(g.shape))
    offset += g.numel()
  return float(flat[0]), out


def _worker(rank: int, world: int, store: str, job: Tuple, results) -> None:
  """One process: joins the group, runs `job` ("grads" or "benchmark") on
  its share of the tasks and puts rank 0's result (and every rank's peak
  RSS) on `results`."""
  torch = _torch()
  torch.set_num_threads(1)
  torch.distributed.init_process_group(
      "gloo", init_method=f"file://{store}", rank=rank, world_size=world)
  try:
    kind, payload = job
    if kind == "grads":
      params, tasks, kw = payload
      params = [torch.tensor(p, requires_grad=True) for p in params]
      mine = tuple(torch.tensor(_share(t, rank, world)) for t in tasks)
      loss, grads = torch_baseline.meta_loss_and_grads(params, mine, **kw)
      loss, grads = _mean_over_processes(loss, grads, mine[0].shape[0],
                                         tasks[0].shape[0])
      if rank == 0:
        results.put(("grads", loss, [g.numpy() for g in grads]))
    else:
      r = _benchmark_rank(payload, rank, world)
      results.put(("benchmark", rank, r))
  finally:
    torch.distributed.destroy_process_group()


def _benchmark_rank(cfg: Dict, rank: int, world: int) -> Dict:
  torch = _torch()
  params = torch_baseline.init_params(
      filters=cfg["filters"], channels=3, image_size=cfg["size"],
      num_classes=cfg["n_way"])
  tasks = torch_baseline.random_tasks(cfg)
  mine = tuple(_share(t, rank, world) for t in tasks)
  attack = torch_baseline.train_attack(cfg)
  opt = torch.optim.Adam(params, lr=1e-3)
  gen = torch.Generator().manual_seed(2 + rank)

  def step():
    loss, grads = torch_baseline.meta_loss_and_grads(
        params, mine, inner_lr=0.01, steps=cfg["inner_steps"],
        learner=cfg["learner"], attack=attack, generator=gen)
    _, grads = _mean_over_processes(loss, grads, mine[0].shape[0],
                                    tasks[0].shape[0])
    for p, g in zip(params, grads):
      p.grad = g
    opt.step()

  step()   # warm-up
  times = []
  for _ in range(cfg["steps"]):
    torch.distributed.barrier()
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  return {"step_s": float(np.median(times)),
          "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024}


def _run(job: Tuple, expect: int):
  """Spawns `WORLD` workers on `job`; returns the `expect` results they put."""
  torch = _torch()
  mp = torch.multiprocessing
  ctx = mp.get_context("spawn")
  results = ctx.Queue()
  with tempfile.TemporaryDirectory() as tmp:
    procs = mp.start_processes(
        _worker, args=(WORLD, os.path.join(tmp, "store"), job, results),
        nprocs=WORLD, join=False, start_method="spawn")
    out = []
    while len(out) < expect:
      try:
        out.append(results.get(timeout=1.0))
      except queue_lib.Empty:
        # raises if a worker failed; True once all have ended
        if procs.join(timeout=0.1) and results.empty():
          raise RuntimeError("the workers ended without a result")
    while not procs.join():
      pass
  return out


def meta_loss_and_grads(params: List, tasks, *, inner_lr: float,
                        steps: int) -> Tuple[float, List]:
  """MAML's mean outer loss and meta-gradient over `tasks` (NCHW torch
  tensors, task axis first), computed by `WORLD` processes."""
  torch = _torch()
  job = ("grads", ([p.detach().numpy() for p in params],
                   [t.numpy() for t in tasks],
                   dict(inner_lr=inner_lr, steps=steps)))
  ((_, loss, grads),) = _run(job, expect=1)
  return loss, [torch.tensor(g) for g in grads]


def benchmark(cfg: Dict) -> Dict:
  """Times the two-process step: rank 0's median step (each timed step
  starts at a barrier) and the processes' summed peak RSS."""
  torch = _torch()
  ranks = {r[1]: r[2] for r in _run(("benchmark", cfg), expect=WORLD)}
  step_s = ranks[0]["step_s"]
  return {**cfg, "impl": "pytorch", "torch_variant": "two_process",
          "torch_version": torch.__version__, "threads": 1,
          "processes": WORLD, "memory_format": "contiguous", "step_s": step_s,
          "tasks_per_s": cfg["task_batch_size"] / step_s,
          "peak_memory_bytes": float(sum(r["peak_rss"]
                                         for r in ranks.values())),
          "memory_kind": "peak RSS, all processes"}
