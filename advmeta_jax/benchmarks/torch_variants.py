r"""Faster PyTorch second-order MAML (and AQ) steps than the plain loop.

The plain loop (`torch_baseline.py`) is what most MAML code runs. A PyTorch
user who cares about speed writes one of these instead; each takes the same
parameters (the layout of `torch_baseline.params_from_jax`) and tasks and
returns the same meta-loss and meta-gradient
(`tests/test_torch_variants.py`: float64 against the plain loop, float32
against `advmeta_jax`).

    plain        torch_baseline.py: a Python loop over the tasks,
                 autograd.grad(create_graph=True), `threads` threads
    tuned        the plain loop with its memory format (contiguous NCHW or
                 channels-last) and thread count (1 .. cores) picked by
                 timing one step of each after a warm-up
    func_vmap    torch.func: `functional_call` of an `nn.Module` conv4,
                 `grad` of the inner loop, `vmap` over the tasks
    grouped      the tasks folded into channels: per-task kernels as one
                 grouped convolution (groups = B), per-task BatchNorm
                 statistics as per-channel ones, per-task heads as one
                 batched matmul; autograd.grad(create_graph=True)
    two_process  2 processes of 1 thread each, the task batch split between
                 them, the gradients summed by one `all_reduce` (gloo), as
                 CPU DistributedDataParallel does (`torch_data_parallel.py`)
    compiled     `torch.compile` of the grouped step written with torch.func
                 (MAML only)

BatchNorm is written out (`batch_norm`: the batch's mean and biased variance
over N, H, W) wherever the model runs under `torch.func`: with
`F.batch_norm` under `torch.func.vmap` the second-order meta-gradient came
out wrong with no error raised (PyTorch 2.13.0+cpu: off by 7–19% of its
largest element on the tests' problem in float64).

`torch.compile` of the plain loop (or of conv4 alone, then differentiated
twice) fails at the double backward: aot_autograd's compiled function has
no second derivative ("torch.compile with aot_autograd does not currently
support double backward", `COMPILE_FAILURE`). Compiling the torch.func step
works, because its derivatives are all inside the traced function.

`python -m launch.benchmark --torch` runs each variant beside the JAX step;
torch is imported only when a function runs.
"""

import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from advmeta_jax.benchmarks import torch_baseline
from advmeta_jax.benchmarks.measure import median_time
from advmeta_jax.errors import ConfigError

__all__ = ["COMPILE_FAILURE", "VARIANTS", "batch_norm", "benchmark",
           "conv4_module", "fold_tasks", "func_vmap_step", "grouped_adapt",
           "grouped_conv4", "grouped_func_step", "grouped_meta_loss_and_grads",
           "grouped_pgd", "make_step", "meta_loss_and_grads",
           "per_task_loss", "per_task_params", "pgd_starts", "project"]

# Variant -> learners it runs.
VARIANTS = {"plain": ("maml", "aq"), "tuned": ("maml", "aq"),
            "func_vmap": ("maml", "aq"), "grouped": ("maml", "aq"),
            "two_process": ("maml", "aq"), "compiled": ("maml",)}
# The last line of the error `torch.compile` of the plain loop ends with.
COMPILE_FAILURE = ("RuntimeError: torch.compile with aot_autograd does not "
                   "currently support double backward")


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def batch_norm(x, scale, bias, eps: float = 1e-5):
  """Transductive BatchNorm of NCHW `x` written out: the batch's mean and
  biased variance per channel, as `models.TransductiveBatchNorm`."""
  mean = x.mean(dim=(0, 2, 3), keepdim=True)
  var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
  return ((x - mean) * (var + eps).rsqrt() * scale[None, :, None, None]
          + bias[None, :, None, None])


# --- torch.func over tasks ----------------------------------------------------

def conv4_module(params: List):
  """conv4 as an `nn.Module` (BatchNorm written out) with the shapes of
  `params`; its `named_parameters()` come in the order of `params`."""
  torch = _torch()
  nn = torch.nn

  class BatchNorm(nn.Module):
    def __init__(self, f):
      super().__init__()
      self.weight = nn.Parameter(torch.ones(f))
      self.bias = nn.Parameter(torch.zeros(f))

    def forward(self, x):
      return batch_norm(x, self.weight, self.bias)

  class Conv4(nn.Module):
    def __init__(self, channels, filters, features, classes):
      super().__init__()
      blocks, c = [], channels
      for _ in range(4):
        blocks.append(nn.Sequential(
            nn.Conv2d(c, filters, 3, padding=1, bias=False),
            BatchNorm(filters), nn.ReLU(), nn.MaxPool2d(2)))
        c = filters
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Linear(features, classes)

    def forward(self, x):
      x = self.blocks(x)
      return self.head(x.permute(0, 2, 3, 1).flatten(1))   # NHWC flattening

  filters, channels = params[0].shape[:2]
  classes, features = params[-2].shape
  with torch.device("meta"):
    return Conv4(channels, filters, features, classes)


