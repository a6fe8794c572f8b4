"""Devices: the 1-D mesh whose axis "tasks" shards the task batch.

Parameters and optimizer state are replicated over the mesh, the task batch is
split along it, and `jax.jit` with these `NamedSharding`s partitions a step
(XLA inserts the all-reduce of the meta-gradient). With several processes
(hosts, `jax.distributed`) the mesh holds the devices of every host.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from advmeta_jax.core import episodes
from advmeta_jax.errors import ConfigError

Array = jax.Array

TASK_AXIS = "tasks"


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A 1-D mesh whose axis `TASK_AXIS` shards the task batch.

  Args:
    num_devices: how many devices to use (0: all devices of all processes).
      With several processes (hosts) it must be 0 or the global device count.

  Raises:
    ConfigError: more devices than there are, or a subset across hosts.
  """
  available = jax.devices()
  n = num_devices or len(available)
  if n > len(available):
    raise ConfigError(
        f"num_devices={num_devices}, but only {len(available)} "
        f"{available[0].platform} device(s) are visible; use 0 (all) or at "
        f"most {len(available)}.")
  if jax.process_count() > 1 and n != len(available):
    raise ConfigError(
        f"num_devices={num_devices} with {jax.process_count()} processes: "
        f"multi-host training uses all {len(available)} devices (set 0).")
  return jax.make_mesh((n,), (TASK_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=available[:n])


def check_task_batch(task_batch_size: int, mesh: jax.sharding.Mesh,
                     parallel_tasks: int = 0) -> None:
  """Raises `ConfigError` unless the task batch (and each round of
  `parallel_tasks`) splits evenly over the mesh."""
  n = mesh.devices.size
  if parallel_tasks and parallel_tasks < task_batch_size and parallel_tasks % n:
    raise ConfigError(
        f"parallel_tasks={parallel_tasks} does not divide over {n} devices: "
        f"use a multiple of {n} that divides task_batch_size="
        f"{task_batch_size}, or 0.")
  if task_batch_size % n:
    divisors = [d for d in range(1, n + 1) if task_batch_size % d == 0]
    raise ConfigError(
        f"task_batch_size={task_batch_size} does not divide over {n} devices: "
        f"each device adapts the same number of tasks. Use a task_batch_size "
        f"that is a multiple of {n}, or num_devices in {divisors}.")


def task_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Arrays with a leading task axis, split over the mesh."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(TASK_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Arrays held whole on every device of the mesh (params, optimizer state)."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def replicate(tree, mesh: jax.sharding.Mesh):
  """Places a pytree of host-identical values on every device of `mesh`.

  With several processes every process must pass the same values (the seed
  makes them so); each contributes its own devices' copies.
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      tree)


def sample_task_batch(key: Array, source: episodes.EpisodeSource, *,
                      batch_size: int, n_way: int, k_shot: int, q_query: int,
                      sharding: Optional[jax.sharding.Sharding] = None
                      ) -> episodes.Task:
  """`episodes.sample_tasks`, with the task axis sharded by `sharding`.

  Task i comes from the i-th key of `split(key, batch_size)` whatever the
  sharding (equal to `episodes.sample_tasks`); under `jit`, each device
  samples only the tasks it holds.
  """
  keys = jax.random.split(key, batch_size)
  constrain = ((lambda t: t) if sharding is None else
               (lambda t: jax.lax.with_sharding_constraint(t, sharding)))
  keys = constrain(keys)
  tasks = jax.vmap(lambda k: episodes.sample_task(
      k, source, n_way=n_way, k_shot=k_shot, q_query=q_query))(keys)
  return constrain(tasks)


def to_local(tree, mesh: jax.sharding.Mesh):
  """A replicated pytree as plain single-device arrays (for evaluation)."""
  if mesh.devices.size == 1:
    return tree
  return jax.device_put(jax.device_get(tree), jax.local_devices()[0])
