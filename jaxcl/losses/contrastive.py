"""Softmax (InfoNCE-family) contrastive losses: SimCLR's NT-Xent, InfoNCE, CLIP and MoCo.

All of them L2-normalise their inputs (with an epsilon), compute in float32 even for bfloat16 inputs,
and use a stable log-sum-exp, so they stay finite at temperature 0.01 and for embeddings of norm 1e3.

Cross-device use: call them inside ``jax.shard_map`` with ``axis_name`` naming the data axis, each
device passing its own rows. Every device gathers all devices' rows as candidates, computes the loss
of its own rows (positive indices shifted by ``axis_index * local_rows``), and the local sums are
``psum``-ed and divided by the global row count, so every device returns the loss of the global
batch. Both ways of differentiating give the single-device gradient of the concatenated batch (the
tests check both at rtol 1e-5, on 8 devices):

* ``jax.grad`` of the ``shard_map``-ed function from outside (``out_specs=jax.P()``); and
* ``jax.grad`` *inside* the ``shard_map`` with respect to replicated parameters (``in_specs=jax.P()``),
  which is what the trainer does: the gradient comes out already summed over devices (invariant),
  so it must **not** be ``psum``-ed or ``pmean``-ed again.

Both rely on ``shard_map``'s default ``check_vma=True`` (JAX tracks which values vary over the axis
and transposes ``psum`` / ``all_gather`` accordingly). With ``check_vma=False`` the inside gradient is
wrong (measured: not even a multiple of the right one), so do not turn it off around these losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def _blockwise():
  # Imported on demand so the plain path works without the memory-linear module.
  from jaxcl.losses import blockwise

  return blockwise


def nt_xent(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.5,
    axis_name: str | None = None,
    block_size: int | None = None,
) -> jax.Array:
  """SimCLR's normalized temperature-scaled cross-entropy (Chen et al. 2020, eq. 1).

  The 2N views ``[z1; z2]`` are anchors; anchor i's positive is its other view and the remaining
  2N - 2 views are its negatives (the anchor itself is excluded from the denominator):
  ``l_i = -log exp(s_ip / t) / sum_{k != i} exp(s_ik / t)`` with cosine similarity ``s``; the loss is
  the mean over all 2N anchors.

  Args:
    z1: [N, D] first view's embeddings (this device's rows when ``axis_name`` is set).
    z2: [N, D] second view's embeddings, row i paired with ``z1[i]``.
    temperature: softmax temperature t > 0.
    axis_name: mesh axis to gather negatives over, inside ``jax.shard_map``; None for one device.
    block_size: if set, use the tiled memory-linear ``jaxcl.losses.blockwise.nt_xent`` (same value
      and gradient, O(N * block_size) memory).

  Returns:
    Scalar float32 loss of the global batch.
  """
  x1 = checks.embeddings(z1, "z1", axis_name=axis_name)
  x2 = checks.embeddings(z2, "z2", axis_name=axis_name)
  checks.same_shape(x1, x2, "z1", "z2")
  checks.positive(temperature, "temperature")
  checks.block_size(block_size)
  if block_size is not None:
    return _blockwise().nt_xent(
        z1, z2, temperature=temperature, block_size=block_size, axis_name=axis_name
    )
  logits, positive, is_self, _ = ops.two_view_logits(x1, x2, temperature, axis_name)
  per_anchor = ops.cross_entropy(logits, positive, ~is_self)
  return collective.psum(jnp.sum(per_anchor), axis_name) / logits.shape[1]


def info_nce(
    query: ArrayLike,
    key: ArrayLike,
    *,
    temperature: float = 0.1,
    axis_name: str | None = None,
    block_size: int | None = None,
) -> jax.Array:
  """One-directional InfoNCE (van den Oord et al. 2018, eq. 4; MoCo v3, Chen et al. 2021).

  Query i's positive is key i; every other key of the global batch is a negative:
  ``l_i = -log exp(q_i.k_i / t) / sum_j exp(q_i.k_j / t)`` on L2-normalised vectors; mean over queries.

  Args:
    query: [N, D] queries (this device's rows when ``axis_name`` is set).
    key: [N, D] keys, row i is query i's positive.
    temperature: softmax temperature t > 0.
    axis_name: mesh axis to gather keys over, inside ``jax.shard_map``; None for one device.
    block_size: if set, use the tiled memory-linear ``jaxcl.losses.blockwise.info_nce``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  q = checks.embeddings(query, "query", axis_name=axis_name)
  k = checks.embeddings(key, "key", axis_name=axis_name)
  checks.same_shape(q, k, "query", "key")
  checks.positive(temperature, "temperature")
  checks.block_size(block_size)
  if block_size is not None:
    return _blockwise().info_nce(
        query, key, temperature=temperature, block_size=block_size, axis_name=axis_name
    )
  n = q.shape[0]
  keys = collective.gather(ops.l2_normalize(k), axis_name)
  logits = ops.l2_normalize(q) @ keys.T / temperature
  positive = jnp.arange(n) + collective.row_offset(n, axis_name)
  per_query = ops.cross_entropy(logits, positive)
  return collective.psum(jnp.sum(per_query), axis_name) / keys.shape[0]


def clip_loss(
    a: ArrayLike,
    b: ArrayLike,
    *,
    logit_scale: ArrayLike,
    axis_name: str | None = None,
    block_size: int | None = None,
) -> jax.Array:
  """CLIP's symmetric cross-entropy (Radford et al. 2021, Figure 3 pseudocode).

  ``logits = logit_scale * cos(a_i, b_j)``; the loss is the mean of the a->b cross-entropy (row i's
  target is column i) and the b->a one, each averaged over the global batch.

  Args:
    a: [N, D] first tower's embeddings (e.g. images); this device's rows under ``axis_name``.
    b: [N, D] second tower's embeddings (e.g. texts), row i paired with ``a[i]``.
    logit_scale: the already-exponentiated scale (CLIP learns ``log`` of it, initialised to
      ``log(1/0.07)``); a scalar > 0, may be traced.
    axis_name: mesh axis to gather the other tower's rows over, inside ``jax.shard_map``.
    block_size: if set, use the tiled memory-linear ``jaxcl.losses.blockwise.clip_loss``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x = checks.embeddings(a, "a", axis_name=axis_name)
  y = checks.embeddings(b, "b", axis_name=axis_name)
  checks.same_shape(x, y, "a", "b")
  checks.positive(logit_scale, "logit_scale")
  checks.block_size(block_size)
  if block_size is not None:
    return _blockwise().clip_loss(
        a, b, logit_scale=logit_scale, block_size=block_size, axis_name=axis_name
    )
  n = x.shape[0]
  scale = jnp.asarray(logit_scale, jnp.float32)
  xa, yb = ops.l2_normalize(x), ops.l2_normalize(y)
  all_a, all_b = collective.gather(xa, axis_name), collective.gather(yb, axis_name)
  positive = jnp.arange(n) + collective.row_offset(n, axis_name)
  a_to_b = ops.cross_entropy(scale * xa @ all_b.T, positive)
  b_to_a = ops.cross_entropy(scale * yb @ all_a.T, positive)
  total = collective.psum(jnp.sum(a_to_b) + jnp.sum(b_to_a), axis_name)
  return total / (2 * all_a.shape[0])


def moco_infonce(
    q: ArrayLike,
    k: ArrayLike,
    queue: ArrayLike,
    *,
    temperature: float = 0.2,
    axis_name: str | None = None,
) -> jax.Array:
  """MoCo's InfoNCE against a queue of negatives (He et al. 2020, eq. 1; MoCo v2 defaults).

  Each query's logits are ``[q_i.k_i, q_i.queue_1, ..., q_i.queue_K] / t`` (all L2-normalised) and its
  target is the first: ``l_i = -log exp(q_i.k_i/t) / (exp(q_i.k_i/t) + sum_j exp(q_i.queue_j/t))``;
  mean over the global batch. The caller stops the gradient of ``k`` and ``queue`` (momentum encoder).

  Args:
    q: [N, D] queries (this device's rows under ``axis_name``).
    k: [N, D] keys from the momentum encoder, row i is query i's positive.
    queue: [K, D] negatives. Under ``axis_name`` this is this device's shard of the queue (the queue is
      sharded over devices on dim 0) and the negatives are every device's shard, gathered.
    temperature: softmax temperature t > 0.
    axis_name: mesh axis over which the batch and the queue are sharded, inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  qq = checks.embeddings(q, "q", axis_name=axis_name)
  kk = checks.embeddings(k, "k", axis_name=axis_name)
  checks.same_shape(qq, kk, "q", "k")
  negs = checks.as_float(queue, "queue")
  if negs.ndim != 2 or negs.shape[0] < 1:
    raise ValueError(f"queue must have shape [queue_size >= 1, dim], got {tuple(negs.shape)}.")
  checks.same_dim(qq, negs, "q", "queue")
  checks.positive(temperature, "temperature")
  qn, kn = ops.l2_normalize(qq), ops.l2_normalize(kk)
  negatives = collective.gather(ops.l2_normalize(negs), axis_name)
  positive_logit = jnp.sum(qn * kn, axis=-1, keepdims=True) / temperature
  logits = jnp.concatenate([positive_logit, qn @ negatives.T / temperature], axis=-1)
  per_query = ops.cross_entropy(logits, jnp.zeros(qq.shape[0], jnp.int32))
  return collective.global_mean(per_query, axis_name)
