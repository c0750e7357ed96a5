"""Hard negatives for text retrieval, mined from the corpus with an embedding model.

For each query, the corpus documents it scores highest that are not known to be relevant make the
hardest negatives; among them, some are relevant documents nobody judged (false negatives). The
positive-aware filter of NV-Retriever (Moreira et al. 2024, "TopK-PercPos") drops every candidate
that scores more than ``margin`` times the query's best positive: a document that close to the
positive is more likely unjudged than wrong.

  ids, docs = text.load_corpus(cfg)
  train = text.load_train_queries(cfg, corpus=(ids, docs))
  mined = mine_hard_negatives(embed(train.queries), embed(docs), train.positives, num_negatives=4)
  text.write_negatives(cfg, mined.for_rows(train.row_query), name="stdlib_code_mined")

For query q with known positives P(q), the candidates are its ``top_k`` best-scoring corpus rows
outside P(q) (exact search, ``ranking.top_k_search``; ties to the lower corpus row); with
``margin``, those scoring above ``margin * max_{p in P(q)} s(q, p)`` are dropped (no filter where
P(q) is empty); the first ``skip`` survivors are skipped and the next ``num_negatives`` kept, best
first. The threshold is the paper's: a fraction of the positive's score, so it assumes positive
scores > 0 (cosine similarity of a trained encoder).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import jax
import numpy as np

from jaxcl.evaluate import ranking

PAD = -1  # the corpus row where fewer than num_negatives negatives were found
_PAIR_CHUNK = 1 << 16  # (query, positive) scores computed at once on the host


@dataclasses.dataclass(frozen=True)
class MinedNegatives:
  """The negatives of every query, best first.

  Attributes:
    rows: int32 [Q, num_negatives] corpus rows; -1 where fewer were found.
    scores: float32 [Q, num_negatives] their similarity to the query; -inf where rows is -1.
    num_dropped_positives: candidates dropped because they are known positives of their query.
    num_dropped_margin: candidates dropped by the margin filter (likely false negatives).
  """

  rows: np.ndarray
  scores: np.ndarray
  num_dropped_positives: int
  num_dropped_margin: int

  def for_rows(self, row_query: Sequence[int] | np.ndarray) -> list[list[int]]:
    """The negatives of each stored row, given the query of each row (``TrainQueries.row_query``),
    without the -1 padding: what ``jaxcl.data.text.write_negatives`` takes."""
    return [[int(r) for r in self.rows[q] if r != PAD] for q in np.asarray(row_query, np.int64)]


def _check(query_emb, corpus_emb, positives, num_negatives, top_k, skip, margin, similarity):
  if similarity not in ranking.SIMILARITIES:
    raise ValueError(f"similarity={similarity!r}: use one of {ranking.SIMILARITIES}.")
  if query_emb.ndim != 2 or corpus_emb.ndim != 2 or query_emb.shape[1] != corpus_emb.shape[1]:
    raise ValueError(f"query_emb [Q, D] and corpus_emb [N, D] must share D; got {query_emb.shape} "
                     f"and {corpus_emb.shape}.")
  if not len(corpus_emb):
    raise ValueError("corpus_emb is empty: there is nothing to mine negatives from.")
  _check_args(len(query_emb), positives, num_negatives, top_k, skip, margin)


def _check_args(num_queries, positives, num_negatives, top_k, skip, margin):
  if len(positives) != num_queries:
    raise ValueError(f"positives has {len(positives)} entries for {num_queries} queries; give "
                     "one collection of corpus rows per query (empty where none is known).")
  if int(num_negatives) != num_negatives or num_negatives < 1:
    raise ValueError(f"num_negatives={num_negatives}: must be an integer >= 1.")
  if int(skip) != skip or skip < 0:
    raise ValueError(f"skip={skip}: must be an integer >= 0.")
  if int(top_k) != top_k or top_k < num_negatives + skip:
    raise ValueError(f"top_k={top_k}: must be an integer >= num_negatives + skip "
                     f"({num_negatives} + {skip}); raise top_k or lower num_negatives / skip.")
  if margin is not None and not 0 < margin <= 1:
    raise ValueError(f"margin={margin}: must be in (0, 1] (e.g. 0.95 drops candidates scoring "
                     "above 95% of the positive), or None for no filter.")


def _pairs(positives: Sequence[Collection[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
  """(query, corpus row) of every known positive, each pair once, checked against the corpus."""
  per_query = [np.unique(np.fromiter((int(r) for r in p), np.int64)) for p in positives]
  for q, rows in enumerate(per_query):
    if rows.size and (rows[0] < 0 or rows[-1] >= n):
      bad = rows[0] if rows[0] < 0 else rows[-1]
      raise ValueError(f"positives[{q}] holds {bad}, not a row of the corpus (0 .. {n - 1}).")
  counts = np.asarray([len(r) for r in per_query], np.int64)
  rows = np.concatenate(per_query) if per_query else np.zeros(0, np.int64)
  return np.repeat(np.arange(len(per_query)), counts), rows


def _pair_scores(queries: np.ndarray, corpus: np.ndarray, pair_query: np.ndarray,
                 pair_row: np.ndarray) -> np.ndarray:
  out = np.empty(len(pair_query), np.float32)
  for start in range(0, len(pair_query), _PAIR_CHUNK):
    q, r = pair_query[start:start + _PAIR_CHUNK], pair_row[start:start + _PAIR_CHUNK]
    out[start:start + len(q)] = np.einsum("pd,pd->p", queries[q], corpus[r])
  return out


def mine_hard_negatives(query_emb: jax.typing.ArrayLike, corpus_emb: jax.typing.ArrayLike,
                        positives: Sequence[Collection[int]], *, num_negatives: int,
                        top_k: int = 50, skip: int = 0, margin: float | None = 0.95,
                        similarity: str = "dot", mesh: jax.sharding.Mesh | None = None
                        ) -> MinedNegatives:
  """Hard negatives of every query among the corpus, false negatives filtered (see the module doc).

  Moreira et al. 2024, "NV-Retriever: Improving text embedding models with effective
  hard-negative mining" (TopK-PercPos with ``margin``; ``margin=None`` is plain top-k).

  Args:
    query_emb: float [Q, D] query embeddings.
    corpus_emb: float [N, D] corpus embeddings.
    positives: per query, the corpus rows known to be relevant (never returned; the best of them
      sets the margin threshold). ``jaxcl.data.text.load_train_queries(cfg).positives`` gives them.
    num_negatives: negatives per query.
    top_k: how many of each query's best non-positive documents are candidates (>= num_negatives
      + skip); more leaves room for the filter.
    skip: how many of the best surviving candidates to pass over (the very hardest ones).
    margin: drop candidates scoring above ``margin`` x the best positive score (in (0, 1]);
      None keeps every candidate.
    similarity: "dot" or "cosine" (both sides L2-normalised first).
    mesh: search with the corpus sharded over this mesh's "data" axis (the same result).

  Returns:
    ``MinedNegatives``: rows and scores [Q, num_negatives] (-1 / -inf where fewer were found) and
    how many candidates each filter dropped. The same inputs give the same output.
  """
  queries = np.asarray(query_emb, np.float32)
  corpus = np.asarray(corpus_emb, np.float32)
  _check(queries, corpus, positives, num_negatives, top_k, skip, margin, similarity)
  num_negatives, top_k, skip = int(num_negatives), int(top_k), int(skip)
  nq, n = len(queries), len(corpus)
  pair_query, pair_row = _pairs(positives, n)
  if not nq:
    return MinedNegatives(np.zeros((0, num_negatives), np.int32),
                          np.zeros((0, num_negatives), np.float32), 0, 0)
  most = int(np.bincount(pair_query, minlength=nq).max())
  # Room for every positive above the candidates, so top_k candidates remain after dropping them.
  scores, cand = ranking.top_k_search(queries, corpus, min(n, top_k + most), similarity=similarity,
                                      mesh=mesh)

  def unranked_scores(q, r):  # positives the search did not rank: scored directly
    if similarity == "cosine":
      return _pair_scores(_unit(queries), _unit(corpus), q, r)
    return _pair_scores(queries, corpus, q, r)

  return _select(scores, cand, pair_query, pair_row, n, num_negatives=num_negatives, top_k=top_k,
                 skip=skip, margin=margin, unranked_scores=unranked_scores)


def _unit(x: np.ndarray) -> np.ndarray:
  """Rows scaled to length 1, as ``ranking.top_k_search`` does for cosine similarity."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def mine_from_ranking(scores: np.ndarray, rows: np.ndarray, positives: Sequence[Collection[int]], *,
                      corpus_size: int, num_negatives: int, top_k: int = 50, skip: int = 0,
                      margin: float | None = None) -> MinedNegatives:
  """Hard negatives from a ranking made elsewhere, e.g. BM25's (``bm25.bm25_search``): DPR's
  negatives are the top BM25 documents that are not the answer.

  The same selection as ``mine_hard_negatives``. ``margin`` compares with the best positive's score in
  the ranking; a query whose positives are not ranked is not filtered.

  Args:
    scores: float [Q, K] scores of ``rows``, best first.
    rows: int [Q, K] corpus rows, best first; K should be at least ``top_k`` plus the most positives
      of a query, so positives do not crowd out candidates.
    positives: per query, the corpus rows known to be relevant.
    corpus_size: rows of the corpus.
    num_negatives / top_k / skip / margin: as ``mine_hard_negatives``.
  """
  scores, rows = np.asarray(scores, np.float32), np.asarray(rows, np.int64)
  if scores.shape != rows.shape or rows.ndim != 2:
    raise ValueError(f"scores and rows must both be [queries, K]; got {scores.shape} and "
                     f"{rows.shape}.")
  _check_args(len(rows), positives, num_negatives, top_k, skip, margin)
  pair_query, pair_row = _pairs(positives, int(corpus_size))
  return _select(scores, rows, pair_query, pair_row, int(corpus_size),
                 num_negatives=int(num_negatives), top_k=int(top_k), skip=int(skip), margin=margin,
                 unranked_scores=lambda q, r: np.full(len(q), -np.inf, np.float32))


