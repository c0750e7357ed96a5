"""Margin losses on Euclidean distances: contrastive pairs, triplets, and online triplet mining.

These act on the raw embeddings (no L2 normalisation: normalise before calling if you want distances on
the sphere) and use ``sqrt(max(d^2, 1e-12))`` so that identical points have a finite gradient. The pair
and triplet losses are per-row means: inside ``jax.shard_map`` combine the per-device means with
``jax.lax.pmean``. The two mining losses take ``axis_name``: each device's anchors are mined against the
rows of every device (gathered), so mining sees the global batch, with the single-device value and
gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def contrastive_margin(
    x1: ArrayLike, x2: ArrayLike, is_similar: ArrayLike, *, margin: float = 1.0
) -> jax.Array:
  """Contrastive (pair) loss of Hadsell, Chopra and LeCun (2006, eq. 4).

  ``l_i = y_i * d_i^2 / 2 + (1 - y_i) * max(0, margin - d_i)^2 / 2`` with ``d_i = ||x1_i - x2_i||`` and
  ``y_i = 1`` for a similar pair (the paper writes ``Y = 0`` for similar); mean over pairs.

  Args:
    x1: [N, D] first element of each pair.
    x2: [N, D] second element.
    is_similar: [N] bool (or 0/1 integer or float) pair labels.
    margin: m > 0, the radius beyond which dissimilar pairs cost nothing.

  Returns:
    Scalar float32 loss.
  """
  a = checks.embeddings(x1, "x1")
  b = checks.embeddings(x2, "x2")
  checks.same_shape(a, b, "x1", "x2")
  checks.positive(margin, "margin")
  y = jnp.asarray(is_similar)
  if y.shape != (a.shape[0],):
    raise ValueError(f"is_similar must have shape ({a.shape[0]},) (one per pair), got {tuple(y.shape)}.")
  if not (y.dtype == jnp.bool_ or jnp.issubdtype(y.dtype, jnp.integer)
          or jnp.issubdtype(y.dtype, jnp.floating)):
    raise ValueError(f"is_similar must be bool, integer or float, got dtype {y.dtype}.")
  y = y.astype(a.dtype)
  sq = jnp.sum((a - b) ** 2, axis=-1)
  dissimilar = jax.nn.relu(margin - ops.safe_sqrt(sq)) ** 2
  return jnp.mean(0.5 * (y * sq + (1.0 - y) * dissimilar))


def triplet_margin(
    anchor: ArrayLike, positive: ArrayLike, negative: ArrayLike, *, margin: float = 1.0
) -> jax.Array:
  """Triplet loss on given triplets (FaceNet, Schroff et al. 2015, with Euclidean distances).

  ``l_i = max(0, ||a_i - p_i|| - ||a_i - n_i|| + margin)``; mean over triplets.

  Args:
    anchor: [N, D] anchors.
    positive: [N, D] same-class partner of each anchor.
    negative: [N, D] other-class partner of each anchor.
    margin: m > 0.

  Returns:
    Scalar float32 loss.
  """
  a = checks.embeddings(anchor, "anchor")
  p = checks.embeddings(positive, "positive")
  n = checks.embeddings(negative, "negative")
  checks.same_shape(a, p, "anchor", "positive")
  checks.same_shape(a, n, "anchor", "negative")
  checks.positive(margin, "margin")
  d_ap = ops.safe_sqrt(jnp.sum((a - p) ** 2, axis=-1))
  d_an = ops.safe_sqrt(jnp.sum((a - n) ** 2, axis=-1))
  return jnp.mean(jax.nn.relu(d_ap - d_an + margin))


def _label_masks(x: jax.Array, labels: ArrayLike, axis_name: str | None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Distances [b, N] from this device's rows to the global batch's, and the positive / negative masks."""
  y = checks.labels(labels, x.shape[0])
  # Pairwise masks of a batch sharded on an Explicit mesh axis need one replicated side.
  candidates, all_y = collective.gather(x, axis_name), collective.gather(y, axis_name)
  if axis_name is None:
    x, y = candidates, all_y
  same = y[:, None] == all_y[None, :]
  rows = jnp.arange(x.shape[0]) + collective.row_offset(x.shape[0], axis_name)
  not_self = jnp.arange(candidates.shape[0])[None, :] != rows[:, None]
  dist = ops.safe_sqrt(ops.pairwise_sq_distances(x, candidates))
  return dist, same & not_self, ~same


