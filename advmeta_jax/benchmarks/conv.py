"""The conv section of the benchmark: conv4's four convolutions alone.

Each convolution's forward plus input and kernel gradients, in each
formulation (`models.conv3x3_matmul`, `models.conv3x3_xla`,
`models.conv3x3_hybrid`) and PyTorch's
`conv2d`, first checked to agree (`python -m launch.benchmark
--section=conv`; `benchmark.run` dispatches here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from advmeta_jax.benchmarks import measure
from advmeta_jax.core import models


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
  n, side, c, f = cfg["images"], cfg["side"], cfg["channels"], cfg["filters"]
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (n, side, side, c))
  kernel = jax.random.normal(keys[1], (3, 3, c, f)) / np.sqrt(9 * c)
  proj = jax.random.normal(keys[2], (n, side, side, f))
  impls = {"matmul": models.conv3x3_matmul, "xla": models.conv3x3_xla,
           "hybrid": models.conv3x3_hybrid}

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
    out["ms"][name] = 1e3 * measure.median_time(
        lambda: jax.block_until_ready(fn(x, kernel)), cfg["steps"])
  if cfg.get("torch") and measure.torch_available():
    from advmeta_jax.benchmarks import torch_baseline  # pylint: disable=g-import-not-at-top
    step, grads, version = torch_baseline.conv_grads_step(
        x, kernel, proj, threads=cfg.get("torch_threads", 2))
    _check_close("torch conv2d", grads, reference, cfg)
    out["ms"]["pytorch"] = 1e3 * measure.median_time(step, cfg["steps"])
    out["torch_version"] = version
  out["device"] = measure.device_name()
  return out


def conv_section(o) -> dict:
  """conv4's four convolutions at each image size, in this process."""
  rows = []
  for size in o.sizes:
    for layer, side, c in models.conv4_layer_shapes(int(size), filters=o.filters):
      rows.append(run_conv_layer(dict(
          layer=layer, size=int(size), side=side, channels=c,
          filters=o.filters, images=o.conv_images,
          conv_impls=list(o.conv_impls), torch=o.torch,
          torch_threads=o.torch_threads, steps=o.steps)))
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
  for size in o.sizes:
    sub = [r for r in rows if r["size"] == int(size)]
    lines.append(f"| {size} | all four | | " + " | ".join(
        f"{sum(r['ms'][i] for r in sub):.2f}" for i in impls) + " |")
  return measure.save_and_print(o.out, "\n".join(lines), rows, conv_results=rows)