def _func_task_loss(model, names, *, inner_lr, steps, learner, attack):
  """One task's outer loss `(params dict, xs, ys, xq, yq, start)` under
  torch.func (`start`: AQ's PGD random start, the query plus noise)."""
  torch = _torch()
  from torch.func import functional_call, grad  # pylint: disable=g-import-not-at-top
  ce = torch.nn.functional.cross_entropy
  logits = lambda p, x: functional_call(model, p, (x,))

  def task_loss(p, xs, ys, xq, yq, start):
    for _ in range(steps):
      g = grad(lambda q: ce(logits(q, xs), ys))(p)
      p = {k: p[k] - inner_lr * g[k] for k in names}
    if learner == "aq":
      frozen = {k: v.detach() for k, v in p.items()}
      x_adv = project(start, xq, attack["eps"])
      for _ in range(attack["steps"]):
        g = grad(lambda z: ce(logits(frozen, z), yq, reduction="sum"))(x_adv)
        x_adv = project(x_adv + attack["step_size"] * g.sign(), xq,
                         attack["eps"])
      xq = x_adv.detach()
    return ce(logits(p, xq), yq)
  return task_loss


def project(x_adv, x, eps):
  """Onto the ε-ball around `x` ∩ [0, 1] (as `attacks.linf.project_linf`)."""
  torch = _torch()
  return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def pgd_starts(tasks, attack, generator):
  """AQ's PGD random starts `xq + U(−ε, ε)`, one per query image, drawn as
  the plain loop draws them (float32, task after task)."""
  torch = _torch()
  xq = tasks[2]
  if attack is None:
    return torch.zeros((xq.shape[0],), dtype=xq.dtype)
  noise = (torch.rand(xq.shape, generator=generator) * 2 - 1) * attack["eps"]
  return xq + noise.to(xq.dtype)


def func_vmap_step(params: List, *, inner_lr: float, steps: int,
                   learner: str = "maml", attack: Optional[Dict] = None):
  """`(tasks, starts) -> (loss, grads)`: torch.func's `grad_and_value` of
  the mean over a `vmap` of the tasks' outer losses."""
  from torch.func import grad_and_value, vmap  # pylint: disable=g-import-not-at-top
  model = conv4_module(params)
  names = [n for n, _ in model.named_parameters()]
  task_loss = _func_task_loss(model, names, inner_lr=inner_lr, steps=steps,
                              learner=learner, attack=attack)
  in_dims = (None, 0, 0, 0, 0, 0 if learner == "aq" else None)

  def step(theta, tasks, starts):
    def meta_loss(p):
      return vmap(task_loss, in_dims=in_dims)(p, *tasks, starts).mean()
    g, loss = grad_and_value(meta_loss)(dict(zip(names, theta)))
    return loss, [g[n] for n in names]
  return step


# --- the tasks folded into channels (grouped convolutions) --------------------

def fold_tasks(x):
  """`[B, N, C, H, W]` -> `[N, B·C, H, W]`: task b's channels are group b."""
  b, n, c, h, w = x.shape
  return x.transpose(0, 1).reshape(n, b * c, h, w)


def per_task_params(params: List, b: int) -> List:
  """θ repeated for `b` tasks (a leading task axis), differentiable."""
  return [p.unsqueeze(0).expand(b, *p.shape) for p in params]


def grouped_conv4(params: List, x):
  """conv4 logits `[B, N, classes]` of `fold_tasks` images `x` with per-task
  parameters (leading axis B): grouped convolutions, BatchNorm statistics
  per task and channel, per-task heads."""
  torch = _torch()
  f = torch.nn.functional
  b = params[0].shape[0]
  for i in range(4):
    kernel, scale, bias = params[3 * i:3 * i + 3]
    x = f.conv2d(x, kernel.reshape(-1, *kernel.shape[2:]), padding=1,
                 groups=b)
    x = batch_norm(x, scale.reshape(-1), bias.reshape(-1))
    x = f.max_pool2d(f.relu(x), 2)
  n, _, h, w = x.shape
  x = x.reshape(n, b, -1, h, w).permute(1, 0, 3, 4, 2).reshape(b, n, -1)
  return torch.einsum("bnd,bkd->bnk", x, params[-2]) + params[-1][:, None, :]


