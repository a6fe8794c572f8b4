r"""The meta-test row's workload in PyTorch: adapt, PGD, score.

The same work as one episode of `metatest_speed.py` (one robust-table
cell, `evaluation.metatest.run_case` on the clean-support / attacked-query
case): conv4 with transductive BatchNorm adapted by `inner_steps` SGD steps
of size `inner_lr` on the clean support (no second-order graph: nothing is
differentiated through it at test time), then L∞ PGD (`pgd_steps` steps of
ε/4 from a uniform random start in the ε-ball, the loss the sum of the
query's cross-entropies, as `attacks.pgd`) against the adapted weights,
then the cross-entropy and accuracy of the clean and of the attacked query
under the adapted weights. A row whose attack is "autoattack" runs
torchattacks' AutoAttack standard (`crosscheck_autoattack.
torchattacks_standard`: `apgd_steps` iterations, `square_queries` Square
queries, ε 8/255) in place of PGD, the `plain` way only; torchattacks
attacks only the points still classified correctly after each stage, so its
work, unlike `advmeta_jax`'s fixed-shape stages, shrinks with the model's
accuracy. Three ways:

    plain      episode after episode, autograd (what evaluation code does)
    grouped    every episode of a call at once, folded into channels:
               grouped convolutions with per-episode kernels
               (`torch_variants.grouped_conv4`)
    func_vmap  `torch.func.vmap` over the episodes of a function written with
               `torch.func.grad` and `functional_call` (BatchNorm written out)

`tests/test_torch_variants.py` checks that the adapted logits equal
`advmeta_jax`'s on one episode and that PGD from a given start equals
`attacks.pgd_iterations` element-wise, and that the three ways agree.
"""

import os
import resource
import time
from typing import Dict, List

import numpy as np

from advmeta_jax.benchmarks import torch_baseline
from advmeta_jax.benchmarks import torch_variants
from advmeta_jax.errors import ConfigError

__all__ = ["VARIANTS", "adapt", "benchmark", "pgd", "random_episodes",
           "run_episodes"]

VARIANTS = ("plain", "grouped", "func_vmap")
EPS, STEP = 8 / 255, 2 / 255   # ε and the protocol's step ε/4


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def adapt(params: List, xs, ys, *, inner_lr: float, steps: int) -> List:
  """θ' of one episode: `steps` SGD steps on the support loss (detached)."""
  torch = _torch()
  params = [p.detach().requires_grad_() for p in params]
  for _ in range(steps):
    loss = torch.nn.functional.cross_entropy(
        torch_baseline.conv4(params, xs), ys)
    grads = torch.autograd.grad(loss, params)
    params = [(p - inner_lr * g).detach().requires_grad_()
              for p, g in zip(params, grads)]
  return [p.detach() for p in params]


def pgd(params: List, x, y, start, *, eps: float, step_size: float,
        steps: int):
  """L∞ PGD of one episode's query from `start` (projected first)."""
  torch = _torch()
  x_adv = torch_variants.project(start, x, eps)
  for _ in range(steps):
    x_adv.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(
        torch_baseline.conv4(params, x_adv), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x_adv)
    x_adv = torch_variants.project(x_adv.detach() + step_size * g.sign(), x,
                                   eps)
  return x_adv.detach()


