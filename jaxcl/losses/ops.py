"""Small numerical building blocks shared by the losses (all in float32 or wider)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import collective


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Rows scaled to unit norm; a row with norm below ``eps`` is divided by ``eps`` (no NaN at 0)."""
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def masked_logsumexp(logits: jax.Array, keep: jax.Array | None) -> jax.Array:
  """Stable log-sum-exp over the last axis, counting only entries where ``keep`` is True."""
  if keep is not None:
    logits = jnp.where(keep, logits, -jnp.inf)
  return jax.nn.logsumexp(logits, axis=-1)


def cross_entropy(logits: jax.Array, positive: jax.Array, keep: jax.Array | None = None) -> jax.Array:
  """Per-row ``-log softmax(logits)[positive]`` with the softmax over the ``keep`` entries.

  Args:
    logits: [n, M] scores of each row against M candidates.
    positive: [n] int, column of each row's positive (must be a kept column).
    keep: optional [n, M] bool, False for columns that are not candidates (e.g. the anchor itself).

  Returns:
    [n] losses.
  """
  pos = jnp.take_along_axis(logits, positive[:, None], axis=-1)[:, 0]
  return masked_logsumexp(logits, keep) - pos


def pairwise_sq_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  """[n, m] squared Euclidean distances, clamped at 0 against rounding."""
  sq = (
      jnp.sum(x * x, axis=-1)[:, None]
      + jnp.sum(y * y, axis=-1)[None, :]
      - 2.0 * x @ y.T
  )
  return jnp.maximum(sq, 0.0)


def safe_sqrt(sq: jax.Array, eps: float = 1e-12) -> jax.Array:
  """sqrt with a finite gradient at 0 (distance of a point to itself or a duplicate)."""
  return jnp.sqrt(jnp.maximum(sq, eps))


def two_view_logits(
    x1: jax.Array, x2: jax.Array, temperature: ArrayLike, axis_name: str | None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Cosine logits of the 2n local anchors ``[x1; x2]`` against the 2N global views ``[X1; X2]``.

  Returns:
    ``(logits [2n, 2N], positive [2n], is_self [2n, 2N], is_negative [2n, 2N])``: the column of each
    anchor's other view, the anchor's own column, and every column that is neither.
  """
  n = x1.shape[0]
  a1, a2 = l2_normalize(x1), l2_normalize(x2)
  anchors = jnp.concatenate([a1, a2])
  candidates = jnp.concatenate([collective.gather(a1, axis_name), collective.gather(a2, axis_name)])
  big_n = candidates.shape[0] // 2
  logits = anchors @ candidates.T / temperature
  rows = jnp.arange(n) + collective.row_offset(n, axis_name)
  self_index = jnp.concatenate([rows, rows + big_n])
  positive = jnp.concatenate([rows + big_n, rows])
  cols = jnp.arange(2 * big_n)[None, :]
  is_self = cols == self_index[:, None]
  is_negative = ~is_self & (cols != positive[:, None])
  return logits, positive, is_self, is_negative