def _mean_over_valid(per_item: jax.Array, valid: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean of ``per_item`` over the ``valid`` items of every device (0 if there is none)."""
  total = collective.psum(jnp.sum(jnp.where(valid, per_item, 0.0)), axis_name)
  count = collective.psum(jnp.sum(valid), axis_name)
  return total / jnp.maximum(count, 1)


def batch_hard_triplet(z: ArrayLike, labels: ArrayLike, *, margin: float = 1.0,
                       axis_name: str | None = None) -> jax.Array:
  """Batch-hard triplet loss ("Batch Hard" of Hermans, Beyer and Leibe 2017).

  For every anchor: the farthest positive and the closest negative of the batch,
  ``l_a = max(0, margin + max_p d(a, p) - min_n d(a, n))``; mean over the anchors that have at least
  one positive and one negative (all of them under P x K sampling), 0 if there is none.

  Args:
    z: [N, D] embeddings.
    labels: [N] integer class ids.
    margin: m > 0.
    axis_name: mesh axis to mine over (every device's rows), inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x = checks.embeddings(z, "z", axis_name=axis_name)
  checks.positive(margin, "margin")
  dist, is_pos, is_neg = _label_masks(x, labels, axis_name)
  hardest_pos = jnp.max(jnp.where(is_pos, dist, -jnp.inf), axis=-1)
  hardest_neg = jnp.min(jnp.where(is_neg, dist, jnp.inf), axis=-1)
  valid = jnp.any(is_pos, axis=-1) & jnp.any(is_neg, axis=-1)
  per_anchor = jax.nn.relu(margin + jnp.where(valid, hardest_pos - hardest_neg, 0.0))
  return _mean_over_valid(per_anchor, valid, axis_name)


def batch_semi_hard_triplet(z: ArrayLike, labels: ArrayLike, *, margin: float = 1.0,
                            axis_name: str | None = None) -> jax.Array:
  """Semi-hard online triplet mining (Schroff et al. 2015, FaceNet section 3.2).

  For every anchor-positive pair (a, p), the negative is the closest one that is farther than p,
  ``min {d(a, n) : d(a, n) > d(a, p)}``; when no negative is farther, the farthest negative (the
  TensorFlow Addons rule). ``l_ap = max(0, margin + d(a, p) - d(a, n))``; mean over the
  anchor-positive pairs whose anchor has a negative, 0 if there is none.

  Args:
    z: [N, D] embeddings.
    labels: [N] integer class ids.
    margin: m > 0.
    axis_name: mesh axis to mine over (every device's rows), inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x = checks.embeddings(z, "z", axis_name=axis_name)
  checks.positive(margin, "margin")
  dist, is_pos, is_neg = _label_masks(x, labels, axis_name)
  d_ap = dist[:, :, None]  # [a, p, 1]
  d_an = dist[:, None, :]  # [a, 1, n]
  farther = is_neg[:, None, :] & (d_an > d_ap)
  semi_hard = jnp.min(jnp.where(farther, d_an, jnp.inf), axis=-1)  # [a, p]
  easiest = jnp.max(jnp.where(is_neg, dist, -jnp.inf), axis=-1)[:, None]  # [a, 1]
  chosen = jnp.where(jnp.any(farther, axis=-1), semi_hard, easiest)
  valid = is_pos & jnp.any(is_neg, axis=-1)[:, None]
  per_pair = jax.nn.relu(margin + jnp.where(valid, dist - chosen, 0.0))
  return _mean_over_valid(per_pair, valid, axis_name)
