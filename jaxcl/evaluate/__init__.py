"""Evaluation of a representation: feature extraction, kNN, linear probe, raw-pixel baseline, tables.

Public API::

  extract_features(features_fn, images, *, batch_size=256, mesh=None) -> np.ndarray [N, F]
  knn_accuracy(train_feats, train_labels, test_feats, test_labels, *, k=200, temperature=0.1,
               num_classes=None, batch_size=None) -> float
  knn_predict(...same args...) -> np.ndarray[int]            (per-test-row predicted class)
  linear_probe(train_feats, train_labels, test_feats, test_labels, *, l2=None, ...) -> float
  fit_linear_probe(train_feats, train_labels, *, l2=None, ...) -> LinearProbe
  evaluate_features(train_feats, train_labels, test_feats, test_labels, *, knn_k=200,
                    knn_temperature=0.1, linear=True, ...) -> {"knn": float, "linear": float}
  evaluate_representation(features_fn, (train_images, train_labels), (test_images, test_labels), *,
                          knn_k=200, knn_temperature=0.1, linear=True, batch_size=256, mesh=None)
      -> {"knn": float, "linear": float}        (omit "linear" with linear=False: the in-training monitor)
  raw_pixel_baseline((train_images, train_labels), (test_images, test_labels), ...) -> same dict
  format_table({"raw pixels": {"knn": .969, "linear": .970}, "random init": {...}, ...}) -> str
  retrieval_scores(features, labels, *, ks=(1, 2, 4, 8), distance="cosine")
      -> {"recall@1": ..., "r_precision": ..., "map@r": ...}   (metric learning, every item a query)
  ranking_metrics(ranking [Q, K], relevant [{corpus row: grade}]) -> {"mrr@10", "ndcg@10",
      "recall@1", "recall@10", "recall@100", "num_queries"}         (text retrieval, trec_eval's)
  top_k_search(queries [Q, D], corpus [N, D], k, *, similarity="dot") -> (scores, rows) [Q, k]

``features_fn`` is either a callable ``float images [B, H, W, C] in [0, 1] -> [B, F]`` (a pure
function; it is jitted here) or an ``nnx.Module`` / its bound method such as ``method.features``
(split into graph and state so the weights are jit arguments, not baked-in constants). Accuracies are
fractions in [0, 1]; ``format_table`` prints them as percentages. Nothing here knows the training loop.

Modules: ``extract`` (frozen features over a mesh), ``knn``, ``linear`` (the probe), ``protocol``
(the scores of a representation and their table), ``retrieval`` (Recall@K, R-precision, MAP@R),
``ranking`` (MRR, NDCG, Recall@K of queries against a corpus; exact top-k search). The on-disk index,
mining and BM25 live in ``jaxcl.serve``.
"""

from jaxcl.evaluate.extract import extract_features
from jaxcl.evaluate.knn import knn_accuracy, knn_predict
from jaxcl.evaluate.linear import DEFAULT_L2_GRID, LinearProbe, fit_linear_probe, linear_probe
from jaxcl.evaluate.protocol import (evaluate_features, evaluate_representation, format_table,
                                     raw_pixel_baseline)
from jaxcl.evaluate.ranking import ranking_from_scores, ranking_metrics, top_k_search
from jaxcl.evaluate.retrieval import retrieval_scores

__all__ = [
    "DEFAULT_L2_GRID", "LinearProbe", "evaluate_features", "evaluate_representation",
    "extract_features", "fit_linear_probe", "format_table", "knn_accuracy", "knn_predict",
    "linear_probe", "ranking_from_scores", "ranking_metrics", "raw_pixel_baseline", "retrieval_scores",
    "top_k_search",
]
