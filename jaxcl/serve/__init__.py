"""What a finished run is used for: an embedding index on disk, exact and approximate search, hard
negatives mined from a ranking, BM25, the ``jaxcl embed`` / ``search`` / ``mine`` commands, and
export of a fine-tuned text tower as a sentence-transformers folder (``export``, ``jaxcl export``).

Public API::

  IndexWriter(out_dir, dim=D, meta={...}) / load_index(dir, mmap_mode=None | "r") -> Index
  Index.search(queries [Q, D], k, *, mesh=None, exact=True) -> (scores, ids, rows)
  mine_hard_negatives(query_emb, corpus_emb, positives, *, num_negatives, top_k=50, skip=0,
                      margin=0.95) -> MinedNegatives      (positive-aware hard-negative mining)
  bm25.bm25_search(corpus_texts, query_texts, *, k=100) -> (rows, scores) [Q, k]   (needs the
      'text' extra; `python -m jaxcl.serve.bm25 stdlib_code` prints BM25's scores)
  TrainedEncoders(kind, workdir, step, ...)   what the commands need from a run
      (``jaxcl.experiment.restore_encoders`` builds it from a checkpoint)
  commands.mine / embed / search / document_texts / load_search_index

Modules: ``index`` (the format, ``Index`` and its search), ``writer``, ``reader``, ``ann`` (usearch's
HNSW graph), ``mining``, ``bm25``, ``encoders``, ``commands``, ``export``. Serving uses trained encoders and the
evaluation layer's exact top-k search; it knows nothing of training.
"""

from jaxcl.serve.encoders import TrainedEncoders, bucket
from jaxcl.serve.index import Index
from jaxcl.serve.mining import MinedNegatives, mine_hard_negatives
from jaxcl.serve.reader import load_index
from jaxcl.serve.writer import IndexWriter

__all__ = ["Index", "IndexWriter", "MinedNegatives", "TrainedEncoders", "bucket", "load_index",
           "mine_hard_negatives"]
