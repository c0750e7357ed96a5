"""Matryoshka representation learning (Kusupati et al. 2022, eq. 1; sentence-transformers'
``MatryoshkaLoss``): one loss summed over nested prefixes of the embedding,

  L = sum_m w_m * loss(z[..., :d_m] / ||z[..., :d_m]||, ...)

so that the first d_m coordinates of every embedding are, on their own, a usable (renormalised)
embedding. ``matryoshka(loss_fn, dims)`` wraps any loss of embeddings whose last axis is the feature
axis (e.g. ``retrieval_infonce``'s query [n, D], positive [n, D] and negatives [n, H, D]); keyword
arguments (temperature, masks, ``axis_name``, ``block_size``) pass through unchanged, so the wrapped
loss keeps its cross-device negatives and its gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxcl.losses import ops


def check_dims(dims: Sequence[int], full_dim: int | None = None, *,
               field: str = "method.matryoshka_dims") -> tuple[int, ...]:
  """``dims`` as a tuple of distinct ints in (0, full_dim], or a ValueError naming ``field``."""
  dims = tuple(int(d) for d in dims)
  if not dims or len(set(dims)) != len(dims) or min(dims) < 1:
    raise ValueError(f"{field}={dims}: give distinct positive prefix sizes, e.g. (384, 128, 64).")
  if full_dim is not None and max(dims) > full_dim:
    raise ValueError(f"{field}={dims}: the embedding has {full_dim} dimensions; every prefix must be "
                     f"<= {full_dim}.")
  return dims


def matryoshka(loss_fn: Callable[..., jax.Array], dims: Sequence[int],
               weights: Sequence[float] | None = None) -> Callable[..., jax.Array]:
  """The Matryoshka sum of ``loss_fn`` over embedding prefixes.

  Args:
    loss_fn: ``loss_fn(*embeddings, **kwargs) -> scalar``; each positional argument an array whose
      last axis is the feature axis, or None (passed through).
    dims: prefix sizes, e.g. (384, 128, 64); each <= the embeddings' size.
    weights: one weight per prefix (default 1 each, as sentence-transformers' MatryoshkaLoss).

  Returns:
    ``wrapped(*embeddings, **kwargs) -> scalar``: ``sum_m weights[m] * loss_fn(prefix_m(e)...)``,
    each prefix L2-renormalised.
  """
  dims = check_dims(dims)
  weights = (1.0,) * len(dims) if weights is None else tuple(float(w) for w in weights)
  if len(weights) != len(dims):
    raise ValueError(f"matryoshka weights {weights} must have one entry per dim of {dims}.")

  def wrapped(*embeddings, **kwargs):
    for e in embeddings:
      if e is not None and e.shape[-1] < max(dims):
        raise ValueError(f"matryoshka dims {dims}: an embedding has only {e.shape[-1]} dimensions.")
    total = jnp.zeros((), jnp.float32)
    for d, w in zip(dims, weights):
      prefix = [None if e is None else ops.l2_normalize(jnp.asarray(e, jnp.float32)[..., :d])
                for e in embeddings]
      total = total + w * loss_fn(*prefix, **kwargs)
    return total

  return wrapped
