"""What one benchmark row runs: its library config, its variant's settings,
random tasks, and the FLOPs of one image through its network.

A row is a JSON-able dict (it crosses into a child process):
`learner`, `size`, `k_shot`, `n_way`, `q_query`, `filters`, `inner_steps`,
optional `robust` (default "none"), `backbone` (default "conv4"),
`conv_impl`, `remat`, `parallel_tasks`, `compute_dtype`, `first_order`,
`attack_steps`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from advmeta_jax.config import AUTO
from advmeta_jax.config import Config
from advmeta_jax.core import episodes
from advmeta_jax.core import models
from advmeta_jax.errors import ConfigError

VARIANT_OPTIONS = ("base", "remat", "bf16", "first_order")
# The variant `launch.train` runs by default: the `auto` speed settings
# resolved for the backend (autotune.py), float32, second order.
DEFAULT_VARIANT = "default"


def variant_fields(variant: str) -> dict:
  """`remat`, `compute_dtype`, `first_order`, `parallel_tasks` of a
  '+'-joined variant name ("pN": N tasks at a time, in rounds). "default"
  is what `launch.train` runs by default (`auto` remat and parallel_tasks);
  the others are explicit, from "base" (the whole batch vmapped, no
  remat)."""
  if variant == DEFAULT_VARIANT:
    return dict(remat=AUTO, first_order=False, compute_dtype="float32",
                parallel_tasks=AUTO)
  parts = variant.split("+")
  parallel = [int(p[1:]) for p in parts if p[:1] == "p" and p[1:].isdigit()]
  unknown = [p for p in parts if p not in VARIANT_OPTIONS and not (
      p[:1] == "p" and p[1:].isdigit())]
  if unknown:
    raise ConfigError(f"--variants: unknown option(s) {unknown} in "
                      f"{variant!r}; choose {DEFAULT_VARIANT!r} or "
                      f"'+'-joined options of {VARIANT_OPTIONS} and pN (N "
                      f"tasks at a time).")
  return dict(remat="remat" in parts, first_order="first_order" in parts,
              compute_dtype="bfloat16" if "bf16" in parts else "float32",
              parallel_tasks=parallel[0] if parallel else 0)


def step_config(cfg: dict) -> Config:
  """The `config.Config` of a row: 3-channel images of side `size` (the
  CIFAR-FS / MiniImageNet model), α = 0.01, β = 1e-3 and the learner's
  default training attack with `attack_steps` steps."""
  return Config.make(
      dataset="cifar_fs", image_size=cfg["size"], n_way=cfg["n_way"],
      k_shot=cfg["k_shot"], q_query=cfg["q_query"], filters=cfg["filters"],
      backbone=cfg.get("backbone", "conv4"),
      compute_dtype=cfg.get("compute_dtype", "float32"),
      learner=cfg["learner"], robust=cfg.get("robust", "none"),
      task_batch_size=cfg.get("task_batch_size", 4),
      inner_lr=0.01, inner_steps=cfg["inner_steps"],
      first_order=cfg.get("first_order", False), meta_lr=1e-3,
      train_attack_steps=cfg.get("attack_steps", 7),
      remat=cfg.get("remat", AUTO),
      parallel_tasks=cfg.get("parallel_tasks", AUTO),
      conv_impl=cfg.get("conv_impl", AUTO)).validate()


def random_tasks(key, b: int, n: int, k_shot: int, q: int, size: int):
  """`b` tasks of uniform random images, labels in class order."""
  keys = jax.random.split(key, 2)
  labels = lambda per_class: jnp.tile(jnp.repeat(jnp.arange(n), per_class),
                                      (b, 1))
  return episodes.Task(
      jax.random.uniform(keys[0], (b, n * k_shot, size, size, 3)),
      labels(k_shot),
      jax.random.uniform(keys[1], (b, n * q, size, size, 3)), labels(q))


def forward_flops(cfg: dict, model=None, params=None) -> float:
  """FLOPs of one image through the row's network.

  conv4: counted by hand (`models.conv4_forward_flops`: the convolutions
  and the head). Other backbones: XLA's cost analysis of the compiled
  forward pass of one image (`model`, `params`), which has no loop for it
  to undercount; NaN if either is missing.
  """
  if cfg.get("backbone", "conv4") == "conv4":
    return float(models.conv4_forward_flops(
        image_size=cfg["size"], channels=3, filters=cfg["filters"],
        num_classes=cfg["n_way"]))
  if model is None or params is None:
    return float("nan")
  apply_fn = models.make_apply_fn(model)
  x = jnp.zeros((1, cfg["size"], cfg["size"], 3))
  cost = jax.jit(apply_fn).lower(params, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


__all__ = ["DEFAULT_VARIANT", "VARIANT_OPTIONS", "forward_flops",
           "random_tasks", "step_config", "variant_fields"]
