"""Data parallelism: one ``('data',)`` mesh over every device of every host.

The batch axis is sharded over the mesh and the train state is replicated, both through
``NamedSharding`` under ``jax.jit`` — so BatchNorm statistics are global-batch statistics and no
per-device code is needed. Multi-host runs use ``jax.distributed.initialize`` (auto-detected on
SLURM / TPU / Kubernetes, or explicit coordinator flags); each host feeds its own share of the
batch and ``jax.make_array_from_process_local_data`` stitches the global array.
"""
from __future__ import annotations

import collections
import itertools
import logging
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           local_device_ids: Any = None) -> None:
  """Joins a multi-process run with JAX's own engine (no-op for a single process).

  With no arguments JAX auto-detects SLURM, TPU pods and other cluster environments; with an
  explicit coordinator every process passes the same address and count and its own id.
  On CPU the cross-process collectives go through gloo.
  """
  explicit = coordinator_address is not None
  if not explicit and not _cluster_detected():
    return
  # Only affects the CPU backend: lets CPU devices of different processes talk (gloo).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if explicit:
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  if local_device_ids is not None:
    kwargs["local_device_ids"] = local_device_ids
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def _cluster_detected() -> bool:
  import os
  return any(k in os.environ for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
                                       "JAX_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")) and \
      int(os.environ.get("SLURM_NTASKS", os.environ.get("OMPI_COMM_WORLD_SIZE", "2"))) > 1


def create_mesh(devices: Iterable[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named ``'data'`` over all devices of all processes."""
  devs = np.asarray(list(devices) if devices is not None else jax.devices())
  return Mesh(devs, (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, *, seed_axis: bool = False) -> NamedSharding:
  """The batch axis on 'data'; with ``seed_axis`` the batch is axis 1, after a leading axis of
  seeds trained together (cnnlab/training/seeds.py), which every device holds whole."""
  return NamedSharding(mesh, P(None, DATA_AXIS) if seed_axis else P(DATA_AXIS))


def shard_batch(mesh: Mesh, host_batch: dict[str, np.ndarray], *,
                seed_axis: bool = False) -> dict[str, jax.Array]:
  """Turns this host's slice of the batch into global arrays sharded along the batch axis."""
  sharding = batch_sharded(mesh, seed_axis=seed_axis)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def prefetch_to_device(batches: Iterator[dict[str, np.ndarray]], mesh: Mesh,
                       size: int = 2, *, seed_axis: bool = False) -> Iterator[dict[str, jax.Array]]:
  """Keeps ``size`` batches already transferred (sharded) ahead of the consumer."""
  queue: collections.deque = collections.deque()

  def enqueue(n):
    for batch in itertools.islice(batches, n):
      queue.append(shard_batch(mesh, batch, seed_axis=seed_axis))

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


def needs_step_sync(mesh: Mesh) -> bool:
  """True where every step must be synchronised: several CPU devices in one process.

  XLA:CPU's all-reduce rendezvous aborts the process ("Termination timeout for all reduce")
  when many collective steps are queued unsynchronised. Accelerators do not need this.
  """
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return local[0].platform == "cpu" and (len(local) > 1 or jax.process_count() > 1)
