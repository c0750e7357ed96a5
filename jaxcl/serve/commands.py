"""Using a trained run: mine hard negatives with it, embed a corpus or image dataset into an index,
search that index (what ``jaxcl mine`` / ``jaxcl embed`` / ``jaxcl search`` do).

  encoders = experiment.restore_encoders(config, workdir)                   # a run's towers
  commands.mine(config.data, encoders, name="stdlib_code_mined", num_negatives=4)   # a new dataset
  commands.mine(config.data, None, name="stdlib_code_bm25", by="bm25")      # DPR's BM25 negatives
  commands.embed(encoders, config.data, out=workdir + "/index")             # .npy shards + ids
  commands.search(encoders, load_search_index(workdir), ["remove a directory tree"], k=5)

Each function takes the run's encoders (``TrainedEncoders``) and the data section of its config.
Search is exact (``jaxcl.serve.index``, sharded over the encoders' devices) unless ``exact=False``
asks for usearch's HNSW graph.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxcl import data
from jaxcl.serve import bm25, mining, reader
from jaxcl.serve import index as index_lib
from jaxcl.serve import writer as writer_lib
from jaxcl.serve.encoders import TrainedEncoders, bucket

DEFAULT_INDEX = "index"  # the index's folder inside the workdir unless --out says otherwise
MINERS = ("model", "bm25")


def mine(data_config: ml_collections.ConfigDict, encoders: TrainedEncoders | None, *, name: str,
         num_negatives: int = 4, top_k: int = 50, skip: int = 0, margin: float | None = 0.95,
         by: str = "model") -> dict[str, Any]:
  """Mines hard negatives for every training query and stores ``data_config`` again as dataset
  ``name`` with them: ``by="model"`` ranks the corpus with the run's towers (ANCE), ``by="bm25"``
  with BM25 (DPR's negatives; ``encoders`` may be None); both with NV-Retriever's positive-aware
  filter.

  Returns:
    ``{"path", "queries", "negatives_per_query", "dropped_positives", "dropped_margin", "step"}``.
  """
  if by not in MINERS:
    raise ValueError(f"--by={by!r}: use one of {MINERS}.")
  if by == "model" and encoders is None:
    raise ValueError("jaxcl mine --by model needs the towers that rank the corpus: a run's "
                     "(--workdir) or a pretrained model's (--config with model.pretrained).")
  if encoders is not None and encoders.kind != "text":
    raise ValueError(f"jaxcl mine needs a text retrieval run (method.name='retrieval'); this run "
                     f"trained {encoders.method!r} on {encoders.data!r}.")
  d = data_config
  if encoders is None and not data.text.is_text_dataset(d):
    raise ValueError(f"jaxcl mine needs a text dataset; data.name={d.name!r} is not one (prepare "
                     f"pairs with `jaxcl prepare-data --from_pairs FILE --name NAME`).")
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
    docs = encoders.embed_texts(corpus[1], queries=False, progress="mine: corpus")
    queries = encoders.embed_texts(train.queries, queries=True, progress="mine: queries")
    mined = mining.mine_hard_negatives(queries, docs, train.positives, similarity="cosine",
                                       mesh=encoders.search_mesh, **select)
    step_done = encoders.step
    miner = (f"the run in {encoders.workdir} at step {step_done}" if encoders.workdir else
             f"the pretrained model in {encoders.pretrained}")
  path = data.text.write_negatives(
      d, mined.for_rows(train.row_query), name=name,
      source=f"{d.name} with hard negatives mined by {miner} (top_k={top_k}, skip={skip}, "
             f"margin={margin})")
  found = (mined.rows >= 0).sum(axis=1)
  return {"path": path, "queries": len(train.queries), "negatives_per_query": float(found.mean()),
          "dropped_positives": mined.num_dropped_positives,
          "dropped_margin": mined.num_dropped_margin, "step": step_done}


def _text_items(data_config: ml_collections.ConfigDict, input_path: str | None
                ) -> tuple[list[str], list[str]]:
  """(ids, texts): an input corpus file (.jsonl/.csv/.tsv/.parquet with id and text), else the
  dataset's corpus."""
  if input_path:
    texts = data.text.read_texts(input_path, kind="corpus")
    return list(texts), list(texts.values())
  return data.text.load_corpus(data_config)


def embed(encoders: TrainedEncoders, data_config: ml_collections.ConfigDict, *,
          out: str | None = None, input_path: str | None = None, overwrite: bool = False,
          shard_size: int = 65536) -> index_lib.Index:
  """Writes the embeddings of a corpus (text runs: the document tower; ``input_path`` or the
  dataset's corpus) or of an image dataset's train and eval splits (image runs: the evaluated
  encoder's features, ids ``<split>/<row>``) as an index in ``out`` (default ``workdir/index``)."""
  if out is None and encoders.workdir is None:
    raise ValueError("embedding pretrained towers (no run) needs --out: the index's folder.")
  out = out or os.path.join(encoders.workdir, DEFAULT_INDEX)
  info = {"workdir": encoders.workdir, "step": encoders.step, "method": encoders.method,
          "data": encoders.data, "input": input_path}
  if encoders.kind == "text":
    ids, texts = _text_items(data_config, input_path)
    vectors = encoders.embed_texts(texts, queries=False, progress="embed: documents")
    info["tower"] = "documents"
  else:
    if input_path:
      raise ValueError("--input is for text runs; an image run embeds its dataset's splits "
                       "(prepare your images with `jaxcl prepare-data --from_folder`).")
    d = data_config
    ids, parts = [], []
    for split in dict.fromkeys((d.train_split, d.eval_split)):
      images, _ = data.load_arrays(d, split)
      ids += [f"{split}/{i}" for i in range(len(images))]
      parts.append(encoders.encode_images(images, progress=f"embed: {split}"))
    vectors = np.concatenate(parts)
    info["tower"] = "features"
  with writer_lib.IndexWriter(out, dim=vectors.shape[1], meta=info, similarity="cosine",
                              overwrite=overwrite, shard_size=shard_size) as writer:
    writer.add(vectors, ids)
  return reader.load_index(out)


def load_search_index(workdir: str, index_dir: str | None = None) -> index_lib.Index:
  """The run's index (``index_dir``, default ``workdir/index``), memory-mapped (a search reads the
  rows once, not into a second copy), with the fix when it is missing."""
  path = index_dir or os.path.join(workdir, DEFAULT_INDEX)
  if not os.path.isfile(os.path.join(path, index_lib.INDEX_FILE)):
    raise ValueError(f"no index in {path}: write one with `jaxcl embed --workdir {workdir}"
                     f"{'' if index_dir is None else ' --out ' + index_dir}` first.")
  return reader.load_index(path, mmap_mode="r")


def search(encoders: TrainedEncoders, found: index_lib.Index, queries: Sequence[str] = (), *,
           images: np.ndarray | None = None, k: int = 10, exact: bool = True
           ) -> list[list[tuple[str, float]]]:
  """The top ``k`` (id, cosine score) of each text query (text runs, the query tower) or of each
  image [B, H, W, C] uint8 (image runs, the encoder), best first, from the index ``found``."""
  if encoders.kind == "text":
    if not queries:
      raise ValueError("give at least one query: jaxcl search --workdir W \"a query\" (or "
                       "--query_file FILE, one query per line).")
    vectors = encoders.embed_texts(queries, queries=True)
  else:
    if images is None or not len(images):
      raise ValueError("an image run searches by image: jaxcl search --workdir W --image FILE.")
    vectors = encoders.encode_images(images)
  if vectors.shape[1] != found.dim:
    raise ValueError(f"the index in {found.path} holds {found.dim}-d vectors and this run embeds "
                     f"{vectors.shape[1]}-d ones: it was written by another model; run `jaxcl embed "
                     f"--workdir {encoders.workdir} --overwrite` again.")
  mesh = encoders.search_mesh if exact else None
  n = len(vectors)
  if exact:  # padded to a bucket: one compiled search serves every number of queries
    vectors = np.pad(vectors, ((0, bucket(n) - n), (0, 0)))
  scores, ids, _ = found.search(vectors, k, mesh=mesh, exact=exact)
  scores, ids = scores[:n], ids[:n]
  return [list(zip(row_ids, map(float, row))) for row_ids, row in zip(ids, scores)]


def document_texts(data_config: ml_collections.ConfigDict, found: index_lib.Index,
                   ids: Sequence[str] | None = None) -> dict[str, str]:
  """``{id: text}`` of documents an index was written from (its input file, else the dataset's
  corpus), to print search results with; empty for image indexes.

  Args:
    data_config: the run's data section (its corpus).
    found: the index.
    ids: only these documents (the hits to print): read alone from the dataset's corpus, not the
      whole corpus. None: every document.
  """
  if found.meta.get("tower") != "documents":
    return {}
  if ids is None or found.meta.get("input"):
    items = _text_items(data_config, found.meta.get("input"))
    wanted = None if ids is None else set(ids)
    return {i: t for i, t in zip(*items) if wanted is None or i in wanted}
  # The index was written from the dataset's corpus in its stored order: index row = corpus row.
  row_of = {doc_id: row for row, doc_id in enumerate(found.ids)}
  rows = sorted({row_of[i] for i in ids if i in row_of})
  if not rows:
    return {}
  got_ids, texts = data.text.corpus_rows(data_config, rows)
  # A corpus prepared again since the index was written may hold other documents at those rows.
  return {i: t for r, i, t in zip(rows, got_ids, texts) if found.ids[r] == i}