def _select(scores, cand, pair_query, pair_row, n, *, num_negatives, top_k, skip, margin,
            unranked_scores) -> MinedNegatives:
  """The negatives of a ranking (``cand`` [Q, K] best first, with ``scores``): known positives
  dropped, the margin filter, ``skip``, then ``num_negatives``; ``unranked_scores(q, r)`` scores the
  known positives the ranking left out (for the margin)."""
  nq = len(cand)
  known = np.isin(np.arange(nq, dtype=np.int64)[:, None] * n + cand, pair_query * n + pair_row)
  before = np.cumsum(~known, axis=1) - ~known  # non-positive candidates ranked above each one
  pool = ~known & (before < top_k)
  dropped_positive = known & (before < top_k)

  dropped_margin = np.zeros_like(pool)
  if margin is not None:
    # The best positive is the highest-ranked one: take its score from the same search, so a copy
    # of it in the corpus scores exactly the same; compute it only where no positive was ranked.
    ranked = known.any(axis=1)
    best = np.where(ranked, np.where(known, scores, -np.inf).max(axis=1), -np.inf)
    unranked = ~ranked[pair_query]
    if unranked.any():
      q, r = pair_query[unranked], pair_row[unranked]
      np.maximum.at(best, q, unranked_scores(q, r))
    threshold = np.where(np.isfinite(best), margin * best, np.inf).astype(np.float32)
    dropped_margin = pool & (scores > threshold[:, None])

  survive = pool & ~dropped_margin
  rank = np.cumsum(survive, axis=1)
  keep = survive & (rank > skip) & (rank <= skip + num_negatives)
  width = max(cand.shape[1], num_negatives)
  pad = ((0, 0), (0, width - cand.shape[1]))
  keep, cand, scores = np.pad(keep, pad), np.pad(cand, pad), np.pad(scores, pad)
  first = np.argsort(~keep, axis=1, kind="stable")[:, :num_negatives]  # kept ones, in rank order
  taken = np.take_along_axis(keep, first, axis=1)
  return MinedNegatives(
      rows=np.where(taken, np.take_along_axis(cand, first, axis=1), PAD).astype(np.int32),
      scores=np.where(taken, np.take_along_axis(scores, first, axis=1), -np.inf).astype(np.float32),
      num_dropped_positives=int(dropped_positive.sum()),
      num_dropped_margin=int(dropped_margin.sum()))
