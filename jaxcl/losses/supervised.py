"""Supervised contrastive loss: every other row with the anchor's label is a positive."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def supcon(
    z: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float = 0.1,
    axis_name: str | None = None,
) -> jax.Array:
  """Supervised contrastive loss L_out (Khosla et al. 2020, eq. 2).

  ``z`` holds all views of all examples (M rows). For anchor i with positives
  ``P(i) = {p != i : label_p = label_i}`` and cosine similarities ``s``:
  ``l_i = -(1/|P(i)|) sum_{p in P(i)} log(exp(s_ip / t) / sum_{a != i} exp(s_ia / t))``; the loss is
  the mean over the anchors of the global batch that have at least one positive (0 if none has).
  The official code's extra ``t / base_temperature`` factor is 1 at its defaults and is left out.

  Args:
    z: [M, D] embeddings (this device's rows under ``axis_name``); for two views of B examples, stack
      them to M = 2B rows with the labels repeated.
    labels: [M] integer class ids.
    temperature: t > 0.
    axis_name: mesh axis to gather rows and labels over, inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x = checks.embeddings(z, "z", axis_name=axis_name)
  y = checks.labels(labels, x.shape[0])
  checks.positive(temperature, "temperature")
  m = x.shape[0]
  anchors = ops.l2_normalize(x)
  candidates = collective.gather(anchors, axis_name)
  all_labels = collective.gather(y, axis_name)
  logits = anchors @ candidates.T / temperature
  rows = jnp.arange(m) + collective.row_offset(m, axis_name)
  not_self = jnp.arange(candidates.shape[0])[None, :] != rows[:, None]
  log_prob = logits - ops.masked_logsumexp(logits, not_self)[:, None]
  is_positive = not_self & (y[:, None] == all_labels[None, :])
  num_positive = jnp.sum(is_positive, axis=-1)
  has_positive = num_positive > 0
  per_anchor = -jnp.sum(jnp.where(is_positive, log_prob, 0.0), axis=-1) / jnp.maximum(
      num_positive, 1
  )
  total = collective.psum(jnp.sum(jnp.where(has_positive, per_anchor, 0.0)), axis_name)
  count = collective.psum(jnp.sum(has_positive), axis_name)
  return total / jnp.maximum(count, 1)
