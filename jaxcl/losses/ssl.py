"""Non-contrastive self-supervised objectives: BYOL, SimSiam, Barlow Twins, VICReg.

BYOL and SimSiam are per-row losses (no negatives, no batch statistics): inside ``jax.shard_map`` they
return the local mean, and equal shards make ``jax.lax.pmean`` of it the global mean. Barlow Twins and
VICReg use batch statistics; with ``axis_name`` those statistics (means, variances, cross-correlation,
covariance) are computed over the global batch with ``psum``, as the official code's SyncBatchNorm and
``FullGatherLayer`` do, so every device returns the global loss and the single-device gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def byol_loss(p: ArrayLike, z: ArrayLike) -> jax.Array:
  """BYOL's regression loss (Grill et al. 2020, eq. 2): ``2 - 2 cos(p_i, z_i)``, mean over rows.

  Args:
    p: [N, D] online predictions.
    z: [N, D] target projections; the caller applies ``jax.lax.stop_gradient``.

  Returns:
    Scalar float32 loss (the local mean inside ``shard_map``).
  """
  a = checks.embeddings(p, "p")
  b = checks.embeddings(z, "z")
  checks.same_shape(a, b, "p", "z")
  cos = jnp.sum(ops.l2_normalize(a) * ops.l2_normalize(b), axis=-1)
  return jnp.mean(2.0 - 2.0 * cos)


def negative_cosine(p: ArrayLike, z: ArrayLike) -> jax.Array:
  """SimSiam's loss term (Chen and He 2021, eq. 1): ``-cos(p_i, z_i)``, mean over rows.

  The symmetrised SimSiam loss is ``(negative_cosine(p1, sg(z2)) + negative_cosine(p2, sg(z1))) / 2``.

  Args:
    p: [N, D] predictor outputs.
    z: [N, D] projections of the other view; the caller applies ``jax.lax.stop_gradient``.

  Returns:
    Scalar float32 loss in [-1, 1] (the local mean inside ``shard_map``).
  """
  a = checks.embeddings(p, "p")
  b = checks.embeddings(z, "z")
  checks.same_shape(a, b, "p", "z")
  return -jnp.mean(jnp.sum(ops.l2_normalize(a) * ops.l2_normalize(b), axis=-1))


def _global_mean_rows(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, int]:
  rows = x.shape[0] * collective.axis_size(axis_name)
  return collective.psum(jnp.sum(x, axis=0), axis_name) / rows, rows


def barlow_twins(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    lambda_offdiag: float = 5e-3,
    axis_name: str | None = None,
) -> jax.Array:
  """Barlow Twins (Zbontar et al. 2021, eq. 1) with the official code's normalisation.

  Each embedding dim is standardised over the global batch as ``BatchNorm1d(affine=False)`` does in
  training: ``(z - mean) / sqrt(var + 1e-5)`` with the biased variance. Then
  ``c = z1n.T @ z2n / N`` (N the global batch size) and
  ``L = sum_i (1 - c_ii)^2 + lambda_offdiag * sum_{i != j} c_ij^2`` (no further scaling).

  Args:
    z1: [N, D] first view's projections (this device's rows under ``axis_name``).
    z2: [N, D] second view's projections.
    lambda_offdiag: weight of the redundancy-reduction term, >= 0 (the paper's lambda, 5e-3).
    axis_name: mesh axis over which batch statistics and ``c`` are reduced, inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x1 = checks.embeddings(z1, "z1", axis_name=axis_name)
  x2 = checks.embeddings(z2, "z2", axis_name=axis_name)
  checks.same_shape(x1, x2, "z1", "z2")
  checks.in_range(lambda_offdiag, "lambda_offdiag", 0.0, float("inf"))
  if axis_name is None:
    x1, x2 = collective.replicated(x1), collective.replicated(x2)

  def standardise(x):
    mean, rows = _global_mean_rows(x, axis_name)
    centred = x - mean
    var = collective.psum(jnp.sum(centred * centred, axis=0), axis_name) / rows
    return centred * jax.lax.rsqrt(var + 1e-5), rows

  n1, rows = standardise(x1)
  n2, _ = standardise(x2)
  c = collective.psum(n1.T @ n2, axis_name) / rows
  on_diag = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
  off_diag = jnp.sum(jnp.where(jnp.eye(c.shape[0], dtype=bool), 0.0, c * c))
  return on_diag + lambda_offdiag * off_diag


def vicreg(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    axis_name: str | None = None,
) -> jax.Array:
  """VICReg (Bardes, Ponce and LeCun 2022, eqs. 1-6) with the official code's normalisation.

  ``L = sim_weight * s + var_weight * v + cov_weight * c`` where, over the global batch of N rows and
  D dims: ``s = mean((z1 - z2)^2)`` over all N x D entries; per view, with the unbiased (N - 1)
  variance, ``v = mean_d relu(1 - sqrt(var_d + 1e-4))``, averaged over the two views; and
  ``c = sum_{i != j} cov_ij^2 / D`` with the unbiased covariance, summed over the two views.

  Args:
    z1: [N, D] first view's expander outputs (this device's rows under ``axis_name``).
    z2: [N, D] second view's expander outputs.
    sim_weight: invariance weight lambda (25).
    var_weight: variance weight mu (25).
    cov_weight: covariance weight nu (1).
    axis_name: mesh axis over which the statistics are reduced, inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x1 = checks.embeddings(z1, "z1", axis_name=axis_name)
  x2 = checks.embeddings(z2, "z2", axis_name=axis_name)
  checks.same_shape(x1, x2, "z1", "z2")
  for name, w in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
    checks.in_range(w, name, 0.0, float("inf"))
  if axis_name is None:
    x1, x2 = collective.replicated(x1), collective.replicated(x2)
  dim = x1.shape[1]
  invariance, _ = _global_mean_rows(jnp.mean((x1 - x2) ** 2, axis=1, keepdims=True), axis_name)

  def variance_and_covariance(x):
    mean, rows = _global_mean_rows(x, axis_name)
    centred = x - mean
    cov = collective.psum(centred.T @ centred, axis_name) / (rows - 1)
    std = jnp.sqrt(jnp.diagonal(cov) + 1e-4)
    off = jnp.sum(jnp.where(jnp.eye(dim, dtype=bool), 0.0, cov * cov)) / dim
    return jnp.mean(jax.nn.relu(1.0 - std)), off

  v1, c1 = variance_and_covariance(x1)
  v2, c2 = variance_and_covariance(x2)
  return (
      sim_weight * invariance[0]
      + var_weight * (v1 + v2) / 2
      + cov_weight * (c1 + c2)
  )
