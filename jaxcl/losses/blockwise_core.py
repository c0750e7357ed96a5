"""Tiled, memory-linear pair statistics with a ring over devices: the engine under ``blockwise``.

Every softmax contrastive loss needs, for a logit matrix ``S = scale * A B^T + bias``, the log-sum-exp of
each row (and, for symmetric losses, of each column); the sigmoid loss needs the sum of an elementwise
function of ``S``. This module computes those without ever holding ``S``:

* **Tiles.** ``A`` and ``B`` are cut into ``block`` rows; one ``block x block`` tile of logits exists at a
  time, and a running max and sum (the online log-sum-exp of Milakov & Gimelshein 2018, as used by
  FlashAttention and Inf-CL, Cheng et al. 2024) fold each tile into the row and column statistics.
* **Ring.** Inside ``jax.shard_map`` each device keeps its own rows of ``A``; the blocks of ``B`` travel
  round the devices with ``jax.lax.ppermute``. Column statistics travel with their block and arrive
  home after a full loop, so both directions come out of one pass.
* **Backward.** A ``jax.custom_vjp`` saves only the inputs and the per-row / per-column log-sum-exp and
  recomputes every tile. The gradient of a travelling block rides the ring with the block and arrives
  home after a full loop, so no device holds more than its own rows plus one travelling block.

Memory per device is O((n + m) d + block^2) for n local rows, instead of O(n * N_global).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable

import jax
import jax.numpy as jnp

# A finite stand-in for -inf: a fully masked tile then leaves the running max and sum unchanged
# (exp(NEG - NEG) = 1 is multiplied by a zero sum) instead of producing inf - inf = NaN.
NEG = -1e30


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of one pair computation (hashable: it is a ``nondiff`` argument).

  Attributes:
    kind: ``"lse"`` (row / column log-sum-exp) or ``"sigmoid"`` (sum of -log sigmoid(z * S) with
      z = +1 on the positive pairs i == j, -1 elsewhere; SigLIP).
    rows: compute row log-sum-exp (``lse`` only).
    cols: compute column log-sum-exp (``lse`` only).
    exclude_self: mask the global diagonal i == j (NT-Xent's self-similarity).
    block: tile size; the padded local row count is a multiple of it.
    valid: number of real (unpadded) local rows; the rest are padding and masked.
    axis_name: mesh axis of the ring, or None on one device.
  """

  kind: str
  rows: bool
  cols: bool
  exclude_self: bool
  block: int
  valid: int
  axis_name: Hashable | None


def varying(x, axis_name):
  """Makes ``x`` device-varying over ``axis_name`` (values unchanged; no-op outside ``shard_map``).

  Loop carries inside ``shard_map`` must keep one varying-ness; a replicated scalar fed into the
  custom_vjp is made varying so that its per-device cotangent is summed over devices. Adding a zero
  that varies (``axis_index * 0``) does this with public API only: JAX inserts the invariant ->
  varying cast itself (its transpose is the psum) where ``x`` is replicated, and adds an exact zero
  where it already varies, so the code never needs to ask which one ``x`` is.
  """
  if axis_name is None:
    return x
  axes = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  zero = sum(jax.lax.axis_index(a) for a in axes) * 0

  return jax.tree.map(lambda leaf: leaf + zero.astype(leaf.dtype), x)


def _ring(axis_name):
  """(device count, ppermute that passes a pytree of blocks to the next device)."""
  if axis_name is None:
    return 1, None
  size = jax.lax.axis_size(axis_name)
  perm = [(i, (i + 1) % size) for i in range(size)]
  return size, lambda x: jax.lax.ppermute(x, axis_name, perm)


def _tile(a_t, b_t, scale, bias):
  """Raw dot products and logits of one tile, accumulated in float32 whatever the input dtype."""
  raw = jax.lax.dot_general(
      a_t, b_t, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
  )
  return raw, scale * raw + bias


def _tile_mask(spec: Spec, r, c, same_block):
  """Which entries of tile (r, c) are real pairs, and which are the positives (global i == j)."""
  i = r * spec.block + jnp.arange(spec.block)
  j = c * spec.block + jnp.arange(spec.block)
  valid = (i < spec.valid)[:, None] & (j < spec.valid)[None, :]
  diag = same_block & (i[:, None] == j[None, :])
  if spec.exclude_self:
    valid = valid & ~diag
  return valid, diag


def _sigmoid_terms(s, diag):
  """-log sigmoid(z s) and its derivative in s, with z = +1 on positives and -1 elsewhere."""
  z = jnp.where(diag, 1.0, -1.0)
  return -jax.nn.log_sigmoid(z * s), -z * jax.nn.sigmoid(-z * s)


