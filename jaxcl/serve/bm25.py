"""BM25 (Robertson and Zaragoza 2009) through the ``bm25s`` library: the lexical baseline that a
trained retriever is compared with, in the same metrics (``jaxcl.evaluate.ranking``).

  rows, scores = bm25_search(corpus_texts, query_texts, k=100)
  ranking_metrics(rows, relevant)         # {"mrr@10": ..., "ndcg@10": ..., "recall@1": ...}

Texts are split with bm25s' tokenizer (lower-cased, English stop words removed) into runs of 2+
letters or digits (``WORD_TOKENS``: identifiers split at "_", so the query word "file" matches
``get_file``; bm25s' own pattern keeps ``get_file`` whole and scores lower on code) and scored with
Lucene's BM25 (k1 = 1.5, b = 0.75).

  python -m jaxcl.serve.bm25 stdlib_code [--split test] [--data_dir DIR] [--bm25s_tokens]

prints BM25's scores on a prepared text dataset's split, searched against its whole corpus.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

import numpy as np

from jaxcl import extras

BM25S_TOKENS = r"(?u)\b\w\w+\b"   # bm25s' own default: get_file is one token
WORD_TOKENS = r"(?u)[^\W_]{2,}"   # also splits identifiers at "_": get_file is get, file


def bm25_search(corpus: Sequence[str], queries: Sequence[str], *, k: int = 100, k1: float = 1.5,
                b: float = 0.75, method: str = "lucene", stopwords: str | None = "en",
                token_pattern: str = WORD_TOKENS) -> tuple[np.ndarray, np.ndarray]:
  """Indexes ``corpus`` with BM25 and returns the top k documents of each query.

  Args:
    corpus: the document texts.
    queries: the query texts.
    k: results per query (at most the corpus size).
    k1 / b / method: BM25's parameters and variant (bm25s: "lucene", "robertson", "atire",
      "bm25l", "bm25+").
    stopwords: bm25s' stop-word list ("en") or None.
    token_pattern: the regular expression of a token (``BM25S_TOKENS``, ``WORD_TOKENS``).

  Returns:
    (rows int32 [Q, k] corpus rows best first, scores float32 [Q, k]); documents that share no
    term with a query score 0 and follow in corpus order.
  """
  bm25s = extras.require("bm25s", "text", "BM25")
  # bm25s sets its logger to DEBUG; its per-call messages are noise wherever logging is configured.
  logging.getLogger("bm25s").setLevel(logging.WARNING)
  if not corpus:
    raise ValueError("the corpus is empty; BM25 needs documents to index.")
  k = min(int(k), len(corpus))

  def tokenize(texts, **kwargs):
    return bm25s.tokenize(list(texts), lower=True, token_pattern=token_pattern,
                          stopwords=stopwords or [], show_progress=False, **kwargs)

  retriever = bm25s.BM25(k1=k1, b=b, method=method)
  retriever.index(tokenize(corpus), show_progress=False)
  # As strings: bm25s maps them to the corpus vocabulary and drops words it has never seen.
  found = retriever.retrieve(tokenize(queries, return_ids=False), k=k, show_progress=False,
                             n_threads=1)
  return np.asarray(found.documents, np.int32), np.asarray(found.scores, np.float32)


def evaluate_split(cfg, split: str = "test", *, k: int = 100, **bm25_args) -> dict[str, float]:
  """BM25's ranking metrics on ``split`` of a prepared text dataset, against its whole corpus."""
  from jaxcl.data import text  # pylint: disable=g-import-not-at-top
  from jaxcl.evaluate import ranking  # pylint: disable=g-import-not-at-top
  ids, documents = text.load_corpus(cfg)
  evalset = text.load_queries(cfg, split, ids)
  rows, _ = bm25_search(documents, evalset.queries, k=k, **bm25_args)
  return ranking.ranking_metrics(rows, evalset.relevant)


def main(argv: Sequence[str] | None = None) -> None:
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m jaxcl.serve.bm25", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", nargs="?", default="stdlib_code", help="a prepared text dataset")
  parser.add_argument("--split", default="test")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--bm25s_tokens", action="store_true",
                      help="bm25s' own token pattern (keeps identifiers such as get_file whole)")
  args = parser.parse_args(argv)
  cfg = data.default_config(args.name)
  if args.data_dir:
    cfg.data_dir = args.data_dir
  pattern = BM25S_TOKENS if args.bm25s_tokens else WORD_TOKENS
  scores = evaluate_split(cfg, args.split, token_pattern=pattern)
  info = data.text.info(cfg)
  print(json.dumps({"dataset": args.name, "split": args.split, "corpus": info.corpus_size,
                    "token_pattern": pattern, **{m: round(v, 4) for m, v in scores.items()}}))


if __name__ == "__main__":
  main()
