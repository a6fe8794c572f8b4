r"""A plain-PyTorch second-order MAML (and AQ) step: the benchmark's baseline.

What users of existing MAML code run: conv4 with transductive BatchNorm (the
same model as `advmeta_jax.models.Conv4`), a Python loop over the tasks of a
batch, the inner loop with `torch.autograd.grad(create_graph=True)`, each
task's meta-loss backpropagated before the next task (so its graph is freed),
one Adam step per batch. AQ adds PGD (random start, `attack_steps` steps of
`step_size` in the ε-ball, at the adapted weights, detached) on the query.
Threads: `torch.set_num_threads`, 2 by default (this project's CPU).

`python -m launch.benchmark --torch` (`benchmark.py`) runs it beside the JAX
step on the same configurations; `tests/test_benchmark.py` checks (when torch
imports) that it computes the same meta-loss and meta-gradient as
`advmeta_jax` from the same parameters and tasks. Plain torch only: no
torchvision, no learn2learn; torch is imported only when a function runs.
"""

from typing import Dict, List, Optional

import numpy as np

from advmeta_jax.benchmarks.measure import median_time
from advmeta_jax.core import models

__all__ = ["adapt", "benchmark", "conv4", "conv_grads_step", "init_params", "meta_loss_and_grads",
           "params_from_jax", "pgd", "random_tasks", "train_attack"]


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def params_from_jax(params) -> List:
  """conv4 parameters of `advmeta_jax` as a list of torch tensors.

  Order: conv{i}.kernel (OIHW), bn{i}.scale, bn{i}.bias for i in 0..3, then
  head kernel ([out, in], the input in NHWC flattening order) and head bias.
  """
  torch = _torch()
  out = []
  for i in range(4):
    out.append(np.transpose(np.asarray(params[f"conv{i}"]["kernel"]),
                            (3, 2, 0, 1)))
    out.append(np.asarray(params[f"bn{i}"]["scale"]))
    out.append(np.asarray(params[f"bn{i}"]["bias"]))
  out.append(np.asarray(params["head"]["kernel"]).T)
  out.append(np.asarray(params["head"]["bias"]))
  return [torch.tensor(np.ascontiguousarray(p), requires_grad=True)
          for p in out]


def init_params(*, filters: int, channels: int, image_size: int,
                num_classes: int, seed: int = 0) -> List:
  """Glorot-uniform conv4 parameters in the layout of `params_from_jax`."""
  torch = _torch()
  gen = torch.Generator().manual_seed(seed)

  def glorot(shape, fan_in, fan_out):
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return (torch.rand(shape, generator=gen) * 2 - 1) * limit

  out, c = [], channels
  for _ in range(4):
    out.append(glorot((filters, c, 3, 3), 9 * c, 9 * filters))
    out += [torch.ones(filters), torch.zeros(filters)]
    c = filters
  features = models.embedding_dim(filters, image_size)
  out.append(glorot((num_classes, features), features, num_classes))
  out.append(torch.zeros(num_classes))
  return [p.requires_grad_() for p in out]


def conv4(params: List, x):
  """conv4 logits of NCHW images; BatchNorm with the batch's statistics."""
  torch = _torch()
  f = torch.nn.functional
  for i in range(4):
    kernel, scale, bias = params[3 * i:3 * i + 3]
    x = f.conv2d(x, kernel, padding=1)
    x = f.batch_norm(x, None, None, scale, bias, training=True, eps=1e-5)
    x = f.max_pool2d(f.relu(x), 2)
  x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)   # NHWC flattening
  return f.linear(x, params[-2], params[-1])


def adapt(params: List, x, y, *, inner_lr: float, steps: int,
          first_order: bool = False) -> List:
  """θ' after `steps` SGD steps on (x, y), differentiable (create_graph)."""
  torch = _torch()
  for _ in range(steps):
    loss = torch.nn.functional.cross_entropy(conv4(params, x), y)
    grads = torch.autograd.grad(loss, params, create_graph=not first_order)
    params = [p - inner_lr * g for p, g in zip(params, grads)]
  return params


def pgd(params: List, x, y, *, eps: float, step_size: float, steps: int,
        generator=None):
  """L-inf PGD with a random start against `params` (detached result)."""
  torch = _torch()
  frozen = [p.detach() for p in params]
  delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
  x_adv = (x + delta).clamp(0, 1)
  for _ in range(steps):
    x_adv.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(conv4(frozen, x_adv), y)
    (g,) = torch.autograd.grad(loss, x_adv)
    x_adv = x_adv.detach() + step_size * g.sign()
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
  return x_adv.detach()


