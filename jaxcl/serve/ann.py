"""Approximate search over an index through the HNSW graph of the optional ``usearch`` package
(``pip install 'jaxcl[ann]'``): built on first use from the index's rows and saved next to its shards
as ``ann-usearch-<metric>.usearch``, restored from there on later loads.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from jaxcl import extras

METRICS = {"dot": "ip", "cosine": "cos"}  # usearch's names of the index's similarities
# Candidates kept while searching the graph: usearch's default (64) measured recall@10 0.986-0.996
# over rebuilds of the 2,000 x 32 test corpus (its threaded build is not deterministic); 256 gave
# 0.998-1.0, at a search cost that stays small next to exact search.
EXPANSION_SEARCH = 256
_BLOCK = 65536  # rows copied from the (memory-mapped) shards at once while building


def hnsw_graph(index: Any, similarity: str) -> Any:
  """The usearch graph of ``index`` (a ``jaxcl.serve.Index``) for ``similarity``: the saved one when
  it matches the index, else built and saved (kept in memory only if the folder is read-only)."""
  hnsw_index = extras.require("usearch.index", "ann", "approximate search (exact=False)").Index
  metric = METRICS[similarity]
  path = os.path.join(index.path, f"ann-usearch-{metric}.usearch")
  graph = None
  if os.path.isfile(path):
    try:
      graph = hnsw_index.restore(path)
    except Exception as e:  # noqa: BLE001 (a broken cache is rebuilt, not fatal)
      warnings.warn(f"{path}: unreadable usearch index ({e}); rebuilding it.", stacklevel=3)
    if graph is not None and (graph.ndim != index.dim or len(graph) != index.count):
      warnings.warn(f"{path}: built for another index ({len(graph)} x {graph.ndim}, this index is "
                    f"{index.count} x {index.dim}); rebuilding it.", stacklevel=3)
      graph = None
  if graph is None:
    graph = hnsw_index(ndim=index.dim, metric=metric, dtype="f32")
    for start in range(0, index.count, _BLOCK):
      block = np.asarray(index.embeddings[start:start + _BLOCK], np.float32)
      graph.add(np.arange(start, start + len(block), dtype=np.uint64), block)
    try:
      partial = f"{path}.partial-{os.getpid()}"
      graph.save(partial)
      os.replace(partial, path)
    except OSError as e:
      warnings.warn(f"could not save the usearch index next to the shards ({e}); it is kept "
                    f"in memory only.", stacklevel=3)
  graph.expansion_search = EXPANSION_SEARCH
  return graph


def hnsw_search(graph: Any, queries: np.ndarray, k: int, count: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """(scores float32 [Q, k], rows int32 [Q, k]) from ``graph``; rows the graph did not find are -1
  with score -inf. ``count``: the index's rows (k is capped there)."""
  k = min(int(k), count)
  if k < 1:
    raise ValueError(f"k={k}: must be >= 1.")
  matches = graph.search(queries, k)
  keys = np.asarray(matches.keys).reshape(len(queries), -1)[:, :k].astype(np.int64)
  distances = np.asarray(matches.distances, np.float32).reshape(len(queries), -1)[:, :k]
  found = np.arange(k)[None, :] < np.asarray(matches.counts).reshape(-1, 1)
  # usearch's "ip" distance is 1 - dot and its "cos" distance is 1 - cosine.
  scores = np.where(found, 1.0 - distances, -np.inf).astype(np.float32)
  rows = np.where(found, keys, -1).astype(np.int32)
  return scores, rows
