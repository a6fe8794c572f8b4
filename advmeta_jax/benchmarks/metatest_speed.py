"""Meta-test throughput: episodes per second of adapt + attack + score.

One row is what one cell of a robust table costs: `evaluation.metatest.
run_case` on the clean-support / attacked-query case, `eval_inner_steps`
adaptation steps on the support set, then the test attack against the
adapted classifier (`attack`: PGD-`pgd_steps` at ε 8/255 with the protocol's
step ε/4 and random start, or AutoAttack standard with `apgd_steps`
iterations and `square_queries` queries), then the score of the clean and
the attacked query. Episodes run `episodes_batch` at a time, as
`--eval_batch_size` runs them; the first call (compilation included) is the
warm-up, then `calls` calls are timed and the median gives episodes/s.

The images are uniform random bytes in 20 classes of 30 images, the
parameters the model's initialization: throughput does not depend on them.
The same workload in PyTorch (MAML conv4, PGD): `torch_metatest.py`.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from advmeta_jax import training
from advmeta_jax.benchmarks.configs import step_config
from advmeta_jax.benchmarks.measure import device_name
from advmeta_jax.benchmarks.measure import memory_kind
from advmeta_jax.benchmarks.measure import peak_memory_bytes
from advmeta_jax.core import episodes
from advmeta_jax.core import models
from advmeta_jax.datasets import ClassSplit
from advmeta_jax.evaluation import metatest

# The test-time budget of a row: ε and the protocol's step budgets.
EPS = "8/255"
CLASSES, PER_CLASS = 20, 30


def random_source(size: int, seed: int = 0) -> episodes.EpisodeSource:
  """A meta-test split of uniform random images on the device."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (CLASSES * PER_CLASS, size, size, 3),
                        dtype=np.uint8)
  labels = np.repeat(np.arange(CLASSES, dtype=np.int32), PER_CLASS)
  return episodes.make_source(ClassSplit(
      images, labels, tuple(f"c{i}" for i in range(CLASSES)), "random"))


def test_attack(cfg: dict) -> metatest.AttackSpec:
  """The row's test attack as the protocol builds it."""
  return metatest.default_test_attack(
      cfg["attack"], EPS, num_steps=cfg.get("pgd_steps", 20),
      apgd_steps=cfg.get("apgd_steps", 100),
      square_queries=cfg.get("square_queries", 5000))


def run_metatest_single(cfg: dict) -> dict:
  """Compiles and times one meta-test row in this process."""
  config = step_config(cfg).replace(
      eval_inner_steps=cfg["eval_inner_steps"],
      eval_batch_size=cfg["episodes_batch"])
  exp = training.build(config)
  params = models.init_params(exp.model, jax.random.key(0), exp.image_shape)
  source = random_source(cfg["size"])
  attack = test_attack(cfg).build()
  batch = cfg["episodes_batch"]
  at_once = metatest.resolve_episodes_at_once(cfg.get("episodes_at_once"))

  def call(seed):
    return metatest.run_case(
        exp.learner.adaptation, params, source,
        case=metatest.TestCase("clean", "adv"), attack=attack,
        n_way=cfg["n_way"], k_shot=cfg["k_shot"], q_query=cfg["q_query"],
        inner_steps=cfg["eval_inner_steps"], num_episodes=batch,
        batch_size=batch, seed=seed, episodes_at_once=at_once)

  t = time.perf_counter()
  first = call(0)
  first_s = time.perf_counter() - t
  times = []
  for i in range(cfg["calls"]):
    t = time.perf_counter()
    r = call(i + 1)
    times.append(time.perf_counter() - t)
  call_s = float(np.median(times))
  return {**cfg, "resolved": {"conv_impl": exp.config.loop.conv_impl,
                              "episodes_at_once": at_once},
          "first_call_s": first_s, "call_s": call_s,
          "episodes_per_s": batch / call_s,
          "accuracy_finite": bool(np.isfinite(r.accuracy).all()
                                  and np.isfinite(first.accuracy).all()),
          "peak_memory_bytes": peak_memory_bytes(),
          "memory_kind": memory_kind(),
          "device": device_name(), "load_average_1m": os.getloadavg()[0]}


