"""Ranking metrics of queries against a corpus (MRR@10, NDCG@10, Recall@K), as trec_eval and BEIR
compute them, and exact top-k search of query embeddings against corpus embeddings.

With ``rel(d)`` the graded relevance of document d to a query (its qrels score; > 0 is relevant) and
``d_1, d_2, ...`` the ranking:

* MRR@k (trec_eval ``recip_rank`` of the run cut at k): ``1 / i`` for the first relevant ``d_i``
  with ``i <= k``, else 0;
* NDCG@k (trec_eval ``ndcg_cut.k``; Jarvelin and Kekalainen 2002): ``DCG@k / IDCG@k`` with
  ``DCG@k = sum_{i<=k} rel(d_i) / log2(i + 1)`` (linear gain) and IDCG@k the DCG of the relevant
  documents sorted by grade;
* Recall@k (trec_eval ``recall.k``): relevant documents in the top k / all relevant documents (so
  Recall@1 of a query with two relevant documents is at most 1/2);

each averaged over the queries that have at least one relevant document. Search is exact: chunks
of the corpus (transferred once) against chunks of the queries, keeping a running ``lax.top_k``, so
device memory is bounded by one [query chunk, corpus chunk] block; ties go to the lower corpus row.

With a mesh, the corpus is split into contiguous row ranges, one per device along the mesh's data
axis (padded rows masked to -inf). Inside ``jax.shard_map`` every device runs the same running top-k
over its rows in [query chunk, corpus chunk] blocks, the per-device candidates are all-gathered in
device order (= row order) and one more ``lax.top_k`` merges them, so ties still go to the lower row.
The device blocks line up with the single-device chunks (same shapes, same rows), so the sharded
search returns the single-device scores and rows bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

SIMILARITIES = ("dot", "cosine")
DEFAULT_KS = (1, 10, 100)
_BLOCK_ELEMENTS = 1 << 24  # [query chunk, corpus chunk] scores at most (64 MiB of float32)


def ranking_metrics(ranking: np.ndarray, relevant: Sequence[Mapping[int, int]], *,
                    recall_ks: Sequence[int] = DEFAULT_KS, mrr_k: int = 10,
                    ndcg_k: int = 10) -> dict[str, float]:
  """MRR@mrr_k, NDCG@ndcg_k and Recall@k of ranked corpus rows (see the module doc).

  Args:
    ranking: int [Q, K] corpus rows of each query, best first (-1 pads a shorter ranking). K must
      be at least the largest cutoff, or the whole corpus.
    relevant: per query, ``{corpus row: grade}``; grades <= 0 count as not relevant.
    recall_ks: the k of Recall@k.
    mrr_k / ndcg_k: the cutoffs of MRR and NDCG.

  Returns:
    ``{"mrr@10": ..., "ndcg@10": ..., "recall@1": ..., "recall@10": ..., "recall@100": ...,
    "num_queries": n}``: fractions in [0, 1] averaged over the n queries with a relevant document.
  """
  ranking = np.asarray(ranking)
  if ranking.ndim != 2 or len(ranking) != len(relevant):
    raise ValueError(f"ranking must be [queries, K] with one row per query ({len(relevant)}); got "
                     f"{ranking.shape}.")
  gains, counts, ideal = [], [], []
  for row, judged in zip(ranking, relevant):
    positive = {int(d): float(g) for d, g in judged.items() if g > 0}
    if not positive:
      continue
    gains.append([positive.get(int(d), 0.0) for d in row])
    counts.append(len(positive))
    top = sorted(positive.values(), reverse=True)[:ndcg_k]
    ideal.append(sum(g / np.log2(i + 2) for i, g in enumerate(top)))
  if not gains:
    raise ValueError("no query has a relevant document (a qrels score > 0); nothing to score.")
  gain = np.asarray(gains, np.float64)                               # [Q', K]: rel(d_i)
  hit = gain > 0
  counts = np.asarray(counts, np.float64)
  first = np.where(hit[:, :mrr_k].any(1), hit[:, :mrr_k].argmax(1) + 1, np.inf)
  discount = 1.0 / np.log2(np.arange(2, gain.shape[1] + 2))
  out = {f"mrr@{mrr_k}": float(np.mean(1.0 / first)),
         f"ndcg@{ndcg_k}": float(np.mean((gain[:, :ndcg_k] * discount[:ndcg_k]).sum(1)
                                         / np.asarray(ideal)))}
  for k in recall_ks:
    out[f"recall@{k}"] = float(np.mean(hit[:, :k].sum(1) / counts))
  out["num_queries"] = len(gains)
  return out


def ranking_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
  """int [Q, min(k, N)] corpus rows of the k highest scores of each query (ties: lower row first)."""
  scores = np.asarray(scores)
  return np.argsort(-scores, axis=1, kind="stable")[:, :min(k, scores.shape[1])]


def _keep_top_k(scores, rows, k):
  """The k best (scores, rows) of each query; among equal scores the leftmost candidate wins.

  Callers list candidates so that, among equal scores, the leftmost is the lowest row (earlier
  chunks and lower devices first), which makes ``lax.top_k``'s lower-index tie rule keep lower rows.
  """
  top, where = jax.lax.top_k(scores, k)
  return top, jnp.take_along_axis(rows, where, axis=1)


def _merge_block(best_scores, best_rows, queries, chunk, offset, valid, *, k):
  """The running top-k of ``queries`` updated with one corpus chunk (rows offset, offset + 1, ...)."""
  scores = jnp.matmul(queries, chunk.T, precision=jax.lax.Precision.HIGHEST)
  scores = jnp.where(valid[None, :], scores, -jnp.inf)
  rows = offset + jnp.arange(chunk.shape[0], dtype=jnp.int32)
  # The earlier (lower-row) candidates come first, so top_k's lower-index tie rule keeps lower rows.
  return _keep_top_k(jnp.concatenate([best_scores, scores], axis=1),
                     jnp.concatenate([best_rows, jnp.broadcast_to(rows, scores.shape)], axis=1), k)


_merge = jax.jit(_merge_block, static_argnames=("k",))


@functools.partial(jax.jit, static_argnames=("k", "chunk", "mesh", "axis"))
def _merge_sharded(best_scores, best_rows, queries, corpus, start, n, *, k, chunk, mesh, axis):
  """The running top-k updated with corpus rows ``start, start + 1, ...`` sharded over ``axis``.

  Device d holds rows ``start + d * L ... start + (d + 1) * L - 1`` (L a multiple of ``chunk``);
  rows ``>= n`` are padding and never win.
  """

  def local_top_k(corpus_block, best_scores, best_rows, queries, start, n):
    per_device = corpus_block.shape[0]
    base = start + jax.lax.axis_index(axis).astype(jnp.int32) * per_device

    def body(j, carry):
      offset = base + j * chunk
      block = jax.lax.dynamic_slice_in_dim(corpus_block, j * chunk, chunk)
      valid = offset + jnp.arange(chunk, dtype=jnp.int32) < n
      return _merge_block(*carry, queries, block, offset, valid, k=k)

    init = (jnp.full(best_scores.shape, -jnp.inf, jnp.float32),
            jnp.full(best_rows.shape, -1, jnp.int32))
    local_scores, local_rows = jax.lax.fori_loop(0, per_device // chunk, body, init)
    # [devices, Q, k] -> [Q, devices * k]: device order is row order, so the merge keeps lower rows.
    def gather(t):
      return jnp.moveaxis(jax.lax.all_gather(t, axis), 0, 1).reshape(t.shape[0], -1)

    return _keep_top_k(jnp.concatenate([best_scores, gather(local_scores)], axis=1),
                       jnp.concatenate([best_rows, gather(local_rows)], axis=1), k)

  return jax.shard_map(
      local_top_k, mesh=mesh, in_specs=(jax.P(axis), jax.P(), jax.P(), jax.P(), jax.P(), jax.P()),
      out_specs=(jax.P(), jax.P()), check_vma=False,
  )(corpus, best_scores, best_rows, queries, start, n)


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def top_k_search(queries: np.ndarray, corpus: np.ndarray, k: int, *, similarity: str = "dot",
                 query_chunk: int | None = None, corpus_chunk: int | None = None,
                 mesh: jax.sharding.Mesh | None = None, axis: str = "data",
                 device_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k of every query among the corpus embeddings, in bounded device memory.

  Args:
    queries: float [Q, D] query embeddings.
    corpus: float [N, D] corpus embeddings in host memory: a NumPy array, a memory map, or any
      object with ``shape`` and row slicing (only one chunk at a time is converted to float32).
    k: results per query (at most N).
    similarity: "dot" (inner product) or "cosine" (both sides L2-normalised first).
    query_chunk / corpus_chunk: rows per block (default: blocks of about 16M scores). With a mesh,
      ``corpus_chunk`` is the rows per block on each device.
    mesh: shard the corpus over ``axis`` of this mesh: each device holds a contiguous range of rows
      and keeps its own top-k, and the candidates are merged (see the module doc). None: one device.
    axis: the mesh axis the corpus is split over.
    device_rows: with a mesh, at most this many corpus rows (rounded up to ``corpus_chunk``) live on
      each device at once; a larger corpus streams through in slices. Default: all N / devices.

  Returns:
    (scores float32 [Q, k], rows int32 [Q, k]), best first; the same with and without a mesh.
  """
  if similarity not in SIMILARITIES:
    raise ValueError(f"similarity={similarity!r}: use one of {SIMILARITIES}.")
  queries = np.asarray(queries, np.float32)
  if not (hasattr(corpus, "shape") and hasattr(corpus, "__getitem__")):
    corpus = np.asarray(corpus, np.float32)
  if queries.ndim != 2 or len(corpus.shape) != 2 or queries.shape[1] != corpus.shape[1]:
    raise ValueError(f"queries [Q, D] and corpus [N, D] must share D; got {queries.shape} and "
                     f"{tuple(corpus.shape)}.")
  n = corpus.shape[0]
  k = min(int(k), n)
  if k < 1:
    raise ValueError(f"k={k}: must be >= 1 and the corpus non-empty.")

  def prepare(block):
    block = np.asarray(block, np.float32)
    return _unit(block) if similarity == "cosine" else block

  if similarity == "cosine":
    queries = _unit(queries)
  corpus_chunk = min(n, corpus_chunk or max(k, 4096))
  query_chunk = query_chunk or max(1, min(len(queries), _BLOCK_ELEMENTS // corpus_chunk))
  q_pad = -len(queries) % query_chunk
  padded = jnp.asarray(np.pad(queries, ((0, q_pad), (0, 0))))
  best_scores = [jnp.full((query_chunk, k), -jnp.inf, jnp.float32)
                 for _ in range(0, len(padded), query_chunk)]
  best_rows = [jnp.full((query_chunk, k), -1, jnp.int32) for _ in best_scores]
  if mesh is None:
    for start in range(0, n, corpus_chunk):
      block = prepare(corpus[start:start + corpus_chunk])
      valid = jnp.arange(corpus_chunk) < len(block)
      chunk = jnp.asarray(np.pad(block, ((0, corpus_chunk - len(block)), (0, 0))))
      for i, q in enumerate(range(0, len(padded), query_chunk)):
        best_scores[i], best_rows[i] = _merge(best_scores[i], best_rows[i],
                                              padded[q:q + query_chunk], chunk,
                                              jnp.int32(start), valid, k=k)
  else:
    if axis not in mesh.axis_names:
      raise ValueError(f"axis={axis!r} is not an axis of the mesh {mesh.axis_names}: pass the name "
                       f"of its data axis.")
    devices = mesh.shape[axis]
    per_device = -(-n // devices)
    if device_rows is not None:
      if device_rows < 1:
        raise ValueError(f"device_rows={device_rows}: must be >= 1 (or None for all rows at once).")
      per_device = min(per_device, device_rows)
    # A multiple of corpus_chunk, so the device blocks are the single-device chunks.
    per_device = -(-per_device // corpus_chunk) * corpus_chunk
    span = devices * per_device
    sharding = jax.sharding.NamedSharding(mesh, jax.P(axis))
    for start in range(0, n, span):

      def device_slice(index, start=start):
        lo, hi, _ = index[0].indices(span)
        block = prepare(corpus[start + lo:min(start + hi, n)])
        return np.pad(block, ((0, hi - lo - len(block)), (0, 0)))[:, index[1]]

      shard = jax.make_array_from_callback((span, queries.shape[1]), sharding, device_slice)
      for i, q in enumerate(range(0, len(padded), query_chunk)):
        best_scores[i], best_rows[i] = _merge_sharded(
            best_scores[i], best_rows[i], padded[q:q + query_chunk], shard, jnp.int32(start),
            jnp.int32(n), k=k, chunk=corpus_chunk, mesh=mesh, axis=axis)
  scores = np.concatenate([np.asarray(s) for s in best_scores])[:len(queries)]
  rows = np.concatenate([np.asarray(r) for r in best_rows])[:len(queries)]
  return scores, rows
