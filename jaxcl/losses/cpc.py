"""Contrastive Predictive Coding's InfoNCE (van den Oord, Li and Vinyals 2018, eq. 4).

For every sequence i, step t and horizon k = 1..K with t + k < S, the prediction ``W_k c_t`` of the
latent ``z_{i,t+k}`` is scored against every latent of the global batch, ``f(x, c) = exp(z^T W_k c)``
(the paper's log-bilinear score, no temperature: ``W_k`` learns the scale):

  L = - mean_{i,t,k} log [ exp(z_{i,t+k} . p_{i,t,k}) / sum_{j,u} exp(z_{j,u} . p_{i,t,k}) ]

The negatives are the latents of the other steps of the same sequence and of every step of every
other sequence, on every device (``axis_name``: all-gathered, so the value and its gradient are the
single-device ones).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective


def _check(predictions, latents, axis_name):
  p = checks.as_float(predictions, "predictions")
  z = checks.as_float(latents, "latents")
  if p.ndim != 4 or z.ndim != 3 or p.shape[:2] != z.shape[:2] or p.shape[-1] != z.shape[-1]:
    raise ValueError(f"predictions must be [B, S, K, D] and latents [B, S, D] with the same B, S, D; "
                     f"got {tuple(p.shape)} and {tuple(z.shape)}.")
  if p.shape[2] >= p.shape[1]:
    raise ValueError(f"K={p.shape[2]} prediction steps need more than K latent steps per sequence "
                     f"(S={p.shape[1]}); lower method.prediction_steps or crop longer windows.")
  return p, z


def _scores(p, z, axis_name):
  """For each horizon k: (logits [b*(S-k), B*S], index of each row's true future)."""
  b, s, horizons, d = p.shape
  candidates = collective.gather(z.reshape(b * s, d), axis_name)           # [B*S, D], device order
  first = collective.row_offset(b, axis_name)                              # this device's first sequence
  for k in range(1, horizons + 1):
    queries = p[:, :s - k, k - 1].reshape(-1, d)                           # rows (i, t), t < S - k
    i, t = jnp.meshgrid(jnp.arange(b), jnp.arange(s - k), indexing="ij")
    yield queries @ candidates.T, ((first + i) * s + t + k).reshape(-1)


def cpc_infonce_and_accuracy(predictions: ArrayLike, latents: ArrayLike, *,
                             axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
  """``(cpc_infonce, cpc_accuracy)`` from one pass over the scores (what a training step logs)."""
  p, z = _check(predictions, latents, axis_name)
  total, hits, count = 0.0, 0.0, 0
  for logits, target in _scores(p, z, axis_name):
    logp = jax.nn.log_softmax(logits, axis=-1)
    total = total - jnp.sum(jnp.take_along_axis(logp, target[:, None], axis=-1))
    hits = hits + jnp.sum(jnp.argmax(jax.lax.stop_gradient(logits), axis=-1) == target)
    count += logits.shape[0]
  n = count * collective.axis_size(axis_name)
  return collective.psum(total, axis_name) / n, collective.psum(hits, axis_name) / n


def cpc_infonce(predictions: ArrayLike, latents: ArrayLike, *,
                axis_name: str | None = None) -> jax.Array:
  """CPC's InfoNCE over every (sequence, step, horizon) of the global batch.

  Args:
    predictions: [B, S, K, D]: ``predictions[i, t, k-1] = W_k c_{i,t}``.
    latents: [B, S, D]: the encoder's ``z_{i,t}``.
    axis_name: mesh axis of the batch inside ``jax.shard_map`` (negatives from every device).

  Returns:
    Scalar float32 loss, the mean over all predictions of the global batch.
  """
  return cpc_infonce_and_accuracy(predictions, latents, axis_name=axis_name)[0]


def cpc_accuracy(predictions: ArrayLike, latents: ArrayLike, *,
                 axis_name: str | None = None) -> jax.Array:
  """Fraction of predictions whose highest-scoring latent of the global batch is the true future."""
  return cpc_infonce_and_accuracy(predictions, latents, axis_name=axis_name)[1]