def row(learner: str, size: int, shot: int, attack: str, *,
        backbone: str = "conv4", robust: str = "none", n_way: int = 5,
        q_query: int = 15, filters: int = 32, eval_inner_steps: int = 10,
        episodes_batch: int = 20, calls: int = 3, pgd_steps: int = 20,
        apgd_steps: int = 100, square_queries: int = 5000,
        conv_impl: str = "auto", episodes_at_once=None) -> dict:
  """The configuration of one meta-test row (JSON-able); `episodes_at_once`
  None is the backend's value (`metatest.resolve_episodes_at_once`)."""
  return dict(learner=learner, robust=robust, backbone=backbone, size=size,
              k_shot=shot, n_way=n_way, q_query=q_query, filters=filters,
              inner_steps=1, eval_inner_steps=eval_inner_steps,
              episodes_batch=episodes_batch, calls=calls, attack=attack,
              pgd_steps=pgd_steps, apgd_steps=apgd_steps,
              square_queries=square_queries, conv_impl=conv_impl,
              episodes_at_once=episodes_at_once)


def label(r: dict) -> str:
  name = r["learner"] + (f"+{r['robust']}" if r.get("robust", "none")
                         != "none" else "")
  return (f"{name} {r.get('backbone', 'conv4')} {r['size']}x{r['size']} "
          f"{r['k_shot']}-shot {r['attack']}")


def table(results, torch_results=()) -> str:
  """The Markdown table of meta-test rows; with PyTorch rows
  (`torch_metatest.py`) two more columns: the implementation and "×
  torch", episodes/s over the fastest PyTorch row's of the same
  configuration."""
  key = lambda r: (r["learner"], r["size"], r["k_shot"], r["attack"])
  fastest = {}
  for r in torch_results:
    if r["episodes_per_s"] > fastest.get(key(r), {}).get("episodes_per_s", 0):
      fastest[key(r)] = r
  extra = bool(torch_results)
  lines = ["| learner | backbone | image | shot | attack | episodes/s | "
           "s per call | episodes per call | at once | first call s | "
           "peak mem GiB |" + (" impl | × torch |" if extra else ""),
           "|---|---|---|---|---|---|---|---|---|---|---|"
           + ("---|---|" if extra else "")]
  for r in list(results) + list(torch_results):
    mem = r.get("peak_memory_bytes")
    mem = "–" if mem is None or not np.isfinite(mem) else f"{mem / 2**30:.2f}"
    if "error" in r:
      lines.append(f"| {r['learner']} | {r.get('backbone', 'conv4')} | "
                   f"{r['size']} | {r['k_shot']} | {r['attack']} | failed: "
                   f"{r['error']} | | | | | |" + (" | |" if extra else ""))
      continue
    line = (f"| {r['learner']} | {r.get('backbone', 'conv4')} | {r['size']} | "
            f"{r['k_shot']} | {r['attack']} | {r['episodes_per_s']:.2f} | "
            f"{r['call_s']:.3f} | {r['episodes_batch']} | "
            f"{r.get('resolved', {}).get('episodes_at_once', '–')} | "
            f"{r['first_call_s']:.1f} | {mem} |")
    if extra:
      ref = fastest.get(key(r))
      impl = (f"pytorch {r['torch_variant']}, {r['threads']} thread"
              f"{'' if r['threads'] == 1 else 's'}"
              if r.get("impl") == "pytorch" else
              f"jax {r.get('resolved', {}).get('conv_impl', '?')}")
      ratio = ("–" if ref is None else
               f"{r['episodes_per_s'] / ref['episodes_per_s']:.2f}")
      line += f" {impl} | {ratio} |"
    lines.append(line)
  return "\n".join(lines)


__all__ = ["EPS", "label", "random_source", "row", "run_metatest_single",
           "table", "test_attack"]
