"""A prepared text dataset stored again, under a new name, with new training negatives.

  ids, docs = text.load_corpus(cfg)
  train = text.load_train_queries(cfg, corpus=(ids, docs))
  per_row = [mined_rows[q] for q in train.row_query]       # corpus rows, one list per train row
  text.write_negatives(cfg, per_row, name="stdlib_code_mined")

The new dataset's train split (``cfg.train_split``) is the source's, row for row, with ``negatives``
replaced by the texts of the given corpus rows; its other splits and its corpus are copied
unchanged, every split in the source's stored order (so corpus rows and train rows keep their
numbers). Everything is read and checked before TFDS writes anything, and TFDS writes into an
``incomplete.*`` folder that it deletes on failure and renames only when every split is written, so
a failed write leaves no dataset behind. The mining itself is ``jaxcl.serve.mining``.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from jaxcl.data import sources
from jaxcl.data.text import dataset

PAD = -1  # a corpus row of -1 is no negative (the padding of ``jaxcl.serve.mining``)


def _rows(cfg: ml_collections.ConfigDict, split: str) -> list[dict]:
  """Every stored row of ``split`` as ``text_pairs.pair_row`` dicts of str."""
  from jaxcl.data.builders import text_pairs  # pylint: disable=g-import-not-at-top
  source = sources.data_source(cfg, split)
  s = dataset._str  # pylint: disable=protected-access
  rows = []
  for i in range(len(source)):
    r = source[i]
    rows.append(text_pairs.pair_row(s(r["query_id"]), s(r["query"]), s(r["positive_id"]),
                                    s(r["positive"]), [s(n) for n in r["negatives"]],
                                    int(r["score"])))
  return rows


def _negative_texts(negatives: Sequence[Sequence[int]], corpus: list[dict], split: str
                    ) -> list[list[str]]:
  out = []
  for i, rows in enumerate(negatives):
    rows = np.asarray(rows).reshape(-1)
    if rows.size and not np.issubdtype(rows.dtype, np.integer):
      raise ValueError(f"negatives[{i}] (the corpus rows of {split} row {i}) has dtype "
                       f"{rows.dtype}; give integer corpus rows (-1 for none).")
    bad = rows[(rows < PAD) | (rows >= len(corpus))]
    if bad.size:
      raise ValueError(f"negatives[{i}] (the corpus rows of {split} row {i}) holds {int(bad[0])}, "
                       f"not a row of the corpus (0 .. {len(corpus) - 1}, or -1 for none).")
    out.append([corpus[int(row)]["positive"] for row in rows if row != PAD])
  return out


def write_negatives(cfg: ml_collections.ConfigDict, negatives: Sequence[Sequence[int]], *,
                    name: str, source: str = "mined hard negatives") -> str:
  """Stores ``cfg``'s text dataset again as ``name`` in ``cfg.data_dir``, with new train negatives.

  Args:
    cfg: the data config of a prepared text dataset (it needs a corpus split).
    negatives: one sequence of corpus rows (of ``load_corpus``) per row of the train split
      (``cfg.train_split``), in stored order; -1 entries are skipped. To expand one list per query
      (``load_train_queries``) to one per row: ``[per_query[q] for q in train.row_query]``.
    name: the new dataset's name (lower-case letters, digits and _); it must not exist yet.
    source: what the negatives are, for the dataset's description.

  Returns:
    The prepared folder; ``data.name=name`` (same ``data_dir``) reads it.

  Raises:
    ValueError: ``name`` taken or invalid, not a text dataset, no corpus, or negatives that do not
      match the train split (count or corpus rows).
  """
  from jaxcl.data.builders import text_pairs  # pylint: disable=g-import-not-at-top
  text_pairs.check_name(name)
  sources._check_new_name(name, cfg.data_dir)  # pylint: disable=protected-access
  splits = dataset._splits(cfg)  # pylint: disable=protected-access  # raises if not text
  train = cfg.train_split
  if train not in splits or dataset.CORPUS not in splits:
    raise ValueError(f"{cfg.name} has splits {sorted(splits)}; mined negatives need the "
                     f"data.train_split={train!r} split and a {dataset.CORPUS!r} split.")
  if len(negatives) != splits[train]:
    raise ValueError(f"negatives has {len(negatives)} entries but {cfg.name}'s {train} split has "
                     f"{splits[train]} rows; give one sequence of corpus rows per {train} row "
                     "(expand per-query results with load_train_queries(cfg).row_query).")
  rows = {split: _rows(cfg, split) for split in splits}
  texts = _negative_texts(negatives, rows[dataset.CORPUS], train)
  rows[train] = [{**row, "negatives": negs} for row, negs in zip(rows[train], texts)]
  builder_cls, _ = text_pairs.make_builder_from_rows(name, rows, source=f"{cfg.name} with {source}",
                                                     keep_order=True)
  return sources._build_offline(builder_cls, cfg.data_dir)  # pylint: disable=protected-access
