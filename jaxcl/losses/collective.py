"""Cross-device helpers shared by the losses: gather rows, find this device's rows, reduce.

Every loss with ``axis_name`` follows one recipe, inside ``jax.shard_map`` over that axis:

1. ``gather`` every device's rows (``jax.lax.all_gather(..., tiled=True)``) to use as candidates;
2. compute the losses of this device's own rows only, with positive / self indices shifted by
   ``row_offset`` (this device's first global row);
3. ``psum`` the local sum and divide by the *global* count.

The result is the same global value on every device, and JAX's transpose rules (``all_gather`` ->
``psum_scatter``, ``psum`` of an invariant cotangent -> broadcast) make its gradient exactly the
single-device gradient; no manual scaling by the device count is needed or allowed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def axis_size(axis_name: str | None) -> int:
  """Number of devices along ``axis_name`` (1 outside ``shard_map``)."""
  if axis_name is None:
    return 1
  return jax.lax.axis_size(axis_name)


def replicated(x: jax.Array) -> jax.Array:
  """``x`` with no Explicit-mode sharding in its type (a no-op for unsharded, Auto or manual arrays).

  Called outside ``shard_map`` on a batch sharded over an Explicit mesh axis, a loss would otherwise
  ask for ``rows @ rows.T`` with both sides sharded on the same axis, which explicit sharding rejects.
  The candidate side (or, for batch statistics, the whole input) is made replicated instead; inside
  ``shard_map`` the per-device path with ``axis_name`` is the memory-efficient one.
  """
  sharding = getattr(jax.typeof(x), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec is None or all(s is None for s in spec):
    return x
  return jax.sharding.reshard(x, jax.sharding.NamedSharding(sharding.mesh, jax.P()))


def gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Concatenates every device's rows along dim 0, in device order (replicated when not sharded)."""
  if axis_name is None:
    return replicated(x)
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def row_offset(local_rows: int, axis_name: str | None) -> jax.Array | int:
  """Global index of this device's first row (its rows are ``offset + arange(local_rows)``)."""
  if axis_name is None:
    return 0
  return jax.lax.axis_index(axis_name) * local_rows


def psum(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Sums over the axis (identity when not sharded)."""
  if axis_name is None:
    return x
  return jax.lax.psum(x, axis_name)


def pmean(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean over the axis (identity when not sharded): per-row means of equal shards -> global mean."""
  if axis_name is None:
    return x
  return jax.lax.pmean(x, axis_name)


def global_mean(local_values: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean over the rows of every device (all shards have equal length inside ``shard_map``)."""
  total = psum(jnp.sum(local_values), axis_name)
  return total / (local_values.shape[0] * axis_size(axis_name))
