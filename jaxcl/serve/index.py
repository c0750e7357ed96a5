"""An on-disk embedding index: written once in shards, read without running code, searched exactly.

An index is a folder::

  index.json            {"format": "jaxcl-index", "version": 1, "dim": D, "count": N,
                         "dtype": "float32" | "float16", "similarity": "dot" | "cosine",
                         "shards": [{"embeddings": "embeddings-00000.npy",
                                     "ids": "ids-00000.txt", "count": n0}, ...],
                         "meta": {...}}      (the writer's meta: model, workdir, tower, ...)
  embeddings-00000.npy  [n0, D] float32 or float16, a plain NumPy .npy array
  ids-00000.txt         n0 ids, UTF-8, one per line ("\\n"-terminated)
  ...
  ann-usearch-cos.usearch   (only after ``search(..., exact=False)``: the usearch HNSW graph)

Modules: ``index`` (this format and the loaded ``Index`` with its search), ``writer``
(``IndexWriter``), ``reader`` (``load_index`` and its checks), ``ann`` (the optional HNSW graph).

Public API (re-exported by ``jaxcl.serve``)::

  with IndexWriter(out_dir, dim=D, meta={...}) as writer:   (shard_size, dtype, similarity, overwrite)
    writer.add(embeddings [n, D], ids)
  index = load_index(out_dir, mmap_mode=None | "r")
  scores [Q, k], ids [[str] * k] * Q, rows [Q, k] = index.search(queries [Q, D], k, mesh=None)

Writes are all-or-nothing. ``IndexWriter`` writes into a hidden sibling folder
(``.<name>.partial-XXXX``) and writes ``index.json`` last; only when ``close()`` (the end of the
``with`` block) has written everything is that folder renamed to ``out_dir``. An exception inside
the ``with`` block deletes the partial folder; a killed process leaves it behind, but ``out_dir``
never appears and the partial folder has no ``index.json``, so nothing half-written loads.

Reading never runs code from the files: ``index.json`` is parsed as JSON, every ``.npy`` header is
checked (dtype, shape) before ``np.load(allow_pickle=False)`` reads the data, and every count and
shape is checked against ``index.json``. Search goes through ``ranking.top_k_search`` (one device,
or the corpus sharded over a mesh's "data" axis; both exact, same result). ``exact=False`` uses an
HNSW graph from the optional ``usearch`` package (``pip install 'jaxcl[ann]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxcl.evaluate import ranking
from jaxcl.serve import ann

FORMAT = "jaxcl-index"
VERSION = 1
INDEX_FILE = "index.json"
DTYPES = ("float32", "float16")
REWRITE = "rewrite the index with IndexWriter (jaxcl embed)"  # the fix for any damaged index


class _Rows:
  """The index's rows as one read-only [N, D] array-like over its shards (slices copy only them)."""

  def __init__(self, shards: Sequence[np.ndarray], dim: int):
    self._shards = list(shards)
    self._starts = np.cumsum([0] + [len(s) for s in self._shards])
    self.shape = (int(self._starts[-1]), dim)
    self.ndim = 2
    self.dtype = self._shards[0].dtype if self._shards else np.dtype(np.float32)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      row = range(self.shape[0])[index]
      shard = int(np.searchsorted(self._starts, row, side="right")) - 1
      return self._shards[shard][row - self._starts[shard]]
    if not isinstance(index, slice):
      raise TypeError("index rows take an int or a slice (np.asarray(index.embeddings) for all).")
    lo, hi, step = index.indices(self.shape[0])
    if step != 1:
      raise TypeError("index rows take a contiguous slice (step 1).")
    pieces = []
    for shard, start in zip(self._shards, self._starts[:-1]):
      a, b = max(lo - start, 0), min(hi - start, len(shard))
      if a < b:
        pieces.append(shard[a:b])
    if len(pieces) == 1:
      return pieces[0]
    return np.concatenate(pieces) if pieces else np.zeros((0, self.shape[1]), self.dtype)

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)


class Index:
  """A loaded index (``load_index``): ids, embeddings (per shard) and what ``index.json`` says.

  Attributes:
    path: the index folder.
    dim / count / dtype / similarity / meta: from ``index.json``.
    ids: the N ids, in row order.
    shards: the per-shard embedding arrays (memory maps with ``mmap_mode="r"``).
    embeddings: all rows as one read-only [N, D] array-like (slice it; ``np.asarray`` copies all).
  """

  def __init__(self, path: str, header: dict[str, Any], shards: Sequence[np.ndarray],
               ids: list[str]):
    self.path = path
    self.dim, self.count = header["dim"], header["count"]
    self.dtype, self.similarity = header["dtype"], header["similarity"]
    self.meta = header["meta"]
    self.shards = tuple(shards)
    self.ids = ids
    self.embeddings = _Rows(self.shards, self.dim)
    self._ann: dict[str, Any] = {}

  def __len__(self) -> int:
    return self.count

  def __repr__(self) -> str:
    return (f"Index({self.path!r}, count={self.count}, dim={self.dim}, dtype={self.dtype}, "
            f"similarity={self.similarity})")

  def search(self, queries: np.ndarray, k: int, *, mesh: jax.sharding.Mesh | None = None,
             exact: bool = True, similarity: str | None = None, query_chunk: int | None = None,
             corpus_chunk: int | None = None, device_rows: int | None = None
             ) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """The k nearest rows of every query.

    Args:
      queries: float [Q, dim] query embeddings (from the matching query tower).
      k: results per query (at most ``count``).
      mesh: exact search with the corpus sharded over this mesh's "data" axis (same result as
        without); None: one device.
      exact: False for approximate search through a usearch HNSW graph, built on first use and
        saved next to the shards (``pip install 'jaxcl[ann]'``).
      similarity: "dot" or "cosine"; default: the index's own.
      query_chunk / corpus_chunk / device_rows: memory bounds of exact search (``top_k_search``).

    Returns:
      (scores float32 [Q, k], ids: Q lists of k ids, rows int32 [Q, k]), best first; ties go to
      the lower row. Approximate search marks missing results (if the graph finds fewer than k) with
      row -1 and score -inf and leaves them out of the id lists.
    """
    similarity = similarity or self.similarity
    if similarity not in ranking.SIMILARITIES:
      raise ValueError(f"similarity={similarity!r}: use one of {ranking.SIMILARITIES}.")
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != self.dim:
      raise ValueError(f"queries must be [Q, dim={self.dim}] (the index's width); got "
                       f"{queries.shape}.")
    if exact:
      scores, rows = ranking.top_k_search(queries, self.embeddings, k, similarity=similarity,
                                          query_chunk=query_chunk, corpus_chunk=corpus_chunk,
                                          mesh=mesh, device_rows=device_rows)
    else:
      if mesh is not None:
        raise ValueError("mesh is for exact search: pass exact=True, or mesh=None for usearch.")
      if similarity not in self._ann:
        self._ann[similarity] = ann.hnsw_graph(self, similarity)
      scores, rows = ann.hnsw_search(self._ann[similarity], queries, k, self.count)
    ids = [[self.ids[r] for r in row if r >= 0] for row in rows.tolist()]
    return scores, ids, rows