def per_task_loss(logits, y):
  """`[B]` mean cross-entropy of each task (`logits` `[B, N, K]`)."""
  b, n, k = logits.shape
  return _torch().nn.functional.cross_entropy(
      logits.reshape(b * n, k), y.reshape(-1), reduction="none"
  ).reshape(b, n).mean(1)


def grouped_adapt(params: List, xs, ys, *, inner_lr: float, steps: int,
                  create_graph: bool = True) -> List:
  """Every task's θ' at once: `steps` SGD steps on the sum of the tasks'
  support losses (task b's gradient is its own loss's), `xs` folded."""
  torch = _torch()
  for _ in range(steps):
    loss = per_task_loss(grouped_conv4(params, xs), ys).sum()
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    params = [p - inner_lr * g for p, g in zip(params, grads)]
    if not create_graph:
      params = [p.detach().requires_grad_() for p in params]
  return params


def grouped_pgd(params: List, x, y, start, *, eps: float, step_size: float,
                steps: int):
  """L∞ PGD of every task at once against per-task `params` (detached):
  `x`, `start` `[B, Q, C, H, W]`, the loss the sum of the cross-entropies
  (as `attacks.pgd`); returns `[B, Q, C, H, W]`."""
  torch = _torch()
  frozen = [p.detach() for p in params]
  x_adv = project(start, x, eps)
  for _ in range(steps):
    x_adv.requires_grad_(True)
    logits = grouped_conv4(frozen, fold_tasks(x_adv))
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
    (g,) = torch.autograd.grad(loss, x_adv)
    x_adv = project(x_adv.detach() + step_size * g.sign(), x, eps)
  return x_adv.detach()


def grouped_meta_loss_and_grads(params: List, tasks, starts=None, *,
                                inner_lr: float, steps: int,
                                learner: str = "maml",
                                attack: Optional[Dict] = None):
  """Mean outer loss over the tasks and its gradient, all tasks at once."""
  torch = _torch()
  xs, ys, xq, yq = tasks
  adapted = grouped_adapt(per_task_params(params, xs.shape[0]), fold_tasks(xs),
                          ys, inner_lr=inner_lr, steps=steps)
  if learner == "aq":
    xq = grouped_pgd(adapted, xq, yq, starts, **attack)
  loss = per_task_loss(grouped_conv4(adapted, fold_tasks(xq)), yq).mean()
  return loss.detach(), list(torch.autograd.grad(loss, params))


def grouped_func_step(*, inner_lr: float, steps: int):
  """`(theta, tasks, starts) -> (loss, grads)` of the grouped MAML step
  written with torch.func (`grad` inside `grad_and_value`): what
  `torch.compile` traces whole."""
  from torch.func import grad, grad_and_value  # pylint: disable=g-import-not-at-top

  def step(theta, tasks, starts):
    del starts
    xs, ys, xq, yq = tasks
    b = xs.shape[0]
    xs, xq = fold_tasks(xs), fold_tasks(xq)

    def meta_loss(theta):
      p = per_task_params(theta, b)
      for _ in range(steps):
        g = grad(lambda q: per_task_loss(grouped_conv4(q, xs), ys).sum())(p)
        p = [a - inner_lr * d for a, d in zip(p, g)]
      return per_task_loss(grouped_conv4(p, xq), yq).mean()
    g, loss = grad_and_value(meta_loss)(list(theta))
    return loss, list(g)
  return step


# --- one interface over the variants ------------------------------------------

def make_step(variant: str, params: List, *, inner_lr: float, steps: int,
              learner: str = "maml", attack: Optional[Dict] = None
              ) -> Callable:
  """`(params, tasks, starts) -> (loss, grads)` of one in-process variant
  (`two_process` is `torch_data_parallel.meta_loss_and_grads`)."""
  torch = _torch()
  if learner not in VARIANTS.get(variant, (learner,)):
    raise ConfigError(f"the PyTorch variant {variant} runs "
                      f"{VARIANTS[variant]}, not {learner!r}.")
  kw = dict(inner_lr=inner_lr, steps=steps)
  if variant in ("plain", "tuned"):
    gen = torch.Generator().manual_seed(0)

    def loop(theta, tasks, starts):
      del starts   # the plain loop draws its own starts
      return torch_baseline.meta_loss_and_grads(
          theta, tasks, learner=learner, attack=attack, generator=gen, **kw)
    return loop
  if variant == "func_vmap":
    return func_vmap_step(params, learner=learner, attack=attack, **kw)
  if variant == "grouped":
    return lambda theta, tasks, starts: grouped_meta_loss_and_grads(
        theta, tasks, starts, learner=learner, attack=attack, **kw)
  if variant == "compiled":
    return torch.compile(grouped_func_step(**kw))
  raise ConfigError(f"unknown PyTorch variant {variant!r}; choose from "
                    f"{list(VARIANTS)}.")