def meta_loss_and_grads(params: List, tasks, *, inner_lr: float, steps: int,
                        learner: str = "maml", first_order: bool = False,
                        attack: Optional[Dict] = None, generator=None):
  """Mean outer loss over the tasks and its gradient w.r.t. `params`.

  `tasks` holds NCHW torch tensors with a leading task axis: (support images,
  support labels, query images, query labels). Each task's loss is
  backpropagated on its own (gradients accumulate in `.grad`), as a plain
  PyTorch MAML does, so only one task's graph is alive at a time.
  """
  torch = _torch()
  xs, ys, xq, yq = tasks
  b = xs.shape[0]
  for p in params:
    p.grad = None
  total = 0.0
  for i in range(b):
    adapted = adapt(params, xs[i], ys[i], inner_lr=inner_lr, steps=steps,
                    first_order=first_order)
    query = xq[i]
    if learner == "aq":
      query = pgd(adapted, query, yq[i], generator=generator, **attack)
    loss = torch.nn.functional.cross_entropy(conv4(adapted, query), yq[i]) / b
    loss.backward()
    total += float(loss.detach())
  return total, [p.grad.clone() for p in params]


def random_tasks(cfg: Dict, dtype=None):
  """The benchmark's random tasks (NCHW, task axis first), seed 1."""
  torch = _torch()
  size, n, k, q, b = (cfg["size"], cfg["n_way"], cfg["k_shot"],
                      cfg["q_query"], cfg["task_batch_size"])
  gen = torch.Generator().manual_seed(1)
  return (torch.rand((b, n * k, 3, size, size), generator=gen, dtype=dtype),
          torch.arange(n).repeat_interleave(k).repeat(b, 1),
          torch.rand((b, n * q, 3, size, size), generator=gen, dtype=dtype),
          torch.arange(n).repeat_interleave(q).repeat(b, 1))


def train_attack(cfg: Dict) -> Dict:
  """AQ's training PGD: ε 8/255, step 2/255, `attack_steps` steps."""
  return dict(eps=8 / 255, step_size=2 / 255, steps=cfg.get("attack_steps", 7))


def benchmark(cfg: Dict, threads: int = 2) -> Dict:
  """Times the baseline's meta-train step (Adam included) on random tasks."""
  torch = _torch()
  import resource  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  params = init_params(filters=cfg["filters"], channels=3,
                       image_size=cfg["size"], num_classes=cfg["n_way"])
  opt = torch.optim.Adam(params, lr=1e-3)
  tasks = random_tasks(cfg)
  gen = torch.Generator().manual_seed(1)
  attack = train_attack(cfg)

  def step():
    meta_loss_and_grads(params, tasks, inner_lr=0.01,
                        steps=cfg["inner_steps"], learner=cfg["learner"],
                        first_order=cfg.get("first_order", False),
                        attack=attack, generator=gen)
    opt.step()

  step_s = median_time(step, cfg["steps"])   # after a warm-up step
  return {**cfg, "impl": "pytorch", "torch_version": torch.__version__,
          "threads": threads, "step_s": step_s,
          "tasks_per_s": cfg["task_batch_size"] / step_s,
          "peak_memory_bytes":
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "memory_kind": "peak RSS"}


def conv_grads_step(x, kernel, proj, *, threads: int = 2):
  """PyTorch's 3×3 SAME `conv2d`, forward and backward, on JAX's layout.

  Args:
    x: `[N, H, W, C]` inputs; kernel: `[3, 3, C, F]` (HWIO); proj: `[N, H, W,
      F]`, the fixed projection whose sum with the output is differentiated.
    threads: `torch.set_num_threads`.

  Returns:
    `(step, grads, version)`: `step()` computes the input and kernel
    gradients (the unit timed), `grads` its result as NHWC and HWIO arrays
    (to check against JAX's) and torch's version.
  """
  torch = _torch()
  torch.set_num_threads(threads)
  nchw = lambda a: torch.tensor(np.transpose(np.asarray(a), (0, 3, 1, 2)))
  tx = nchw(x).requires_grad_()
  tk = torch.tensor(np.transpose(np.asarray(kernel), (3, 2, 0, 1))
                    ).requires_grad_()
  tproj = nchw(proj)

  def step():
    y = torch.nn.functional.conv2d(tx, tk, padding=1)
    return torch.autograd.grad((y * tproj).sum(), (tx, tk))
  gx, gk = step()
  return step, (gx.numpy().transpose(0, 2, 3, 1),
                gk.numpy().transpose(2, 3, 1, 0)), torch.__version__
