"""SigLIP's pairwise sigmoid loss: every (a_i, b_j) pair is an independent binary classification."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def sigmoid_loss(
    a: ArrayLike,
    b: ArrayLike,
    *,
    logit_scale: ArrayLike,
    logit_bias: ArrayLike,
    axis_name: str | None = None,
    block_size: int | None = None,
) -> jax.Array:
  """SigLIP's sigmoid loss (Zhai et al. 2023, eq. 1 / Algorithm 1).

  ``L = -(1/N) sum_{i,j} log sigmoid(z_ij * (logit_scale * cos(a_i, b_j) + logit_bias))`` with
  ``z_ij = +1`` for the matching pair (i == j) and -1 otherwise: summed over all N x N pairs of the
  global batch and divided by the global batch size N, as in the paper.

  Args:
    a: [N, D] first tower's embeddings (this device's rows under ``axis_name``).
    b: [N, D] second tower's embeddings, row i paired with ``a[i]``.
    logit_scale: the already-exponentiated scale t > 0 (the paper learns ``log t``, init ``log 10``);
      may be traced.
    logit_bias: the bias b (init -10 in the paper); may be traced.
    axis_name: mesh axis to gather the other tower over, inside ``jax.shard_map`` (the all-gather form
      of the paper's chunked implementation; same value and gradient).
    block_size: if set, use the tiled memory-linear ``jaxcl.losses.blockwise.sigmoid_loss``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x = checks.embeddings(a, "a", axis_name=axis_name)
  y = checks.embeddings(b, "b", axis_name=axis_name)
  checks.same_shape(x, y, "a", "b")
  checks.positive(logit_scale, "logit_scale")
  checks.block_size(block_size)
  if block_size is not None:
    from jaxcl.losses import blockwise  # on demand: the plain path must not need it

    return blockwise.sigmoid_loss(
        a,
        b,
        logit_scale=logit_scale,
        logit_bias=logit_bias,
        block_size=block_size,
        axis_name=axis_name,
    )
  n = x.shape[0]
  all_b = collective.gather(ops.l2_normalize(y), axis_name)
  logits = (
      jnp.asarray(logit_scale, jnp.float32) * ops.l2_normalize(x) @ all_b.T
      + jnp.asarray(logit_bias, jnp.float32)
  )
  rows = jnp.arange(n) + collective.row_offset(n, axis_name)
  sign = jnp.where(jnp.arange(all_b.shape[0])[None, :] == rows[:, None], 1.0, -1.0)
  total = collective.psum(-jnp.sum(jax.nn.log_sigmoid(sign * logits)), axis_name)
  return total / all_b.shape[0]
