"""Text runs (``data_kind == "text"``, e.g. ``method.name='retrieval'``): the tokenizer, the stream of
tokenized pairs, and search evaluation.

``prepare`` builds a text run from ``tokenizer(config, workdir)``, ``SearchEvaluator`` (``monitor``
and ``final``, as ``tasks.image.ImageEvaluator`` for images) and ``pairs_stream``
(``iterator(start_state)``). The tokenizer is ``data.tokenizer`` when set, else a BPE vocabulary trained on the training split and
saved as ``workdir/tokenizer.json`` (a resumed run, ``jaxcl eval``, ``jaxcl search`` reuse it).

Evaluation is search, as BEIR / MS MARCO measure it: every query of the split against the whole
corpus (exact top-100 by cosine similarity), MRR@10, NDCG@10 and Recall@1/10/100 from the qrels, next
to BM25 (``bm25s``) and the random-init towers in the same table. The in-training monitor
(``eval.knn_every``) scores the validation queries when the dataset has them, so the test queries
are looked at once, at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxcl import data, evaluate, extras, models
from jaxcl.evaluate import ranking
from jaxcl.experiment import parts
from jaxcl.experiment.tasks.base import EvaluatorBase
from jaxcl.serve import bm25
from jaxcl.train import TrainSetup

TOP_K = 100  # documents ranked per query (Recall@100 needs them)
COLUMNS = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "recall@1": "R@1", "recall@10": "R@10",
           "recall@100": "R@100"}


def prepare(config: ml_collections.ConfigDict, workdir: str | None, mesh_: jax.sharding.Mesh):
  """(setup, evaluator, ``iterator(start_state)``) of a text run (module doc)."""
  tokens = tokenizer(config, workdir)
  setup = parts.build_setup(config, mesh_, vocab_size=tokens.vocab_size, pad_id=tokens.pad_id)
  return setup, SearchEvaluator(config, setup, tokens), pairs_stream(config, tokens)


def pairs_stream(config: ml_collections.ConfigDict, tokens: "Tokens"):
  """``iterator(start_state)``: this process's slice of the tokenized pair batches, resumable."""
  def iterator(start_state: Any = None):
    it = data.text.pairs_iterator(
        config.data, tokens.tokenizer, seed=config.seed, global_batch_size=config.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_negatives=config.method.num_negatives)
    if start_state is not None:
      it.set_state(start_state)
    return it
  return iterator


@dataclasses.dataclass(frozen=True)
class Tokens:
  """The run's tokenizer and its fixed-length encoders (``data.max_length`` tokens per document,
  ``data.query_max_length`` per query when set)."""

  tokenizer: Any
  encoder: data.text.TextEncoder
  query_encoder: data.text.TextEncoder

  @property
  def vocab_size(self) -> int:
    return self.encoder.vocab_size

  @property
  def pad_id(self) -> int:
    return self.encoder.pad_id


def tokenizer(config: ml_collections.ConfigDict, workdir: str | None) -> Tokens:
  """The run's tokenizer: ``data.tokenizer``; else ``workdir/tokenizer.json``; else, for a run that
  starts from another one's weights (``train.init_checkpoint``), that run's tokenizer.json (its token
  ids are what the weights mean); else one trained on the training split and saved in the workdir by
  process 0. A pretrained tower (``model.pretrained``) reads its folder's tokenizer.json: its token
  ids are what the weights mean."""
  extras.check("text", f"method {config.method.name!r} on text (its tokenizer)")
  if config.model.get("pretrained"):
    folder = models.pretrained.read_folder(config.model.pretrained)
    tok = data.text.load_tokenizer(folder.tokenizer_file)
    top = max(tok.get_vocab(with_added_tokens=True).values(), default=0)
    if top >= folder.config["vocab_size"]:  # an id past the table would be clamped, silently wrong
      raise ValueError(f"{folder.tokenizer_file} has token id {top} but config.json's vocab_size is "
                       f"{folder.config['vocab_size']}; the tokenizer does not belong to these weights.")
    if workdir is not None and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      data.text.save_tokenizer(tok, os.path.join(workdir, data.text.dataset.TOKENIZER_FILE))
    return _tokens(config, tok)
  init = config.train.get("init_checkpoint")
  if init and not config.data.get("tokenizer") and not (
      workdir and os.path.isfile(os.path.join(workdir, data.text.dataset.TOKENIZER_FILE))):
    parent = os.path.join(os.path.dirname(os.path.abspath(init)), data.text.dataset.TOKENIZER_FILE)
    if not os.path.isfile(parent):
      raise ValueError(f"train.init_checkpoint={init!r}: no tokenizer.json next to it ({parent}); set "
                       "data.tokenizer to the tokenizer those weights were trained with.")
    tok = data.text.load_tokenizer(parent)
    if workdir is not None and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      data.text.save_tokenizer(tok, os.path.join(workdir, data.text.dataset.TOKENIZER_FILE))
    return _tokens(config, tok)
  save_in = None
  if workdir is not None and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    save_in = workdir
  elif workdir is not None and os.path.isfile(os.path.join(workdir, data.text.dataset.TOKENIZER_FILE)):
    save_in = workdir  # read, not written
  return _tokens(config, data.text.tokenizer_for(config.data, save_in))