def _block_forward(spec, a, b, scale, bias, row_acc, col_acc, same_block):
  """Folds every tile of (local rows ``a``) x (block ``b``) into the accumulators.

  ``a``/``b`` are [T, block, d]. For ``lse`` the accumulators are (max, sum) pairs of shape
  [T, block]; for ``sigmoid`` ``row_acc`` is a scalar running sum and ``col_acc`` is unused.
  """
  num_tiles = a.shape[0]

  def row_body(r, carry):
    row_acc, col_acc = carry
    a_r = a[r]
    if spec.kind == "lse":
      inner = ((row_acc[0][r], row_acc[1][r]), col_acc)
    else:
      inner = (row_acc, col_acc)

    def col_body(c, inner):
      (rm, rs), col_acc = inner
      _, s = _tile(a_r, b[c], scale, bias)
      valid, diag = _tile_mask(spec, r, c, same_block)
      if spec.kind == "sigmoid":
        loss, _ = _sigmoid_terms(s, diag)
        return (rm + jnp.sum(jnp.where(valid, loss, 0.0)), rs), col_acc
      s = jnp.where(valid, s, NEG)
      if spec.rows:
        m_new = jnp.maximum(rm, jnp.max(s, axis=1))
        p = jnp.where(valid, jnp.exp(s - m_new[:, None]), 0.0)
        rs = rs * jnp.exp(rm - m_new) + jnp.sum(p, axis=1)
        rm = m_new
      if spec.cols:
        cm, cs = col_acc[0][c], col_acc[1][c]
        m_new = jnp.maximum(cm, jnp.max(s, axis=0))
        p = jnp.where(valid, jnp.exp(s - m_new[None, :]), 0.0)
        cs = cs * jnp.exp(cm - m_new) + jnp.sum(p, axis=0)
        col_acc = (col_acc[0].at[c].set(m_new), col_acc[1].at[c].set(cs))
      return (rm, rs), col_acc

    if spec.kind == "sigmoid":
      (total, _), col_acc = jax.lax.fori_loop(
          0, num_tiles, col_body, ((row_acc, jnp.zeros_like(row_acc)), col_acc)
      )
      return total, col_acc
    (rm, rs), col_acc = jax.lax.fori_loop(0, num_tiles, col_body, inner)
    row_acc = (row_acc[0].at[r].set(rm), row_acc[1].at[r].set(rs))
    return row_acc, col_acc

  return jax.lax.fori_loop(0, num_tiles, row_body, (row_acc, col_acc))


def _block_backward(spec, a, b, scale, bias, row_in, col_in, grads, same_block):
  """Adds this block pair's contribution to (da, db, dscale, dbias), recomputing each tile.

  ``row_in``/``col_in`` are (lse, cotangent) pairs of shape [T, block] for ``lse`` (None where a
  direction is unused); for ``sigmoid`` ``row_in`` is the scalar cotangent of the local sum.
  """
  num_tiles = a.shape[0]
  cdtype = a.dtype

  def row_body(r, grads):
    da, db, dscale, dbias = grads
    a_r = a[r]

    def col_body(c, inner):
      da_r, db, dscale, dbias = inner
      raw, s = _tile(a_r, b[c], scale, bias)
      valid, diag = _tile_mask(spec, r, c, same_block)
      if spec.kind == "sigmoid":
        _, dloss = _sigmoid_terms(s, diag)
        ds = row_in * dloss
      else:
        s = jnp.where(valid, s, NEG)
        ds = jnp.zeros_like(s)
        if spec.rows:
          ds = ds + row_in[1][r][:, None] * jnp.exp(s - row_in[0][r][:, None])
        if spec.cols:
          ds = ds + col_in[1][c][None, :] * jnp.exp(s - col_in[0][c][None, :])
      ds = jnp.where(valid, ds, 0.0)
      dsc = ds.astype(cdtype)
      da_r = da_r + scale * jnp.dot(dsc, b[c], preferred_element_type=jnp.float32)
      db_c = scale * jnp.dot(dsc.T, a_r, preferred_element_type=jnp.float32)
      db = db.at[c].add(db_c)
      return da_r, db, dscale + jnp.sum(ds * raw), dbias + jnp.sum(ds)

    da_r, db, dscale, dbias = jax.lax.fori_loop(
        0, num_tiles, col_body, (da[r], db, dscale, dbias)
    )
    return da.at[r].set(da_r), db, dscale, dbias

  return jax.lax.fori_loop(0, num_tiles, row_body, grads)


