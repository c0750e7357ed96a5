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


@functools.partial(jax.jit, static_argnames=("k",))
def _merge(best_scores, best_rows, queries, chunk, offset, valid, *, k):
  """The running top-k of ``queries`` updated with one corpus chunk (rows offset, offset + 1, ...)."""
  scores = jnp.matmul(queries, chunk.T, precision=jax.lax.Precision.HIGHEST)
  scores = jnp.where(valid[None, :], scores, -jnp.inf)
  rows = offset + jnp.arange(chunk.shape[0], dtype=jnp.int32)
  # The earlier (lower-row) candidates come first, so top_k's lower-index tie rule keeps lower rows.
  all_scores = jnp.concatenate([best_scores, scores], axis=1)
  all_rows = jnp.concatenate([best_rows, jnp.broadcast_to(rows, scores.shape)], axis=1)
  top, where = jax.lax.top_k(all_scores, k)
  return top, jnp.take_along_axis(all_rows, where, axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def top_k_search(queries: np.ndarray, corpus: np.ndarray, k: int, *, similarity: str = "dot",
                 query_chunk: int | None = None, corpus_chunk: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k of every query among the corpus embeddings, in bounded device memory.

  Args:
    queries: float [Q, D] query embeddings.
    corpus: float [N, D] corpus embeddings (host memory; chunks go to the device one at a time).
    k: results per query (at most N).
    similarity: "dot" (inner product) or "cosine" (both sides L2-normalised first).
    query_chunk / corpus_chunk: rows per block (default: blocks of about 16M scores).

  Returns:
    (scores float32 [Q, k], rows int32 [Q, k]), best first.
  """
  if similarity not in SIMILARITIES:
    raise ValueError(f"similarity={similarity!r}: use one of {SIMILARITIES}.")
  queries, corpus = np.asarray(queries, np.float32), np.asarray(corpus, np.float32)
  if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
    raise ValueError(f"queries [Q, D] and corpus [N, D] must share D; got {queries.shape} and "
                     f"{corpus.shape}.")
  n = len(corpus)
  k = min(int(k), n)
  if k < 1:
    raise ValueError(f"k={k}: must be >= 1 and the corpus non-empty.")
  if similarity == "cosine":
    queries, corpus = _unit(queries), _unit(corpus)
  corpus_chunk = min(n, corpus_chunk or max(k, 4096))
  query_chunk = query_chunk or max(1, min(len(queries), _BLOCK_ELEMENTS // corpus_chunk))
  q_pad = -len(queries) % query_chunk
  padded = jnp.asarray(np.pad(queries, ((0, q_pad), (0, 0))))
  best_scores = [jnp.full((query_chunk, k), -jnp.inf, jnp.float32)
                 for _ in range(0, len(padded), query_chunk)]
  best_rows = [jnp.full((query_chunk, k), -1, jnp.int32) for _ in best_scores]
  for start in range(0, n, corpus_chunk):
    block = corpus[start:start + corpus_chunk]
    valid = jnp.arange(corpus_chunk) < len(block)
    chunk = jnp.asarray(np.pad(block, ((0, corpus_chunk - len(block)), (0, 0))))
    for i, q in enumerate(range(0, len(padded), query_chunk)):
      best_scores[i], best_rows[i] = _merge(best_scores[i], best_rows[i],
                                            padded[q:q + query_chunk], chunk,
                                            jnp.int32(start), valid, k=k)
  scores = np.concatenate([np.asarray(s) for s in best_scores])[:len(queries)]
  rows = np.concatenate([np.asarray(r) for r in best_rows])[:len(queries)]
  return scores, rows