def meta_loss_and_grads(variant: str, params: List, tasks, *, inner_lr: float,
                        steps: int) -> Tuple[float, List]:
  """MAML's mean outer loss and meta-gradient by `variant` (the plain
  loop's result, computed its way)."""
  if variant == "two_process":
    from advmeta_jax.benchmarks import torch_data_parallel  # pylint: disable=g-import-not-at-top
    return torch_data_parallel.meta_loss_and_grads(
        params, tasks, inner_lr=inner_lr, steps=steps)
  params = [p.detach().requires_grad_() for p in params]
  loss, grads = make_step(variant, params, inner_lr=inner_lr, steps=steps)(
      params, tasks, None)
  return float(loss.detach()), [g.detach() for g in grads]


def benchmark(cfg: Dict, variant: str, threads: int = 2) -> Dict:
  """Times `variant`'s meta-train step (Adam included) on random tasks: a
  row of the benchmark's train table."""
  torch = _torch()
  import resource  # pylint: disable=g-import-not-at-top
  if variant == "two_process":
    from advmeta_jax.benchmarks import torch_data_parallel  # pylint: disable=g-import-not-at-top
    return torch_data_parallel.benchmark(cfg)
  torch.set_num_threads(threads)
  params = torch_baseline.init_params(
      filters=cfg["filters"], channels=3, image_size=cfg["size"],
      num_classes=cfg["n_way"])
  tasks = torch_baseline.random_tasks(cfg)
  attack = (torch_baseline.train_attack(cfg) if cfg["learner"] == "aq"
            else None)
  fn = make_step(variant, params, inner_lr=0.01, steps=cfg["inner_steps"],
                 learner=cfg["learner"], attack=attack)
  opt = torch.optim.Adam(params, lr=1e-3)
  gen = torch.Generator().manual_seed(2)
  chosen = {"threads": threads, "memory_format": "contiguous"}
  state = {"tasks": tasks}

  def step():
    starts = pgd_starts(state["tasks"], attack, gen)
    _, grads = fn(params, state["tasks"], starts)
    for p, g in zip(params, grads):
      p.grad = g.detach()
    opt.step()

  t = time.perf_counter()
  step()   # warm-up (and compilation)
  first_s = time.perf_counter() - t
  if variant == "tuned":
    chosen = _tune(step, state, tasks, params)
  step_s = median_time(step, cfg["steps"])   # after one more warm-up step
  return {**cfg, "impl": "pytorch", "torch_variant": variant,
          "torch_version": torch.__version__, **chosen,
          "first_step_s": first_s, "step_s": step_s,
          "tasks_per_s": cfg["task_batch_size"] / step_s,
          "peak_memory_bytes":
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "memory_kind": "peak RSS"}


def _tune(step, state, tasks, params) -> Dict:
  """Times one step at each memory format × thread count and keeps the
  fastest (the tuned variant): `state["tasks"]` and the kernels' memory
  take the chosen format."""
  torch = _torch()

  def set_format(fmt):
    to = (_nhwc if fmt == "channels_last" else lambda t: t.contiguous())
    state["tasks"] = tuple(to(t) if t.dim() == 5 else t for t in tasks)
    for p in params:
      if p.dim() == 4:
        p.data = (p.data.contiguous(memory_format=torch.channels_last)
                  if fmt == "channels_last" else p.data.contiguous())

  times = {}
  for fmt in ("contiguous", "channels_last"):
    set_format(fmt)
    for threads in range(1, (os.cpu_count() or 1) + 1):
      torch.set_num_threads(threads)
      t = time.perf_counter()
      step()
      times[(fmt, threads)] = time.perf_counter() - t
  fmt, threads = min(times, key=times.get)
  set_format(fmt)
  torch.set_num_threads(threads)
  return {"threads": threads, "memory_format": fmt}


def _nhwc(x):
  """`[B, N, C, H, W]` stored as `[B, N, H, W, C]`, so that each task's
  `[N, C, H, W]` slice is channels-last."""
  return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