def _forward(spec: Spec, a, b, scale, bias):
  """Ring forward pass; returns (row_lse, col_lse) for ``lse`` or the local sum for ``sigmoid``."""
  size, shift = _ring(spec.axis_name)
  num_tiles, block = a.shape[0], a.shape[1]
  stat = lambda v: jnp.full((num_tiles, block), v, jnp.float32)
  if spec.kind == "lse":
    row_acc = (stat(NEG), stat(0.0))
    col_acc = (stat(NEG), stat(0.0)) if spec.cols else None
  else:
    row_acc, col_acc = jnp.zeros((), jnp.float32), None
  row_acc, col_acc = varying((row_acc, col_acc), spec.axis_name)

  def compute(t, b_blk, row_acc, col_acc):
    # Step t holds the block that started on device (me - t): it is ours at t == 0.
    return _block_forward(spec, a, b_blk, scale, bias, row_acc, col_acc, t == 0)

  def step(t, carry):
    b_blk, row_acc, col_acc = carry
    row_acc, col_acc = compute(t, b_blk, row_acc, col_acc)
    return shift(b_blk), row_acc, col_acc if col_acc is None else shift(col_acc)

  b_blk = b
  if size > 1:
    b_blk, row_acc, col_acc = jax.lax.fori_loop(0, size - 1, step, (b, row_acc, col_acc))
  row_acc, col_acc = compute(size - 1, b_blk, row_acc, col_acc)
  if col_acc is not None and size > 1:
    col_acc = shift(col_acc)  # the last hop brings each block's column statistics home
  if spec.kind == "sigmoid":
    return row_acc

  def finish(acc):
    m, s = acc
    return jnp.where(s > 0, m + jnp.log(jnp.where(s > 0, s, 1.0)), 0.0)

  row_lse = finish(row_acc) if spec.rows else stat(0.0)
  col_lse = finish(col_acc) if spec.cols else stat(0.0)
  return row_lse, col_lse


def _backward(spec: Spec, a, b, scale, bias, out, g):
  """Ring backward pass: tiles are recomputed; each block's gradient travels home with it."""
  size, shift = _ring(spec.axis_name)
  if spec.kind == "lse":
    row_in = (out[0], g[0]) if spec.rows else None
    col_in = (out[1], g[1]) if spec.cols else None
  else:
    row_in, col_in = g, None
  zeros = jnp.zeros(a.shape, jnp.float32)
  local = varying((zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)), spec.axis_name)
  da, dscale, dbias = local
  db = varying(zeros, spec.axis_name)

  def compute(t, b_blk, col_in, db, da, dscale, dbias):
    return _block_backward(
        spec, a, b_blk, scale, bias, row_in, col_in, (da, db, dscale, dbias), t == 0
    )

  def step(t, carry):
    b_blk, col_in, db, da, dscale, dbias = carry
    da, db, dscale, dbias = compute(t, b_blk, col_in, db, da, dscale, dbias)
    col_in = col_in if col_in is None else shift(col_in)
    return shift(b_blk), col_in, shift(db), da, dscale, dbias

  b_blk = b
  if size > 1:
    b_blk, col_in, db, da, dscale, dbias = jax.lax.fori_loop(
        0, size - 1, step, (b, col_in, db, da, dscale, dbias)
    )
  da, db, dscale, dbias = compute(size - 1, b_blk, col_in, db, da, dscale, dbias)
  if size > 1:
    db = shift(db)  # the last hop brings each block's accumulated gradient home
  return da, db, dscale, dbias


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def pair_stats(spec: Spec, a: jax.Array, b: jax.Array, scale: jax.Array, bias: jax.Array):
  """Row/column log-sum-exp (``lse``) or summed sigmoid loss (``sigmoid``) of S = scale A B^T + bias.

  Args:
    spec: the static description (see ``Spec``).
    a: this device's rows, [T, block, d] (padded; normalised by the caller).
    b: this device's block of columns, same shape as ``a``; the ring shows it to every device.
    scale: float32 scalar multiplying the dot products (must be device-varying under ``shard_map``).
    bias: float32 scalar added to the logits (likewise).

  Returns:
    ``lse``: (row_lse, col_lse), each float32 [T, block] (zeros where not requested or padded).
    ``sigmoid``: float32 scalar, this device's rows' summed loss over all global columns.
  """
  return _forward(spec, a, b, scale, bias)


def _pair_stats_fwd(spec, a, b, scale, bias):
  out = _forward(spec, a, b, scale, bias)
  return out, (a, b, scale, bias, out)


def _pair_stats_bwd(spec, res, g):
  a, b, scale, bias, out = res
  da, db, dscale, dbias = _backward(spec, a, b, scale, bias, out, g)
  return da.astype(a.dtype), db.astype(b.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


pair_stats.defvjp(_pair_stats_fwd, _pair_stats_bwd)
