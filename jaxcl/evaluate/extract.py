"""Feature extraction: run a representation over a dataset in fixed-size, optionally sharded batches.

Public API (re-exported by ``jaxcl.evaluate``)::

  extract_features(features_fn, images, *, batch_size=256, mesh=None, data_axis="data",
                   progress=None)
      -> np.ndarray float32 [N, F]

``features_fn`` is a callable ``float images [B, H, W, C] in [0, 1] -> [B, F]``, an ``nnx.Module``
(its ``features`` method is used, as ``jaxcl.methods.base.Method`` defines it) or a bound method of one.
Compiled programs are cached across calls, so the kNN monitor does not recompile every evaluation.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@functools.partial(jax.jit, static_argnames=("fn", "pixels"))
def _apply_fn(weights, x, *, fn, pixels):
  del weights
  return fn(_to_unit_float(x) if pixels else x)


@functools.partial(jax.jit, static_argnames=("graphdef", "name", "pixels"))
def _apply_module(weights, x, *, graphdef, name, pixels):
  # A fresh merged copy: whatever the method mutates (it should not, in eval mode) is dropped.
  return getattr(nnx.merge(graphdef, weights), name)(_to_unit_float(x) if pixels else x)


def _jitted_features(features_fn: Any, pixels: bool = True
                     ) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
  """Returns ``(apply, weights)`` with ``apply(weights, images)`` jitted and cached across calls.

  Module weights are passed as arguments (not closed over) so repeated evaluations during training
  reuse one compiled program instead of recompiling with new constants.
  """
  if isinstance(features_fn, nnx.Module):
    module, name = features_fn, "features"
  elif inspect.ismethod(features_fn) and isinstance(features_fn.__self__, nnx.Module):
    module, name = features_fn.__self__, features_fn.__name__
  else:
    return functools.partial(_apply_fn, fn=features_fn, pixels=pixels), None
  graphdef, state = nnx.split(module)
  return functools.partial(_apply_module, graphdef=graphdef, name=name, pixels=pixels), state


def _to_unit_float(x: jax.Array) -> jax.Array:
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


def _replicate_on(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Puts leaves not already spread over the mesh's devices onto it, replicated."""
  mesh_devices = set(mesh.devices.flat)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())

  def put(leaf):
    if isinstance(leaf, jax.Array) and leaf.sharding.device_set == mesh_devices:
      return leaf
    return jax.device_put(leaf, replicated)

  return jax.tree.map(put, tree)


def extract_features(
    features_fn: Any,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str = "data",
    progress: str | None = None,
    pixels: bool = True,
) -> np.ndarray:
  """Runs a representation over a dataset in fixed-size batches and returns the features on the host.

  Args:
    features_fn: ``float images [B, H, W, C] in [0, 1] -> [B, F]``, or an ``nnx.Module`` (its
      ``features`` method is used) or a bound method of one (e.g. ``method.features``).
    images: [N, H, W, C] uint8 (divided by 255 on the device) or float in [0, 1]. Every process of a
      multi-host run passes the same full array.
    batch_size: images per step (global). The last batch is zero-padded so one program is compiled.
    mesh: optional mesh; batches are then sharded over ``data_axis`` and ``batch_size`` must be
      divisible by that axis' size. The module's weights are replicated on the mesh if they are not
      already placed on it.
    data_axis: mesh axis the batch is split over.
    progress: a description to show a tqdm bar over the batches with (None: no bar).
    pixels: integer inputs are uint8 pixels, divided by 255 on the device; False passes the inputs
      unchanged (token ids [N, L] to a text tower's ``encode_*``).

  Returns:
    float32 [N, F] features.
  """
  images = np.asarray(images)
  if images.ndim < 2 or len(images) == 0:
    raise ValueError(f"images must be a non-empty batch [N, H, W, C], got shape {images.shape}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  sharding = None
  if mesh is not None:
    if data_axis not in mesh.shape:
      raise ValueError(f"mesh has no axis {data_axis!r} (axes: {tuple(mesh.shape)}); set data_axis.")
    if batch_size % mesh.shape[data_axis]:
      raise ValueError(
          f"batch_size={batch_size} must be divisible by the mesh's {data_axis!r} axis size "
          f"{mesh.shape[data_axis]}."
      )
    sharding = jax.sharding.NamedSharding(mesh, jax.P(data_axis))

  apply, weights = _jitted_features(features_fn, pixels)
  if mesh is not None and weights is not None:
    weights = _replicate_on(weights, mesh)  # once, not per batch

  outputs = []
  starts = range(0, len(images), batch_size)
  if progress is not None:
    from tqdm.auto import tqdm  # only when asked: the kNN monitor extracts silently

    starts = tqdm(starts, desc=progress, unit="batch", leave=False, dynamic_ncols=True)
  for start in starts:
    batch = images[start : start + batch_size]
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
    if sharding is None:
      out = apply(weights, jnp.asarray(batch))
    else:
      with jax.set_mesh(mesh):
        x = jax.make_array_from_callback(batch.shape, sharding, lambda idx, b=batch: b[idx])
        out = apply(weights, x)
    outputs.append(_to_host(out)[:n])
  return np.concatenate(outputs).astype(np.float32)


def _to_host(x: jax.Array) -> np.ndarray:
  if x.is_fully_addressable:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # only multi-host runs need it

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
