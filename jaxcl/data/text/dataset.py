"""Reading a prepared text dataset (``stdlib_code`` or a user's ``prepare-data --from_pairs``).

  cfg = jaxcl.data.default_config("stdlib_code")
  text.info(cfg)                              # TextInfo(num_train=3504, ..., corpus_size=4161)
  ids, docs = text.load_corpus(cfg)           # every document, in stored order
  evalset = text.load_queries(cfg, "test")    # queries and their qrels as corpus rows
  train = text.load_train_queries(cfg)        # training queries, their positives' corpus rows
  tok = text.tokenizer_for(cfg, workdir)      # data.tokenizer, else trained on train and saved
  it = text.pairs_iterator(cfg, tok, seed=0, global_batch_size=64)   # Grain, tokenized batches

The features and splits are those of ``jaxcl.data.builders.text_pairs``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grain
import ml_collections
import numpy as np

from jaxcl.data import pipeline, sources
from jaxcl.data.text import tokenizer as tokenization

if TYPE_CHECKING:
  import tokenizers

CORPUS = "corpus"  # the corpus split's name (also ``builders.text_pairs.CORPUS``)
TOKENIZER_FILE = "tokenizer.json"
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TextInfo:
  """Split sizes of a text dataset: pairs per split (0 where absent) and the corpus size."""

  num_train: int
  num_validation: int
  num_test: int
  corpus_size: int


@dataclasses.dataclass(frozen=True)
class EvalQueries:
  """The queries of one split and their relevance judgements.

  Attributes:
    query_ids / queries: one entry per distinct query, in stored order.
    relevant: per query, ``{corpus row: grade > 0}`` (rows of ``load_corpus``).
  """

  query_ids: list[str]
  queries: list[str]
  relevant: list[dict[int, int]]


@dataclasses.dataclass(frozen=True)
class TrainQueries:
  """The distinct queries of a training split and the corpus rows that are known positives of each
  (what hard-negative mining must never return).

  Attributes:
    query_ids / queries: one entry per distinct query, in stored order.
    positives: per query, the corpus rows (of ``load_corpus``) of its positives: by positive_id, and
      every document whose text equals a positive's text (a training text given without an id, or
      a duplicate document), over every row of the query, and of every query with the same text.
      Empty where no positive is in the corpus.
    row_query: int [rows of the split]: the query of each stored row (to expand per-query results
      to per-row ones: ``[per_query[q] for q in row_query]``).
    num_outside_corpus: rows whose positive is not in the corpus, by id or by text.
  """

  query_ids: list[str]
  queries: list[str]
  positives: list[frozenset[int]]
  row_query: np.ndarray
  num_outside_corpus: int


def _str(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def is_text_dataset(cfg: ml_collections.ConfigDict) -> bool:
  """Whether ``cfg.name`` is a prepared (or embedded) text dataset."""
  if cfg.name in sources.EMBEDDED:
    return cfg.name == "stdlib_code"
  try:
    features = sources.builder(cfg).info.features
  except (ValueError, OSError):
    if not os.path.isdir(cfg.data_dir):
      raise  # "data.data_dir ... does not exist" is the answer, not "not a text dataset"
    return False
  return "query" in features and "positive" in features


def _source(cfg: ml_collections.ConfigDict, split: str, field: str = "split"):
  return sources.data_source(cfg, split, field=field)


def _splits(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  b = sources.builder(cfg)
  if "query" not in b.info.features:
    raise ValueError(f"{cfg.name} is not a text dataset (features: {sorted(b.info.features)}); "
                     "prepare one with `jaxcl prepare-data --from_pairs FILE --name NAME`.")
  return {name: split.num_examples for name, split in b.info.splits.items()}


def info(cfg: ml_collections.ConfigDict) -> TextInfo:
  """The pairs per split and the corpus size (prepares ``stdlib_code`` on first use)."""
  sizes = _splits(cfg)
  return TextInfo(num_train=sizes.get("train", 0), num_validation=sizes.get("validation", 0),
                  num_test=sizes.get("test", 0), corpus_size=sizes.get(CORPUS, 0))


_READ_BLOCK = 4096  # records decoded per batched read (``__getitems__``: about 2x per-record reads)


def _read_rows(source, rows) -> list[dict]:
  rows = list(rows)
  return [r for start in range(0, len(rows), _READ_BLOCK)
          for r in source.__getitems__(rows[start:start + _READ_BLOCK])]


def load_corpus(cfg: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
  """(ids, texts) of every corpus document, in stored order."""
  source = _source(cfg, CORPUS)
  rows = _read_rows(source, range(len(source)))
  return [_str(r["positive_id"]) for r in rows], [_str(r["positive"]) for r in rows]


def corpus_rows(cfg: ml_collections.ConfigDict, rows: Sequence[int]) -> tuple[list[str], list[str]]:
  """(ids, texts) of the corpus documents at ``rows`` (of ``load_corpus``'s order), read alone:
  what printing a few search hits needs from a large corpus."""
  source = _source(cfg, CORPUS)
  bad = [r for r in rows if not 0 <= int(r) < len(source)]
  if bad:
    raise IndexError(f"corpus rows {bad[:5]} are outside {cfg.name}'s corpus of {len(source)}.")
  got = _read_rows(source, [int(r) for r in rows])
  return [_str(r["positive_id"]) for r in got], [_str(r["positive"]) for r in got]


def _group_queries(source, corpus_rows) -> tuple[list[str], list[str], list[dict[int, int]],
                                                  np.ndarray]:
  """The distinct queries of a split's rows (by query id, else text) and their judged corpus rows.

  ``corpus_rows(i, row)`` gives the corpus rows of stored row i's positive (it may raise).

  Returns:
    (query ids, query texts, per query ``{corpus row: score}``, the query of every row).
  """
  order: dict[str, int] = {}
  queries, relevant = [], []
  row_query = np.empty(len(source), np.int64)
  for i in range(len(source)):
    r = source[i]
    query = _str(r["query"])
    query_id = _str(r["query_id"]) or query
    if query_id not in order:
      order[query_id] = len(order)
      queries.append(query)
      relevant.append({})
    row_query[i] = order[query_id]
    for row in corpus_rows(i, r):
      relevant[order[query_id]][row] = int(r["score"])
  return list(order), queries, relevant, row_query


def load_queries(cfg: ml_collections.ConfigDict, split: str,
                 corpus_ids: list[str] | None = None) -> EvalQueries:
  """The distinct queries of ``split`` and their qrels as rows of the corpus.

  Args:
    cfg: the data config.
    split: "validation", "test" (or "train").
    corpus_ids: ``load_corpus(cfg)[0]`` when already loaded.

  Raises:
    ValueError: a positive that is not in the corpus (a pair file's training text), naming it; see
      ``load_train_queries`` for training queries whose positives need not be.
  """
  if corpus_ids is None:
    corpus_ids = load_corpus(cfg)[0]
  row_of = {doc_id: row for row, doc_id in enumerate(corpus_ids)}

  def corpus_rows(i, r):
    doc_id = _str(r["positive_id"])
    if doc_id not in row_of:
      raise ValueError(f"{cfg.name} {split} row {i}: positive {doc_id!r} is not in the corpus, "
                       "so it cannot be evaluated; evaluate on a split whose positives are "
                       "corpus documents (validation or test).")
    return (row_of[doc_id],)

  query_ids, queries, relevant, _ = _group_queries(
      _source(cfg, split, field="data.eval_split"), corpus_rows)
  return EvalQueries(query_ids, queries, relevant)


def load_train_queries(cfg: ml_collections.ConfigDict, split: str | None = None,
                       corpus: tuple[list[str], list[str]] | None = None) -> TrainQueries:
  """The distinct queries of a training split and the corpus rows of their known positives.

  Unlike ``load_queries``, a positive need not be in the corpus (a pair file's training text,
  stored with positive_id ""): it is matched to the corpus by id and by exact text (every document
  with its text), and where neither finds it, left out (counted in ``num_outside_corpus``); such a
  query can still be mined for negatives, with nothing to exclude.

  Args:
    cfg: the data config.
    split: the split (default ``cfg.train_split``).
    corpus: ``load_corpus(cfg)`` when already loaded.
  """
  split = cfg.train_split if split is None else split
  ids, texts = load_corpus(cfg) if corpus is None else corpus
  row_of = {doc_id: row for row, doc_id in enumerate(ids)}
  rows_of_text: dict[str, list[int]] = {}
  for row, doc in enumerate(texts):
    rows_of_text.setdefault(doc, []).append(row)
  outside = 0

  def corpus_rows(i, r):
    del i
    nonlocal outside
    doc_id = _str(r["positive_id"])
    found = set(rows_of_text.get(_str(r["positive"]), ()))
    if doc_id and doc_id in row_of:
      found.add(row_of[doc_id])
    outside += not found
    return sorted(found)

  query_ids, queries, relevant, row_query = _group_queries(
      _source(cfg, split, field="data.train_split"), corpus_rows)
  by_text: dict[str, set[int]] = {}
  for query, judged in zip(queries, relevant):
    by_text.setdefault(query, set()).update(judged)
  return TrainQueries(query_ids, queries, [frozenset(by_text[q]) for q in queries], row_query,
                      outside)


def training_texts(cfg: ml_collections.ConfigDict, split: str = "train"):
  """Every query, positive and negative of ``split``, in stored order (a tokenizer's input); of an
  image-caption dataset (``jaxcl.data.captions``), every caption."""
  source = _source(cfg, split, field="data.train_split")
  for i in range(len(source)):
    r = source[i]
    if "caption" in r:
      yield _str(r["caption"])
      continue
    yield _str(r["query"])
    yield _str(r["positive"])
    yield from (_str(n) for n in r["negatives"])


def tokenizer_for(cfg: ml_collections.ConfigDict, directory: str | None = None
                  ) -> tokenizers.Tokenizer:
  """The run's tokenizer: ``cfg.tokenizer`` (a tokenizer.json) when set; else ``directory``'s
  tokenizer.json (a resumed run); else a BPE vocabulary of ``cfg.vocab_size`` trained on the training
  split and saved there, so the run and its evaluation use the same one."""
  if cfg.get("tokenizer"):
    return tokenization.load_tokenizer(cfg.tokenizer)
  path = os.path.join(directory, TOKENIZER_FILE) if directory else None
  if path and os.path.isfile(path):
    return tokenization.load_tokenizer(path)
  tok = tokenization.train_tokenizer(training_texts(cfg, cfg.train_split),
                                     vocab_size=cfg.get("vocab_size", 8192))
  if path:
    tokenization.save_tokenizer(tok, path)
    _log.info("Trained a %d-token BPE tokenizer on %s/%s; saved as %s.", tok.get_vocab_size(),
              cfg.name, cfg.train_split, path)
  return tok


def query_encoder(cfg: ml_collections.ConfigDict, tok: tokenizers.Tokenizer
                  ) -> tokenization.TextEncoder | None:
  """The queries' encoder when ``cfg.query_max_length`` sets their own length, else None (queries
  take ``cfg.max_length`` like documents)."""
  length = cfg.get("query_max_length") or 0
  return tokenization.TextEncoder(tok, length) if length else None


def pairs_iterator(cfg: ml_collections.ConfigDict, tok: tokenizers.Tokenizer, *, seed: int,
                   global_batch_size: int, process_index: int = 0, process_count: int = 1,
                   num_negatives: int = 0) -> grain.DatasetIterator:
  """An infinite iterator over this process's part of shuffled, tokenized global batches of pairs.

  The same global order and per-process slicing as ``jaxcl.data.train_iterator`` (resumable with
  get_state / set_state); each example is tokenized in the Grain pipeline (``TokenizePairs``) to
  ``cfg.max_length`` tokens (queries to ``cfg.query_max_length`` when set).

  Returns:
    A Grain DatasetIterator of dicts of arrays [L, ...], L = global_batch_size / process_count (keys:
    ``jaxcl.data.text.tokenizer.TokenizePairs``).
  """
  source = _source(cfg, cfg.train_split, field="data.train_split")
  if cfg.shuffle_seed is not None:
    seed = cfg.shuffle_seed
  ds = pipeline.sliced_dataset(source, seed=seed, global_batch_size=global_batch_size,
                               process_index=process_index, process_count=process_count)
  encoder = tokenization.TextEncoder(tok, cfg.max_length)
  ds = ds.map(tokenization.TokenizePairs(encoder, num_negatives=num_negatives,
                                         query_encoder=query_encoder(cfg, tok)))
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  read = grain.ReadOptions(num_threads=cfg.read_threads,
                           prefetch_buffer_size=cfg.prefetch_buffer_size)
  it_ds = ds.to_iter_dataset(read)
  if cfg.num_workers > 0:
    pipeline._ensure_absl_flags_parsed()  # pylint: disable=protected-access
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
  return iter(it_ds)
