"""What every benchmark section measures with: time, memory, peak FLOP/s, the
device and the machine, and the JSON file a section writes."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def matmul_peak_flops(n: int = 2048, repeats: int = 10,
                      dtype: str = "float32") -> float:
  """FLOP/s of an n×n matmul with `dtype` inputs (float32 accumulation),
  best of `repeats`."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def current_rss_bytes() -> float:
  """This process's resident memory now (Linux), NaN elsewhere."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return float(line.split()[1]) * 1024
  except OSError:
    pass
  return float("nan")


def peak_memory_bytes() -> float:
  """This process's peak memory: device memory (`memory_stats`) on a GPU or
  TPU, RSS on the CPU."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    return float((device.memory_stats() or {}).get("peak_bytes_in_use",
                                                   float("nan")))
  return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def memory_kind() -> str:
  """What `peak_memory_bytes` measures here, as the tables name it."""
  return "peak RSS" if jax.devices()[0].platform == "cpu" else (
      "peak device memory")


def device_name() -> str:
  device = jax.devices()[0]
  return f"{device.platform}: {device.device_kind}"


def median_time(fn, steps: int) -> float:
  fn()   # warm-up (and compilation)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def machine() -> dict:
  return {"platform": platform.platform(), "cpus": os.cpu_count(),
          "python": platform.python_version(), "command": " ".join(sys.argv),
          "load_average": os.getloadavg()}


def save_and_print(out: str, table: str, rows: list, **payload) -> dict:
  """Writes `payload` and the machine to `out` as JSON, prints the table and
  the device (that of `rows[0]`); returns what it wrote."""
  payload = {"machine": machine(), **payload}
  with open(out, "w") as f:
    json.dump(payload, f, indent=2)
  print(table)
  print(f"device: {rows[0]['device'] if rows else '?'}; {payload['machine']}")
  return payload
