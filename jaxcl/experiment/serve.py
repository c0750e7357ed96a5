"""Using a trained run: mine hard negatives with it, embed a corpus or image dataset into an index,
search that index (``jaxcl mine`` / ``jaxcl embed`` / ``jaxcl search``).

  serve.mine(config, workdir, name="stdlib_code_mined", num_negatives=4)   # a new text dataset
  serve.mine(config, None, name="stdlib_code_bm25", by="bm25")              # DPR's BM25 negatives
  serve.embed(config, workdir, out=workdir + "/index")                      # .npy shards + ids
  serve.search(config, workdir, ["remove a directory tree"], k=5)           # [[(id, score)]]

Every function restores the run's newest complete checkpoint (or ``step``'s) with the run's own
config and tokenizer. Embedding goes through ``SearchEvaluator.embed`` (batched, sharded over the
devices); search is exact (``jaxcl.evaluate.index``, sharded over the devices) unless ``exact=False``
asks for usearch's HNSW graph.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcl import data, evaluate, methods
from jaxcl.evaluate import bm25, mining
from jaxcl.evaluate import index as index_lib
from jaxcl.experiment import run

DEFAULT_INDEX = "index"  # the index's folder inside the workdir unless --out says otherwise


def _is_text(config: ml_collections.ConfigDict) -> bool:
  return config.method.name in methods.TEXT_METHODS


def _need_text(config: ml_collections.ConfigDict, what: str) -> None:
  if not _is_text(config):
    raise ValueError(f"{what} needs a text retrieval run (method.name='retrieval'); this run trained "
                     f"{config.method.name!r} on {config.data.name!r}.")


MINERS = ("model", "bm25")


def mine(config: ml_collections.ConfigDict, workdir: str | None, *, name: str,
         num_negatives: int = 4, top_k: int = 50, skip: int = 0, margin: float | None = 0.95,
         step: int | None = None, by: str = "model") -> dict[str, Any]:
  """Mines hard negatives for every training query and stores ``config.data`` again as dataset
  ``name`` with them: ``by="model"`` ranks the corpus with the run's towers (ANCE), ``by="bm25"``
  with BM25 (DPR's negatives; no run needed); both with NV-Retriever's positive-aware filter.

  Returns:
    ``{"path", "queries", "negatives_per_query", "dropped_positives", "dropped_margin", "step"}``.
  """
  _need_text(config, "jaxcl mine")
  if by not in MINERS:
    raise ValueError(f"--by={by!r}: use one of {MINERS}.")
  d = config.data
  corpus = data.text.load_corpus(d)
  train = data.text.load_train_queries(d, corpus=corpus)
  select = dict(num_negatives=num_negatives, top_k=top_k, skip=skip, margin=margin)
  if by == "bm25":
    most = max((len(p) for p in train.positives), default=0)
    rows, scores = bm25.bm25_search(corpus[1], train.queries, k=top_k + most)
    mined = mining.mine_from_ranking(scores, rows, train.positives, corpus_size=len(corpus[0]),
                                     **select)
    step_done, miner = -1, "BM25"
  else:
    if workdir is None and not config.model.get("pretrained"):
      raise ValueError("jaxcl mine --by model needs --workdir (the run whose towers rank the corpus), "
                       "or --config with model.pretrained (a pretrained model ranks it).")
    if workdir is None:  # the pretrained towers, before any jaxcl training
      method, evaluator = run.initial_method(config)
      meta = {}
    else:
      method, evaluator, meta, _ = run.restore_method(config, workdir, step=step)
    tokens = evaluator.tokens
    docs = evaluator.embed(method.encode_documents, tokens.encoder(corpus[1])[0], "mine: corpus")
    queries = evaluator.embed(method.encode_queries, tokens.query_encoder(train.queries)[0],
                              "mine: queries")
    mined = mining.mine_hard_negatives(queries, docs, train.positives, similarity="cosine",
                                       mesh=evaluator.mesh if jax.device_count() > 1 else None,
                                       **select)
    step_done = int(meta.get("step", -1))
    miner = (f"the run in {os.path.abspath(workdir)} at step {step_done}" if workdir else
             f"the pretrained model in {config.model.pretrained}")
  path = data.text.write_negatives(
      d, mined.for_rows(train.row_query), name=name,
      source=f"{d.name} with hard negatives mined by {miner} (top_k={top_k}, skip={skip}, "
             f"margin={margin})")
  found = (mined.rows >= 0).sum(axis=1)
  return {"path": path, "queries": len(train.queries), "negatives_per_query": float(found.mean()),
          "dropped_positives": mined.num_dropped_positives,
          "dropped_margin": mined.num_dropped_margin, "step": step_done}


def _text_items(config: ml_collections.ConfigDict, input_path: str | None
                ) -> tuple[list[str], list[str]]:
  """(ids, texts): an input corpus file (.jsonl/.csv/.tsv/.parquet with id and text), else the
  dataset's corpus."""
  if input_path:
    texts = data.text.read_texts(input_path, kind="corpus")
    return list(texts), list(texts.values())
  return data.text.load_corpus(config.data)


def embed(config: ml_collections.ConfigDict, workdir: str, *, out: str | None = None,
          input_path: str | None = None, step: int | None = None, overwrite: bool = False,
          shard_size: int = 65536) -> index_lib.Index:
  """Writes the embeddings of a corpus (text runs: the document tower; ``input_path`` or the
  dataset's corpus) or of an image dataset's train and eval splits (image runs: the evaluated
  encoder's features, ids ``<split>/<row>``) as an index in ``out`` (default ``workdir/index``)."""
  out = out or os.path.join(workdir, DEFAULT_INDEX)
  method, evaluator, meta, _ = run.restore_method(config, workdir, step=step)
  info = {"workdir": os.path.abspath(workdir), "step": int(meta.get("step", -1)),
          "method": config.method.name, "data": config.data.name, "input": input_path}
  if _is_text(config):
    ids, texts = _text_items(config, input_path)
    vectors = evaluator.embed(method.encode_documents, evaluator.tokens.encoder(texts)[0],
                              "embed: documents")
    info["tower"] = "documents"
  else:
    if input_path:
      raise ValueError("--input is for text runs; an image run embeds its dataset's splits "
                       "(prepare your images with `jaxcl prepare-data --from_folder`).")
    d = config.data
    ids, parts = [], []
    for split in dict.fromkeys((d.train_split, d.eval_split)):
      images, _ = data.load_arrays(d, split)
      ids += [f"{split}/{i}" for i in range(len(images))]
      parts.append(evaluate.extract_features(method, images, batch_size=evaluator.batch_size(),
                                             mesh=evaluator.mesh, progress=f"embed: {split}"))
    vectors = np.concatenate(parts)
    info["tower"] = "features"
  with index_lib.IndexWriter(out, dim=vectors.shape[1], meta=info, similarity="cosine",
                             overwrite=overwrite, shard_size=shard_size) as writer:
    writer.add(vectors, ids)
  return index_lib.load_index(out)


def load_search_index(workdir: str, index_dir: str | None = None) -> index_lib.Index:
  """The run's index (``index_dir``, default ``workdir/index``), with the fix when it is missing."""
  path = index_dir or os.path.join(workdir, DEFAULT_INDEX)
  if not os.path.isfile(os.path.join(path, index_lib.INDEX_FILE)):
    raise ValueError(f"no index in {path}: write one with `jaxcl embed --workdir {workdir}"
                     f"{'' if index_dir is None else ' --out ' + index_dir}` first.")
  return index_lib.load_index(path)


def search(config: ml_collections.ConfigDict, workdir: str, queries: Sequence[str] = (), *,
           images: np.ndarray | None = None, k: int = 10, index_dir: str | None = None,
           exact: bool = True, step: int | None = None,
           found: index_lib.Index | None = None) -> list[list[tuple[str, float]]]:
  """The top ``k`` (id, cosine score) of each text query (text runs, the query tower) or of each
  image [B, H, W, C] uint8 (image runs, the encoder), best first, from the run's index (``found``
  when the caller has loaded it, else ``load_search_index(workdir, index_dir)``)."""
  found = load_search_index(workdir, index_dir) if found is None else found
  method, evaluator, _, _ = run.restore_method(config, workdir, step=step)
  if _is_text(config):
    if not queries:
      raise ValueError("give at least one query: jaxcl search --workdir W \"a query\" (or "
                       "--query_file FILE, one query per line).")
    vectors = evaluator.embed(method.encode_queries, evaluator.tokens.query_encoder(list(queries))[0])
  else:
    if images is None or not len(images):
      raise ValueError("an image run searches by image: jaxcl search --workdir W --image FILE.")
    vectors = evaluate.extract_features(method, images, batch_size=evaluator.batch_size(),
                                        mesh=evaluator.mesh)
  if vectors.shape[1] != found.dim:
    raise ValueError(f"the index in {found.path} holds {found.dim}-d vectors and this run embeds "
                     f"{vectors.shape[1]}-d ones: it was written by another model; run `jaxcl embed "
                     f"--workdir {workdir} --overwrite` again.")
  mesh = evaluator.mesh if exact and jax.device_count() > 1 else None
  scores, ids, _ = found.search(vectors, k, mesh=mesh, exact=exact)
  return [list(zip(row_ids, map(float, row))) for row_ids, row in zip(ids, scores)]


def document_texts(config: ml_collections.ConfigDict, found: index_lib.Index) -> dict[str, str]:
  """``{id: text}`` of the documents an index was written from (its input file, else the dataset's
  corpus), to print search results with; empty for image indexes."""
  if found.meta.get("tower") != "documents":
    return {}
  ids, texts = _text_items(config, found.meta.get("input"))
  return dict(zip(ids, texts))