def _tokens(config: ml_collections.ConfigDict, tok) -> Tokens:
  docs = data.text.TextEncoder(tok, config.data.max_length)
  return Tokens(tok, docs, data.text.query_encoder(config.data, tok) or docs)


@dataclasses.dataclass(frozen=True)
class SearchSet:
  """The corpus and one split's queries, tokenized."""

  corpus_ids: list[str]
  corpus_texts: list[str]
  corpus_tokens: np.ndarray   # int32 [N, L]
  split: str
  queries: list[str]
  query_tokens: np.ndarray    # int32 [Q, L]
  relevant: list[dict[int, int]]


class SearchEvaluator(EvaluatorBase):
  """Ranking metrics of the trained towers, the random-init towers and BM25 (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, setup: TrainSetup, tokens: Tokens):
    super().__init__(config, setup)
    self.tokens = tokens
    self._sets: dict[str, SearchSet] = {}

  def search_set(self, split: str) -> SearchSet:
    """The corpus and ``split``'s queries (at most ``eval.max_test_examples`` of them when > 0)."""
    if split not in self._sets:
      d = self.config.data
      ids, texts = data.text.load_corpus(d)
      queries = data.text.load_queries(d, split, ids)
      limit = self.config.eval.max_test_examples or len(queries.queries)
      kept = queries.queries[:limit]
      self._sets[split] = SearchSet(ids, texts, self.tokens.encoder(texts)[0], split, kept,
                                    self.tokens.query_encoder(kept)[0], queries.relevant[:limit])
    return self._sets[split]

  def _monitor_split(self) -> str:
    return "validation" if data.text.info(self.config.data).num_validation else \
        self.config.data.eval_split

  def embed(self, fn, tokens: np.ndarray, progress: str | None = None) -> np.ndarray:
    """``fn`` (a tower's ``encode_*``) over token ids [N, L], batched and sharded over the mesh."""
    return evaluate.extract_features(fn, tokens, batch_size=self.batch_size(), mesh=self.mesh,
                                     pixels=False, progress=progress)

  def rank(self, method: nnx.Module, split: SearchSet, name: str | None = None,
           dims: tuple[int, ...] = (),
           timings: dict[str, float] | None = None) -> np.ndarray | dict[int, np.ndarray]:
    """Corpus rows [Q, TOP_K] of each query, best first, by cosine similarity of the towers; with
    ``dims``, ``{d: rows}`` ranked by the first d dimensions of the same embeddings (Matryoshka).
    With ``timings``, encoding the corpus, the queries and the search are timed phases of ``name``."""
    bar = (lambda what: f"{name}: {what}") if name and self._is_main else (lambda what: None)
    phase = self._clock(timings, name or "")
    docs = phase("encode corpus",
                 lambda: self.embed(method.encode_documents, split.corpus_tokens, bar("corpus")))
    queries = phase("encode queries",
                    lambda: self.embed(method.encode_queries, split.query_tokens, bar("queries")))
    if dims:  # cosine renormalises each prefix
      return phase("search", lambda: {
          d: ranking.top_k_search(queries[:, :d], docs[:, :d], TOP_K, similarity="cosine")[1]
          for d in dims})
    return phase("search", lambda: ranking.top_k_search(queries, docs, TOP_K, similarity="cosine")[1])

  def scores(self, method: nnx.Module, split: SearchSet, name: str | None = None,
             timings: dict[str, float] | None = None) -> dict:
    """Ranking metrics; a Matryoshka-trained method's also at each prefix (``"dims": {d: ...}``)."""
    dims = tuple(getattr(method, "matryoshka_dims", ()) or ())
    if not dims:
      return _metrics(self.rank(method, split, name, timings=timings), split)
    full = method.out_dim
    rows = self.rank(method, split, name, dims=tuple(dict.fromkeys((full,) + dims)), timings=timings)
    return dict(_metrics(rows[full], split),
                dims={d: _metrics(rows[d], split) for d in sorted(dims, reverse=True)})

  def monitor(self, method: nnx.Module, probe: Any = None) -> dict[str, float]:
    """NDCG@10 and MRR@10 of the monitor split (validation when the dataset has it)."""
    del probe
    split = self.search_set(self._monitor_split())
    got = self.scores(method, split)
    return {f"{split.split}_ndcg@10": got["ndcg@10"], f"{split.split}_mrr@10": got["mrr@10"]}

  def final(self, method: nnx.Module, *, workdir: str, is_main: bool, probe: Any = None) -> dict:
    """The final table: trained towers, random-init towers, BM25 on ``data.eval_split``."""
    del probe
    e = self.config.eval
    if not e.final:
      return {}
    timings = self._begin(is_main)
    split = self._timed(timings, "load and tokenize corpus and queries", self.search_set,
                        self.config.data.eval_split)
    name = f"{self.config.method.name} (trained)"
    result = self.scores(method, split, "trained", timings)
    rows = {name: result}
    for d, got in result.get("dims", {}).items():
      rows[f"{self.config.method.name} (trained, first {d} dims)"] = got
    result = dict(result)
    if e.baselines:
      if self.config.model.get("pretrained"):
        start, label = "zero_shot", "pretrained, before fine-tuning (zero-shot)"
      else:
        start, label = "random_init", "random init (same towers)"
      fresh = self._fresh(timings, start.replace("_", " "))  # the towers the run started from
      result[start] = self.scores(fresh, split, start.replace("_", " "), timings)
      result["bm25"] = self._timed(timings, "bm25/index and search", _bm25_scores, split)
      rows[label] = result[start]
      for d, got in result[start].get("dims", {}).items():
        rows[f"{label}, first {d} dims"] = got
      rows["BM25 (bm25s, k1=1.5, b=0.75)"] = result["bm25"]
    table = evaluate.format_table({k: {c: v[c] for c in COLUMNS} for k, v in rows.items()},
                                  column_titles=COLUMNS)
    protocol = {"split": split.split, "queries": len(split.queries),
                "documents": len(split.corpus_ids), "top_k": TOP_K, "similarity": "cosine",
                "bm25": {"library": "bm25s", "k1": 1.5, "b": 0.75} if e.baselines else None}
    return self._finish(result, table, timings, workdir=workdir, protocol=protocol,
                        what=f"{self.config.data.name}: {len(split.queries)} {split.split} queries "
                             f"against {len(split.corpus_ids)} documents")


def _metrics(rows: np.ndarray, split: SearchSet) -> dict[str, float]:
  got = ranking.ranking_metrics(rows, split.relevant)
  return {k: float(v) for k, v in got.items() if k in COLUMNS}


@functools.lru_cache(maxsize=4)
def _bm25_rows(corpus: tuple[str, ...], queries: tuple[str, ...]) -> np.ndarray:
  return bm25.bm25_search(corpus, queries, k=TOP_K)[0]


def _bm25_scores(split: SearchSet) -> dict[str, float]:
  return _metrics(_bm25_rows(tuple(split.corpus_texts), tuple(split.queries)), split)
