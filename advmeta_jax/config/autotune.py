"""Per-backend defaults of the settings that change only speed and memory.

`conv_impl`, `parallel_tasks` and `remat` (the `loop` section) default to
`auto`: the value that the benchmark measured fastest on the backend the run
finds (`jax.default_backend()`: "cpu", "gpu" or "tpu"), from `TABLE` below.
Each entry points to the docs section that justifies its values; an entry
nobody has measured says "unmeasured" and holds the usual choice there.
`python -m launch.benchmark --suite=accelerator` prints the entry it would
write for the backend it ran on.

All three compute the same function (tested: `tests/test_autotune.py`
compares the loss and meta-gradient of `auto` with those of each explicit
setting), so resolving them never changes a result beyond float rounding,
and a run may resume on another backend. An explicit value
(`--conv_impl=matmul`, `--parallel_tasks=2`, `--remat` / `--noremat`) is
used as given.

Each entry also holds the meta-test's `episodes_at_once` (how many of a
call's episodes are computed at once), which `evaluation.run_case` reads when
its caller gives none; it too changes only speed and memory (tested).

`resolve(config)` returns the config with every `auto` replaced; `build`
(training/builders.py) resolves before building, and `train` logs the resolved
values. The config.json of a run keeps `auto`, so a run resumed on another
backend gets that backend's choice.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import jax

from advmeta_jax.config.settings import AUTO
from advmeta_jax.config.settings import Config

# The settings `auto` resolves, in the loop section.
AUTO_FIELDS = ("conv_impl", "parallel_tasks", "remat")


@dataclasses.dataclass(frozen=True)
class Entry:
  """The `auto` values of one backend.

  Attributes:
    conv_impl: "matmul", "xla" or "hybrid" (models.CONV_IMPLS).
    tasks_per_device: parallel_tasks per device: the tasks adapted at once
      are this times the number of devices (0: the whole task batch).
    remat: rematerialize the inner steps.
    episodes_at_once: meta-test episodes evaluated at once within a call of
      `evaluation.run_case` (0: the whole call vmapped; n: rounds of n
      episodes in a `lax.map`). Speed and memory only: every episode is
      computed from its own key either way.
    source: one line: where the docs justify the entry, or why it is
      unmeasured.
  """
  conv_impl: str
  tasks_per_device: int
  remat: bool
  source: str
  episodes_at_once: int = 0


TABLE: Dict[str, Entry] = {
    # 2-core x86-64 CPUs (Intel with AVX-512 BF16 and AMX; AMD EPYC),
    # jax 0.10.2; PyTorch 2.13.0+cpu.
    "cpu": Entry(
        conv_impl="hybrid", tasks_per_device=1, remat=True,
        episodes_at_once=1,
        source=("measured with `python -m launch.benchmark`: "
                "docs/performance.md, \"Defaults by backend (auto)\"")),
}
# A backend nobody has measured (the TPU, a plugin's name) gets the usual
# choice on an accelerator, until the accelerator suite runs on one.
UNMEASURED_ACCELERATOR = Entry(
    conv_impl="xla", tasks_per_device=0, remat=False,
    source=("unmeasured: lax.conv (the vendor's convolutions) with the whole "
            "task batch vmapped, no remat, the usual choice on an "
            "accelerator. Run `python -m launch.benchmark --suite=accelerator "
            "--out=DIR` on one and copy the entry it prints."))
# One NVIDIA H200, jax 0.11.2 (CUDA 13).
TABLE["gpu"] = Entry(
    conv_impl="matmul", tasks_per_device=0, remat=False,
    source=("`python -m launch.benchmark --suite=accelerator --out=DIR`, "
            "commit 5f16420, gpu: NVIDIA H200: maml 84x84 1-shot B=4: matmul "
            "p0 0.0192 s/step (xla p0 0.0278; xla remat 0.0276; matmul "
            "p1+remat 0.0230; hybrid p1+remat 0.0435); docs/performance.md, "
            "\"The accelerator suite\""))
TABLE["tpu"] = UNMEASURED_ACCELERATOR


def backend_entry(backend: Optional[str] = None) -> Entry:
  """The table entry of `backend` (default: `jax.default_backend()`)."""
  backend = jax.default_backend() if backend is None else backend
  return TABLE.get(backend, UNMEASURED_ACCELERATOR)


def resolve(config: Config, *, backend: Optional[str] = None,
            num_devices: Optional[int] = None) -> Config:
  """`config` with each `auto` of `AUTO_FIELDS` replaced by the value of
  `backend`'s entry (default: `jax.default_backend()`); explicit values are
  kept. `num_devices` is the size of the mesh the task batch is sharded over
  (default: `config.loop.num_devices`, or every device when 0), so that the
  tasks of a round split over the devices; a round that would not divide the
  task batch becomes the whole batch (0)."""
  loop = config.loop
  if all(getattr(loop, f) != AUTO for f in AUTO_FIELDS):
    return config
  entry = backend_entry(backend)
  changes = {}
  if loop.conv_impl == AUTO:
    changes["conv_impl"] = entry.conv_impl
  if loop.remat == AUTO:
    changes["remat"] = entry.remat
  if loop.parallel_tasks == AUTO:
    if num_devices is None:
      num_devices = loop.num_devices or jax.device_count()
    p, b = entry.tasks_per_device * num_devices, config.meta.task_batch_size
    changes["parallel_tasks"] = 0 if p >= b or b % max(p, 1) else p
  return config.replace(**changes)


def describe(config: Config, resolved: Config,
             backend: Optional[str] = None) -> str:
  """One line: each of `AUTO_FIELDS` with its value, "(auto)" where it was
  resolved, e.g. "backend cpu: conv_impl=hybrid (auto), ..."."""
  backend = jax.default_backend() if backend is None else backend
  parts = []
  for f in AUTO_FIELDS:
    value = getattr(resolved.loop, f)
    parts.append(f"{f}={value}" + (" (auto)" if getattr(config.loop, f) == AUTO
                                   else ""))
  return f"backend {backend}: " + ", ".join(parts)
