"""Metric-learning retrieval scores: Recall@K, R-precision and MAP@R (Musgrave, Belongie and Lim 2020,
"A Metric Learning Reality Check", Sec. 3.2), over one set used as both queries and gallery.

Every item queries all the others (itself excluded). With ``R`` the number of other items of the
query's class and ``rel(i)`` whether its i-th nearest neighbour shares the class:

* Recall@K: 1 if any of the K nearest neighbours shares the class (the usual CUB / Cars / SOP metric);
* R-precision: ``(1/R) sum_{i<=R} rel(i)``;
* MAP@R: ``(1/R) sum_{i<=R} P(i) rel(i)`` with ``P(i)`` the precision of the first i neighbours;

each averaged over the queries that have at least one other item of their class. Neighbours are
found on the accelerator (chunks of queries against the whole set, ``lax.top_k`` of the largest R),
so memory is bounded by the chunk; the scores themselves are NumPy on [queries, R] label hits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DISTANCES = ("cosine", "euclidean")
_BLOCK_ELEMENTS = 1 << 26  # [query rows, items] similarity block at most (256 MiB of float32)


@functools.partial(jax.jit, static_argnames=("k", "distance"))
def _neighbours(items, queries, query_index, *, k, distance):
  """Indices of the k nearest items of each query, the query itself excluded."""
  if distance == "cosine":
    unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    score = jnp.matmul(unit(queries), unit(items).T, precision=jax.lax.Precision.HIGHEST)
  else:  # -squared Euclidean distance: the same order as the distance
    score = (2 * jnp.matmul(queries, items.T, precision=jax.lax.Precision.HIGHEST)
             - jnp.sum(items ** 2, -1)[None, :] - jnp.sum(queries ** 2, -1)[:, None])
  score = score.at[jnp.arange(queries.shape[0]), query_index].set(-jnp.inf)
  return jax.lax.top_k(score, k)[1]  # ties: the lower item index first


def retrieval_scores(features: np.ndarray, labels: np.ndarray, *, ks: tuple[int, ...] = (1, 2, 4, 8),
                     distance: str = "cosine", batch_size: int | None = None) -> dict[str, float]:
  """Recall@K for each K in ``ks``, R-precision and MAP@R of ``features`` against themselves.

  Args:
    features: [N, F] embeddings.
    labels: [N] integer classes.
    ks: the K of Recall@K.
    distance: "cosine" (on L2-normalised features) or "euclidean".
    batch_size: queries per chunk (default: as many as keep the [chunk, N] block under 256 MiB).

  Returns:
    ``{"recall@1": ..., "recall@2": ..., "r_precision": ..., "map@r": ...}`` as fractions in [0, 1].
  """
  if distance not in DISTANCES:
    raise ValueError(f"distance={distance!r}: use one of {DISTANCES}.")
  features = np.asarray(features, np.float32)
  labels = np.asarray(labels).reshape(-1)
  n = len(labels)
  if features.ndim != 2 or len(features) != n:
    raise ValueError(f"features must be [N, F] with N = len(labels) = {n}; got {features.shape}.")
  if n < 2:
    raise ValueError(f"retrieval needs at least 2 items; got {n}.")
  counts = np.bincount(labels - labels.min())[labels - labels.min()] - 1  # R of each query
  k = int(min(n - 1, max(max(ks), counts.max(initial=1))))
  chunk = batch_size or max(1, min(n, _BLOCK_ELEMENTS // n))
  items = jnp.asarray(features)
  hits = []
  for start in range(0, n, chunk):
    idx = np.arange(start, min(start + chunk, n))
    nearest = np.asarray(_neighbours(items, items[idx], jnp.asarray(idx), k=k, distance=distance))
    hits.append(labels[nearest] == labels[idx, None])
  hit = np.concatenate(hits)                                # [N, k]: rel(i) of each query
  valid = counts > 0
  hit, r = hit[valid], counts[valid]
  within_r = np.arange(k)[None, :] < r[:, None]
  precision_at_i = np.cumsum(hit, axis=1) / np.arange(1, k + 1)[None, :]
  out = {f"recall@{q}": float(np.mean(hit[:, :q].any(axis=1))) for q in ks}
  out["r_precision"] = float(np.mean(np.sum(hit & within_r, axis=1) / r))
  out["map@r"] = float(np.mean(np.sum(precision_at_i * (hit & within_r), axis=1) / r))
  return out
