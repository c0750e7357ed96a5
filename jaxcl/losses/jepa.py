"""I-JEPA's objective (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
Predictive Architecture", eq. 1): the L2 distance in representation space between the predictor's
output for each target block and the target encoder's representation of the block's patches,

  L = 1/M sum_i 1/|B_i| sum_{j in B_i} || s_hat_{y_j} - s_{y_j} ||^2,

averaged over the batch. Here the squared norm is a mean over the D features (1/D times the norm, so
the loss's scale does not grow with the width). This is the paper's L2 (eq. 1); its released code
averages a smooth-L1 loss over every element instead, with every block of a batch truncated to one
size by its collator. Here blocks keep their own sizes per example and each counts equally.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective


def jepa_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    target_masks: ArrayLike,
    *,
    axis_name: str | None = None,
) -> jax.Array:
  """Mean over (example, target block) of the mean over the block's tokens of the mean over features
  of the squared difference between prediction and target.

  Args:
    predictions: [b, M, N, D] the predictor's output for each of the M target blocks at every one of
      the N patch positions (only the block's positions are read).
    targets: [b, N, D] the target representations of the N patches (stop their gradient yourself).
    target_masks: bool [b, M, N], True at the positions of each block. A block without positions
      contributes 0.
    axis_name: mesh axis of the batch inside ``jax.shard_map``: every device holds as many rows, so
      the loss is the global mean.

  Returns:
    Scalar float32 loss of the global batch.
  """
  p = checks.as_float(predictions, "predictions")
  t = checks.as_float(targets, "targets")
  masks = jnp.asarray(target_masks)
  if p.ndim != 4 or t.ndim != 3 or t.shape != (p.shape[0],) + p.shape[2:]:
    raise ValueError(f"predictions must be [b, M, N, D] and targets [b, N, D] with the same b, N, D; "
                     f"got {tuple(p.shape)} and {tuple(t.shape)}.")
  if masks.shape != p.shape[:3] or masks.dtype != jnp.bool_:
    raise ValueError(f"target_masks must be boolean [b, M, N] = {list(p.shape[:3])}, got "
                     f"{masks.dtype} {tuple(masks.shape)}.")
  sq = jnp.mean((p - t[:, None]) ** 2, axis=-1)                        # [b, M, N]
  tokens = jnp.sum(masks, axis=-1)                                     # [b, M]
  per_block = jnp.sum(jnp.where(masks, sq, 0.0), axis=-1) / jnp.maximum(tokens, 1)
  return collective.global_mean(per_block.reshape(-1), axis_name)
