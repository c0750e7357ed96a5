"""Monitoring metrics for representation learning: alignment, uniformity, RankMe, std, top-1.

All L2-normalise their inputs (except ``rankme``, which measures the raw embeddings' spectrum), return
float32 scalars, and take ``axis_name`` so that inside ``jax.shard_map`` they report the value of the
global batch (same on every device). They are for logging; differentiate them at your own risk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def alignment(
    z1: ArrayLike, z2: ArrayLike, *, alpha: float = 2.0, axis_name: str | None = None
) -> jax.Array:
  """Alignment (Wang and Isola 2020, L_align): ``E_i ||f(x_i) - f(y_i)||^alpha``, lower is better.

  Args:
    z1: [N, D] embeddings of the first views.
    z2: [N, D] embeddings of the positives.
    alpha: exponent > 0 (2 in the paper).
    axis_name: mesh axis to average over, inside ``jax.shard_map``.

  Returns:
    Scalar float32 in [0, 2^alpha].
  """
  a = checks.embeddings(z1, "z1", axis_name=axis_name)
  b = checks.embeddings(z2, "z2", axis_name=axis_name)
  checks.same_shape(a, b, "z1", "z2")
  checks.positive(alpha, "alpha")
  sq = jnp.sum((ops.l2_normalize(a) - ops.l2_normalize(b)) ** 2, axis=-1)
  return collective.global_mean(ops.safe_sqrt(sq) ** alpha, axis_name)


def uniformity(z: ArrayLike, *, t: float = 2.0, axis_name: str | None = None) -> jax.Array:
  """Uniformity (Wang and Isola 2020, L_uniform): ``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)``.

  Lower (more negative) is more uniform; the minimum on the sphere is about ``-4`` for ``t = 2`` in high
  dimension. Computed with a log-sum-exp over the N(N-1)/2 pairs of the global batch.

  Args:
    z: [N, D] embeddings.
    t: scale > 0 (2 in the paper).
    axis_name: mesh axis to gather rows over, inside ``jax.shard_map``.

  Returns:
    Scalar float32.
  """
  x = checks.embeddings(z, "z", axis_name=axis_name)
  checks.positive(t, "t")
  n = x.shape[0]
  local = ops.l2_normalize(x)
  everyone = collective.gather(local, axis_name)
  big_n = everyone.shape[0]
  # On the sphere ||a - b||^2 = 2 - 2 a.b, which avoids cancellation in the expanded form.
  sq = jnp.maximum(2.0 - 2.0 * local @ everyone.T, 0.0)
  rows = jnp.arange(n) + collective.row_offset(n, axis_name)
  # Each unordered pair once: columns strictly after the row.
  upper = jnp.arange(big_n)[None, :] > rows[:, None]
  local_lse = ops.masked_logsumexp(jnp.where(upper, -t * sq, -jnp.inf).reshape(-1), None)
  if axis_name is not None:
    # log-sum-exp across devices: shift by the global max so the psum of exps cannot overflow.
    peak = jax.lax.pmax(jax.lax.stop_gradient(local_lse), axis_name)
    local_lse = peak + jnp.log(jax.lax.psum(jnp.exp(local_lse - peak), axis_name))
  return local_lse - jnp.log(big_n * (big_n - 1) / 2)


def rankme(z: ArrayLike, *, eps: float = 1e-7, axis_name: str | None = None) -> jax.Array:
  """RankMe effective rank (Garrido et al. 2023): ``exp(entropy of normalised singular values)``.

  ``p_k = sigma_k / ||sigma||_1 + eps`` over the singular values of the [N, D] embedding matrix, and
  ``RankMe = exp(-sum_k p_k log p_k)``: between 1 (collapsed) and ``min(N, D)``.

  Args:
    z: [N, D] embeddings (not normalised: the spectrum of the raw matrix).
    eps: the paper's smoothing constant.
    axis_name: mesh axis to gather rows over, inside ``jax.shard_map`` (the SVD is of the global batch).

  Returns:
    Scalar float32.
  """
  x = collective.gather(checks.embeddings(z, "z", axis_name=axis_name), axis_name)
  sigma = jnp.linalg.svd(x, compute_uv=False)
  p = sigma / jnp.maximum(jnp.sum(sigma), 1e-30) + eps
  value = jnp.exp(-jnp.sum(p * jnp.log(p)))
  if axis_name is not None:
    # Every device computed the same number; pmax marks it replicated (for out_specs=P()) exactly.
    value = jax.lax.pmax(value, axis_name)
  return value


def embedding_std(z: ArrayLike, *, axis_name: str | None = None) -> jax.Array:
  """Mean over dims of the per-dim std (over the batch) of the L2-normalised embeddings.

  SimSiam's collapse monitor (Chen and He 2021, section 4.1): about ``1 / sqrt(D)`` for well spread
  embeddings, 0 when they collapse to a point. Population std (divides by N).

  Args:
    z: [N, D] embeddings.
    axis_name: mesh axis over which the batch statistics are reduced, inside ``jax.shard_map``.

  Returns:
    Scalar float32.
  """
  x = ops.l2_normalize(checks.embeddings(z, "z", axis_name=axis_name))
  rows = x.shape[0] * collective.axis_size(axis_name)
  mean = collective.psum(jnp.sum(x, axis=0), axis_name) / rows
  var = collective.psum(jnp.sum((x - mean) ** 2, axis=0), axis_name) / rows
  return jnp.mean(jnp.sqrt(var))


def positive_top1(a: ArrayLike, b: ArrayLike, *, axis_name: str | None = None) -> jax.Array:
  """Fraction of rows whose positive ranks first: ``argmax_j cos(a_i, b_j) == i`` over the global b.

  The retrieval accuracy a contrastive loss optimises (1/N at chance). Ties count as misses unless the
  positive is the first of the tied columns.

  Args:
    a: [N, D] queries (this device's rows under ``axis_name``).
    b: [N, D] candidates, row i is the positive of ``a[i]``.
    axis_name: mesh axis to gather candidates over, inside ``jax.shard_map``.

  Returns:
    Scalar float32 in [0, 1].
  """
  x = checks.embeddings(a, "a", axis_name=axis_name)
  y = checks.embeddings(b, "b", axis_name=axis_name)
  checks.same_shape(x, y, "a", "b")
  n = x.shape[0]
  scores = ops.l2_normalize(x) @ collective.gather(ops.l2_normalize(y), axis_name).T
  hits = jnp.argmax(scores, axis=-1) == jnp.arange(n) + collective.row_offset(n, axis_name)
  return collective.global_mean(hits.astype(jnp.float32), axis_name)
