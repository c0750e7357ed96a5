"""Mesh, batch sharding and the multi-host start.

jaxcl is data-parallel over one mesh axis, ``'data'``, spanning every device of every process.
Parameters are replicated, or with FSDP (``fsdp_spec``) split over the same axis along their largest
divisible dimension; a method's ``Queue`` and ``Stash`` variables are split over ``'data'`` on their
first dimension (see ``jaxcl.methods.base``). Multi-host runs use JAX's own multi-controller runtime
(``jax.distributed``): every process runs the same program and feeds its own slice of the global batch.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from jaxcl.methods.base import Queue, Stash

DATA_AXIS = "data"

# Variable types that live split over the data axis on dim 0 (the method contract).
SHARDED_VARIABLES = nnx.Any(Queue, Stash)


def initialize_distributed(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
    auto: bool = False,
) -> bool:
  """Starts JAX's multi-controller runtime when this run spans several processes.

  With explicit arguments (all three of coordinator, process count and id) it calls
  ``jax.distributed.initialize`` with them. Without, it lets JAX auto-detect the cluster from the
  environment where JAX knows how (Cloud TPU pod slices, SLURM, Open MPI), and does nothing on a single
  machine. Call it before any other JAX call.

  Args:
    coordinator_address: ``host:port`` of process 0.
    num_processes: total number of processes.
    process_id: this process's index in ``[0, num_processes)``.
    local_device_ids: restrict this process to these local devices (e.g. one GPU per process).
    auto: call ``jax.distributed.initialize()`` and let JAX find the cluster even where this module
      sees no sign of one in the environment (Cloud TPU VM pod slices, which JAX recognises through
      the metadata server).

  Returns:
    Whether ``jax.distributed.initialize`` was called.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError(
          "multi-host start needs all of --coordinator_address, --num_processes and --process_id "
          f"(got coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
          f"process_id={process_id!r}); give all three, or none to auto-detect the cluster.")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes}).")
    if num_processes == 1:
      return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, local_device_ids=local_device_ids)
    return True
  if auto or _cluster_detected():
    # JAX reads the coordinator, process count and id from the cluster's environment.
    jax.distributed.initialize(local_device_ids=local_device_ids)
    return True
  return False


def _cluster_detected() -> bool:
  """Whether the environment describes a multi-process job JAX can auto-detect."""
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in env:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  # A multi-host Cloud TPU slice lists several workers.
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over all devices (or the first ``num_devices``), explicit sharding.

  Args:
    num_devices: how many devices to use; None means all of them (every process's).

  Returns:
    A mesh with one axis, ``'data'``.
  """
  devices = jax.devices()
  n = len(devices) if num_devices in (None, 0) else num_devices
  if n > len(devices):
    raise ValueError(f"train.num_devices={n} but only {len(devices)} devices are visible; "
                     "lower it or set it to 0 to use all devices.")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Explicit,),
                       devices=devices[:n])


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.P())


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Rows split over the data axis."""
  return jax.sharding.NamedSharding(mesh, jax.P(DATA_AXIS))


def state_specs(state: Any) -> Any:
  """PartitionSpecs for an ``nnx.State``: Queue/Stash leaves on dim 0 over 'data', the rest replicated.

  Args:
    state: an ``nnx.State`` (or abstract one from ``jax.eval_shape``).

  Returns:
    A pytree of ``jax.P`` with the structure of ``state``'s arrays.
  """
  def spec(var):
    axis = DATA_AXIS if isinstance(var, (Queue, Stash)) else None
    # One spec per array, so the result can also become a tree of shardings.
    return jax.tree.map(lambda _: jax.P(axis) if axis else jax.P(), var)
  return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def fsdp_spec(shape: tuple[int, ...], num_devices: int, min_size: int) -> jax.P:
  """FSDP's rule for one array: split its largest dimension that ``num_devices`` divides over 'data'.

  Arrays smaller than ``min_size`` elements, scalars and arrays with no divisible dimension stay
  replicated (splitting them saves little memory and costs a collective each). The rule depends on the
  shape alone, so a parameter, its optimizer moments and its EMA target are always split alike.

  Args:
    shape: the array's global shape.
    num_devices: size of the 'data' axis.
    min_size: the smallest number of elements worth splitting.

  Returns:
    ``P()`` (replicated) or a spec with ``'data'`` at the chosen dimension.
  """
  if num_devices <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return jax.P()
  divisible = [d for d, n in enumerate(shape) if n % num_devices == 0]
  if not divisible:
    return jax.P()
  dim = max(divisible, key=lambda d: (shape[d], -d))  # the largest; the first of equal ones
  return jax.P(*(DATA_AXIS if d == dim else None for d in range(len(shape))))


def fsdp_dim(spec: jax.P) -> int | None:
  """The dimension an FSDP spec splits, or None for a replicated one."""
  return next((d for d, axis in enumerate(spec) if axis == DATA_AXIS), None)


def local_batch_size(global_batch_size: int) -> int:
  """Rows of the global batch this process loads."""
  return global_batch_size // jax.process_count()


def shard_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Builds global arrays, rows split over 'data', from this process's slice of the batch.

  Works for one process (the local batch is the global batch) and many (each process passes its own
  contiguous slice; JAX assembles the global array without moving data between hosts).

  Args:
    local_batch: dict of host arrays, each [local_b, ...].
    mesh: the data mesh.

  Returns:
    dict of global ``jax.Array`` with sharding ``P('data')``.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