def _scores(logits, y) -> Dict:
  """Per-episode mean cross-entropy and accuracy (`logits` `[E, Q, K]`)."""
  torch = _torch()
  ce = torch.nn.functional.cross_entropy(
      logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
  return {"loss": ce.reshape(y.shape).mean(1),
          "accuracy": (logits.argmax(-1) == y).to(logits.dtype).mean(1)}


def _plain(params, episodes, starts, *, inner_lr, steps, pgd_steps):
  xs, ys, xq, yq = episodes
  clean, adv = [], []
  for e in range(xs.shape[0]):
    adapted = adapt(params, xs[e], ys[e], inner_lr=inner_lr, steps=steps)
    x_adv = pgd(adapted, xq[e], yq[e], starts[e], eps=EPS, step_size=STEP,
                steps=pgd_steps)
    clean.append(torch_baseline.conv4(adapted, xq[e]))
    adv.append(torch_baseline.conv4(adapted, x_adv))
  torch = _torch()
  return torch.stack(clean), torch.stack(adv)


def _plain_autoattack(params, episodes, *, n_way, inner_lr, steps,
                      apgd_steps, square_queries, seed=0):
  """`_plain` with torchattacks' AutoAttack standard in place of PGD."""
  from advmeta_jax.benchmarks import crosscheck_autoattack  # pylint: disable=g-import-not-at-top
  torch = _torch()
  xs, ys, xq, yq = episodes
  clean, adv = [], []
  for e in range(xs.shape[0]):
    adapted = adapt(params, xs[e], ys[e], inner_lr=inner_lr, steps=steps)
    model = _adapted_module(adapted)
    attack = crosscheck_autoattack.torchattacks_standard(
        model, eps=EPS, num_classes=n_way, seed=seed + e,
        num_steps=apgd_steps, num_queries=square_queries)
    x_adv = attack(xq[e], yq[e])
    with torch.no_grad():
      clean.append(model(xq[e]))
      adv.append(model(x_adv))
  return torch.stack(clean), torch.stack(adv)


def _adapted_module(params):
  """conv4 at adapted weights as the `nn.Module` torchattacks expects."""
  torch = _torch()

  class Adapted(torch.nn.Module):
    def forward(self, x):
      return torch_baseline.conv4(params, x)

  return Adapted().eval()


def _grouped(params, episodes, starts, *, inner_lr, steps, pgd_steps):
  xs, ys, xq, yq = episodes
  theta = [p.detach().unsqueeze(0).repeat(xs.shape[0], *(1,) * p.dim())
           .requires_grad_() for p in params]
  adapted = torch_variants.grouped_adapt(
      theta, torch_variants.fold_tasks(xs), ys, inner_lr=inner_lr,
      steps=steps, create_graph=False)
  adapted = [p.detach() for p in adapted]
  x_adv = torch_variants.grouped_pgd(adapted, xq, yq, starts, eps=EPS,
                                     step_size=STEP, steps=pgd_steps)
  return (torch_variants.grouped_conv4(adapted, torch_variants.fold_tasks(xq)),
          torch_variants.grouped_conv4(adapted,
                                       torch_variants.fold_tasks(x_adv)))


def _func_vmap(params, episodes, starts, *, inner_lr, steps, pgd_steps):
  torch = _torch()
  from torch.func import functional_call, grad, vmap  # pylint: disable=g-import-not-at-top
  ce = torch.nn.functional.cross_entropy
  model = torch_variants.conv4_module(params)
  names = [n for n, _ in model.named_parameters()]
  logits = lambda p, x: functional_call(model, p, (x,))

  def episode(theta, xs, ys, xq, yq, start):
    p = theta
    for _ in range(steps):
      g = grad(lambda q: ce(logits(q, xs), ys))(p)
      p = {k: p[k] - inner_lr * g[k] for k in names}
    x_adv = torch_variants.project(start, xq, EPS)
    for _ in range(pgd_steps):
      g = grad(lambda z: ce(logits(p, z), yq, reduction="sum"))(x_adv)
      x_adv = torch_variants.project(x_adv + STEP * g.sign(), xq, EPS)
    return logits(p, xq), logits(p, x_adv)

  theta = {n: p.detach() for n, p in zip(names, params)}
  return vmap(episode, in_dims=(None, 0, 0, 0, 0, 0))(theta, *episodes,
                                                      starts)


def run_episodes(variant: str, params: List, episodes, starts, *,
                 inner_lr: float = 0.01, steps: int = 10,
                 pgd_steps: int = 20):
  """`(clean logits, attacked logits)`, each `[E, Q, K]`, of the episodes
  (NCHW tensors with a leading episode axis) from the PGD `starts`."""
  run = {"plain": _plain, "grouped": _grouped, "func_vmap": _func_vmap}
  if variant not in run:
    raise ConfigError(f"unknown PyTorch meta-test variant {variant!r}; "
                      f"choose from {list(VARIANTS)}.")
  return run[variant](params, episodes, starts, inner_lr=inner_lr,
                      steps=steps, pgd_steps=pgd_steps)


def random_episodes(cfg: Dict, seed: int):
  """`episodes_batch` episodes of uniform random 8-bit images (labels in
  class order) and their PGD random starts (uniform in the ε-ball,
  projected onto [0, 1], as `attacks.linf_random_start`)."""
  torch = _torch()
  gen = torch.Generator().manual_seed(seed)
  e, n, k, q, size = (cfg["episodes_batch"], cfg["n_way"], cfg["k_shot"],
                      cfg["q_query"], cfg["size"])
  image = lambda m: torch.randint(0, 256, (e, m, 3, size, size),
                                  generator=gen) / 255.0
  labels = lambda per: torch.arange(n).repeat_interleave(per).repeat(e, 1)
  episodes = (image(n * k), labels(k), image(n * q), labels(q))
  noise = (torch.rand(episodes[2].shape, generator=gen) * 2 - 1) * EPS
  return episodes, torch_variants.project(episodes[2] + noise, episodes[2],
                                          EPS)


def benchmark(cfg: Dict, variant: str, threads: int = 2) -> Dict:
  """Times `variant` on a meta-test row (`metatest_speed.row`'s dict): the
  first call, then the median of `calls` calls of `episodes_batch`
  episodes."""
  torch = _torch()
  torch.set_num_threads(threads)
  params = [p.detach() for p in torch_baseline.init_params(
      filters=cfg["filters"], channels=3, image_size=cfg["size"],
      num_classes=cfg["n_way"])]

  if cfg["attack"] not in ("pgd", "autoattack") or (
      cfg["attack"] == "autoattack" and variant != "plain"):
    raise ConfigError(f"the PyTorch meta-test runs pgd in {list(VARIANTS)} "
                      f"and autoattack in plain, not {cfg['attack']!r} in "
                      f"{variant!r}.")

  def call(seed):
    episodes, starts = random_episodes(cfg, seed)
    if cfg["attack"] == "autoattack":
      clean, adv = _plain_autoattack(
          params, episodes, n_way=cfg["n_way"], inner_lr=0.01, steps=cfg["eval_inner_steps"],
          apgd_steps=cfg["apgd_steps"], square_queries=cfg["square_queries"],
          seed=seed)
    else:
      clean, adv = run_episodes(variant, params, episodes, starts,
                                steps=cfg["eval_inner_steps"],
                                pgd_steps=cfg["pgd_steps"])
    with torch.no_grad():
      return _scores(clean, episodes[3]), _scores(adv, episodes[3])

  t = time.perf_counter()
  call(0)
  first_s = time.perf_counter() - t
  times = []
  for i in range(cfg["calls"]):
    t = time.perf_counter()
    clean, adv = call(i + 1)
    times.append(time.perf_counter() - t)
  call_s = float(np.median(times))
  return {**cfg, "impl": "pytorch", "torch_variant": variant,
          "torch_version": torch.__version__, "threads": threads,
          "first_call_s": first_s, "call_s": call_s,
          "episodes_per_s": cfg["episodes_batch"] / call_s,
          "accuracy_finite": bool(torch.isfinite(clean["accuracy"]).all()
                                  and torch.isfinite(adv["accuracy"]).all()),
          "peak_memory_bytes":
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "memory_kind": "peak RSS", "device": "cpu: PyTorch",
          "load_average_1m": os.getloadavg()[0]}
