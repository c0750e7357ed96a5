"""Memory-linear contrastive losses: tiled on one device, a ring of ``ppermute`` across devices.

Each function has the signature and the result (value and gradients) of the plain loss of the same
name in ``jaxcl.losses``; the plain functions call these when given ``block_size``. The logit matrix is
never materialised: memory is O(N d / devices + block_size^2) per device instead of O(N^2 / devices),
and the backward pass recomputes tiles from the saved per-row (and per-column) log-sum-exp, as in
Inf-CL (Cheng et al. 2024, "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for
Contrastive Loss"). See ``blockwise_core`` for the tiling and the ring.

Inside ``jax.shard_map`` with ``axis_name``, each device passes its own rows and gets the loss of the
global batch; gradients flow to every device's rows and to replicated parameters (temperature, logit
scale, or a projection applied before the loss) exactly as for the single-device call.

Example (8 devices, global batch of 65,536 pairs, each device holding 8,192 rows)::

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  loss_fn = jax.shard_map(
      functools.partial(clip_loss, logit_scale=100.0, block_size=2048, axis_name="data"),
      mesh=mesh, in_specs=(jax.P("data"), jax.P("data")), out_specs=jax.P())
  loss, grads = jax.value_and_grad(loss_fn, argnums=(0, 1))(img_emb, txt_emb)

Statistics (logits, running max / sum, gradients) are float32 even for bfloat16 inputs; the tile
matrix products take the input dtype with float32 accumulation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcl.losses import checks
from jaxcl.losses import ops
from jaxcl.losses import blockwise_core as core

__all__ = ["nt_xent", "info_nce", "clip_loss", "sigmoid_loss", "retrieval_infonce"]


def _embed(x: jax.typing.ArrayLike, name: str, axis_name) -> jax.Array:
  """Validates ``x`` ([N, D] float) and returns its rows L2-normalised, in float32."""
  checks.embeddings(x, name, axis_name=axis_name)
  return ops.l2_normalize(jnp.asarray(x).astype(jnp.float32))


def _compute_dtype(*xs) -> jnp.dtype:
  """Half-precision inputs keep their dtype for the tile products (fast on accelerators)."""
  dtypes = {jnp.dtype(jnp.asarray(x).dtype) for x in xs}
  if len(dtypes) == 1 and jnp.dtype(next(iter(dtypes))).itemsize < 4:
    return next(iter(dtypes))
  return jnp.dtype(jnp.float32)


def _tiles(x: jax.Array, block: int, dtype) -> jax.Array:
  """Pads rows to a multiple of ``block`` and reshapes to [tiles, block, d]."""
  rows, dim = x.shape
  pad = -rows % block
  x = jnp.pad(x.astype(dtype), ((0, pad), (0, 0)))
  return x.reshape(-1, block, dim)


def _untile(x: jax.Array, rows: int) -> jax.Array:
  return x.reshape(-1)[:rows]


def _spec(kind: str, num_rows: int, block_size: int, axis_name, **flags) -> core.Spec:
  checks.block_size(block_size)
  if block_size is None:
    raise ValueError("block_size must be a positive int for the blockwise losses, got None.")
  block = min(int(block_size), num_rows)
  flags = {"rows": True, "cols": False, "exclude_self": False} | flags
  return core.Spec(kind=kind, block=block, valid=num_rows, axis_name=axis_name, **flags)


def _scalar(x, axis_name) -> jax.Array:
  return core.varying(jnp.asarray(x, jnp.float32), axis_name)


def _psum(x: jax.Array, axis_name) -> jax.Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _num_devices(axis_name) -> int:
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def _pos_logits(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
  """Dot products of matching rows, rounded like the tiles (inputs in ``dtype``, float32 sums)."""
  return jnp.sum(a.astype(dtype).astype(jnp.float32) * b.astype(dtype).astype(jnp.float32), -1)


def nt_xent(
    z1: jax.typing.ArrayLike,
    z2: jax.typing.ArrayLike,
    *,
    temperature: jax.typing.ArrayLike = 0.5,
    block_size: int,
    axis_name: str | None = None,
) -> jax.Array:
  """SimCLR's NT-Xent (Chen et al. 2020, eq. 1), tiled: see ``jaxcl.losses.nt_xent``.

  The 2N views z = [z1; z2] are compared by cosine similarity / temperature; each anchor's positive
  is its other view and the other 2N - 2 views are negatives (self excluded); mean over 2N anchors.

  Args:
    z1: first views, [N, D] (this device's rows inside ``shard_map``).
    z2: second views, [N, D]; row i is the positive of ``z1`` row i.
    temperature: softmax temperature (> 0).
    block_size: tile size in rows; memory is linear in N for a fixed block size.
    axis_name: mesh axis whose devices hold the other rows, or None.

  Returns:
    The scalar loss of the global batch (the same on every device).
  """
  checks.same_shape(jnp.asarray(z1), jnp.asarray(z2), "z1", "z2")
  checks.positive(temperature, "temperature")
  dtype = _compute_dtype(z1, z2)
  u, v = _embed(z1, "z1", axis_name), _embed(z2, "z2", axis_name)
  z = jnp.concatenate([u, v])
  spec = _spec("lse", z.shape[0], block_size, axis_name, exclude_self=True)
  scale = _scalar(1.0 / jnp.asarray(temperature, jnp.float32), axis_name)
  zt = _tiles(z, spec.block, dtype)
  row_lse, _ = core.pair_stats(spec, zt, zt, scale, _scalar(0.0, axis_name))
  # Each positive pair is the positive of two anchors (i -> N + i and N + i -> i).
  local = jnp.sum(_untile(row_lse, z.shape[0])) - 2.0 * scale * jnp.sum(_pos_logits(u, v, dtype))
  return _psum(local, axis_name) / (z.shape[0] * _num_devices(axis_name))


def info_nce(
    query: jax.typing.ArrayLike,
    key: jax.typing.ArrayLike,
    *,
    temperature: jax.typing.ArrayLike = 0.1,
    block_size: int,
    axis_name: str | None = None,
) -> jax.Array:
  """One-directional InfoNCE (van den Oord et al. 2018, eq. 4; MoCo v3), tiled.

  Query i's positive is key i; every other key of the global batch is a negative. Cosine
  similarity / temperature, mean over the global queries.

  Args:
    query: [N, D] queries (local rows inside ``shard_map``).
    key: [N, D] keys.
    temperature: softmax temperature (> 0).
    block_size: tile size in rows.
    axis_name: mesh axis, or None.

  Returns:
    The scalar loss of the global batch.
  """
  checks.same_shape(jnp.asarray(query), jnp.asarray(key), "query", "key")
  checks.positive(temperature, "temperature")
  dtype = _compute_dtype(query, key)
  q, k = _embed(query, "query", axis_name), _embed(key, "key", axis_name)
  spec = _spec("lse", q.shape[0], block_size, axis_name)
  scale = _scalar(1.0 / jnp.asarray(temperature, jnp.float32), axis_name)
  row_lse, _ = core.pair_stats(
      spec, _tiles(q, spec.block, dtype), _tiles(k, spec.block, dtype), scale,
      _scalar(0.0, axis_name),
  )
  local = jnp.sum(_untile(row_lse, q.shape[0])) - scale * jnp.sum(_pos_logits(q, k, dtype))
  return _psum(local, axis_name) / (q.shape[0] * _num_devices(axis_name))


def clip_loss(
    a: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike,
    *,
    logit_scale: jax.typing.ArrayLike,
    block_size: int,
    axis_name: str | None = None,
) -> jax.Array:
  """CLIP's symmetric cross-entropy (Radford et al. 2021, Fig. 3), tiled.

  Logits are logit_scale * cos(a_i, b_j); the loss is the mean of the a->b and b->a cross-entropies
  with the matching pair as the target. Row and column log-sum-exp come out of one pass.

  Args:
    a: [N, D] first-tower embeddings (e.g. images).
    b: [N, D] second-tower embeddings (e.g. texts); row i matches ``a`` row i.
    logit_scale: the (already exponentiated) scale.
    block_size: tile size in rows.
    axis_name: mesh axis, or None.

  Returns:
    The scalar loss of the global batch.
  """
  checks.same_shape(jnp.asarray(a), jnp.asarray(b), "a", "b")
  checks.positive(logit_scale, "logit_scale")
  dtype = _compute_dtype(a, b)
  u, v = _embed(a, "a", axis_name), _embed(b, "b", axis_name)
  spec = _spec("lse", u.shape[0], block_size, axis_name, cols=True)
  scale = _scalar(logit_scale, axis_name)
  row_lse, col_lse = core.pair_stats(
      spec, _tiles(u, spec.block, dtype), _tiles(v, spec.block, dtype), scale,
      _scalar(0.0, axis_name),
  )
  n = u.shape[0]
  lse = jnp.sum(_untile(row_lse, n)) + jnp.sum(_untile(col_lse, n))
  local = 0.5 * lse - scale * jnp.sum(_pos_logits(u, v, dtype))
  return _psum(local, axis_name) / (n * _num_devices(axis_name))


def sigmoid_loss(
    a: jax.typing.ArrayLike,
    b: jax.typing.ArrayLike,
    *,
    logit_scale: jax.typing.ArrayLike,
    logit_bias: jax.typing.ArrayLike,
    block_size: int,
    axis_name: str | None = None,
) -> jax.Array:
  """SigLIP's pairwise sigmoid loss (Zhai et al. 2023, Algorithm 1), tiled.

  -sum_ij log sigmoid(z_ij (logit_scale cos(a_i, b_j) + logit_bias)) / N with z_ij = 1 for the
  matching pair and -1 otherwise, summed over all N^2 global pairs.

  Args:
    a: [N, D] first-tower embeddings.
    b: [N, D] second-tower embeddings.
    logit_scale: the (already exponentiated) scale.
    logit_bias: the bias added to every logit.
    block_size: tile size in rows.
    axis_name: mesh axis, or None.

  Returns:
    The scalar loss of the global batch.
  """
  checks.same_shape(jnp.asarray(a), jnp.asarray(b), "a", "b")
  checks.positive(logit_scale, "logit_scale")
  dtype = _compute_dtype(a, b)
  u, v = _embed(a, "a", axis_name), _embed(b, "b", axis_name)
  spec = _spec("sigmoid", u.shape[0], block_size, axis_name, rows=False)
  local = core.pair_stats(
      spec, _tiles(u, spec.block, dtype), _tiles(v, spec.block, dtype),
      _scalar(logit_scale, axis_name), _scalar(logit_bias, axis_name),
  )
  return _psum(local, axis_name) / (u.shape[0] * _num_devices(axis_name))


def retrieval_infonce(
    query: jax.typing.ArrayLike,
    positive: jax.typing.ArrayLike,
    negatives: jax.typing.ArrayLike | None = None,
    *,
    temperature: jax.typing.ArrayLike = 0.05,
    symmetric: bool = False,
    block_size: int,
    axis_name: str | None = None,
) -> jax.Array:
  """The dense-retrieval InfoNCE with hard negatives, tiled: see ``jaxcl.losses.retrieval``.

  One ring pass scores the queries against the global positives (and, when ``symmetric``, the
  positives against the global queries, as columns of the same pass); one more pass per negative
  slot h scores them against every row's h-th negative. Each query's log-sum-exp over all candidates
  is the log-sum-exp of its per-pass ones. No masks.

  Args:
    query: [n, D] queries (local rows inside ``shard_map``).
    positive: [n, D] their positives.
    negatives: optional [n, H, D] hard negatives.
    temperature: softmax temperature (> 0).
    symmetric: also average in the document-to-query direction.
    block_size: tile size in rows.
    axis_name: mesh axis, or None.

  Returns:
    The scalar loss of the global batch.
  """
  checks.same_shape(jnp.asarray(query), jnp.asarray(positive), "query", "positive")
  checks.positive(temperature, "temperature")
  dtype = _compute_dtype(query, positive)
  q, p = _embed(query, "query", axis_name), _embed(positive, "positive", axis_name)
  n = q.shape[0]
  spec = _spec("lse", n, block_size, axis_name, cols=symmetric)
  scale = _scalar(1.0 / jnp.asarray(temperature, jnp.float32), axis_name)
  zero = _scalar(0.0, axis_name)
  qt = _tiles(q, spec.block, dtype)
  row_lse, col_lse = core.pair_stats(spec, qt, _tiles(p, spec.block, dtype), scale, zero)
  row_lse = _untile(row_lse, n)
  if negatives is not None:
    negs = ops.l2_normalize(jnp.asarray(negatives).astype(jnp.float32))
    rows_only = dataclasses.replace(spec, cols=False)
    per_slot = [_untile(core.pair_stats(rows_only, qt, _tiles(negs[:, h], spec.block, dtype), scale,
                                        zero)[0], n) for h in range(negs.shape[1])]
    row_lse = jax.nn.logsumexp(jnp.stack([row_lse, *per_slot]), axis=0)
  pos = scale * jnp.sum(_pos_logits(q, p, dtype))
  local = jnp.sum(row_lse) - pos
  if symmetric:
    local = 0.5 * (local + jnp.sum(_untile(col_lse, n)) - pos)
  return _psum(local, axis_name) / (n * _num_devices(axis_name))
