"""Text-retrieval datasets as TFDS array_record: query/passage pairs, a corpus, and qrels.

Every text dataset (the embedded ``stdlib_code`` and a user's ``jaxcl prepare-data --from_pairs /
--from_beir``) has the same features, so one reader serves them all:

  query_id, query        the query (several rows share a query id when it has several positives)
  positive_id, positive  a corpus document relevant to it ("" id: a training text not in the corpus)
  negatives              texts known not to be relevant (possibly none)
  score                  the relevance grade of the positive (the qrels' score; 1 for plain pairs)

and these splits:

  train / validation / test   one row per (query, relevant document): training pairs and, for
                              evaluation, the queries and their qrels (grades > 0)
  corpus                      one row per document, in positive_id / positive (the query fields
                              are empty): what the queries of every split are searched against

``make_builder`` turns a user's pair file and/or BEIR folder (``jaxcl.data.text.files``) into such a
builder; ``make_builder_from_rows`` stores rows made elsewhere (a prepared dataset with mined
negatives, ``jaxcl.data.text.write_negatives``). Everything is read and checked before TFDS writes anything, and TFDS writes into an
``incomplete.*`` folder that it renames only when every split is written, so a failed preparation
leaves nothing that is read later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from jaxcl.data.builders import local
from jaxcl.data.text import files

CORPUS = "corpus"
PAIR_SPLITS = ("train", "validation", "test")


def features() -> tfds.features.FeaturesDict:
  """The features of every jaxcl text dataset (see the module doc)."""
  text = tfds.features.Text  # stored as UTF-8 bytes; no TensorFlow needed to write or read
  return tfds.features.FeaturesDict({
      "query_id": text(), "query": text(), "positive_id": text(), "positive": text(),
      "negatives": tfds.features.Sequence(text()), "score": tfds.features.Scalar(dtype=np.int32),
  })


def pair_row(query_id: str, query: str, positive_id: str, positive: str,
             negatives: Sequence[str] = (), score: int = 1) -> dict:
  return {"query_id": query_id, "query": query, "positive_id": positive_id, "positive": positive,
          "negatives": list(negatives), "score": int(score)}


def corpus_row(doc_id: str, text: str) -> dict:
  return pair_row("", "", doc_id, text, (), 0)


def _held_out(queries: Iterable[str], fraction: float) -> set[str]:
  """round(fraction * n) of the distinct queries, the same ones on every machine (by SHA-256)."""
  distinct = sorted(set(queries), key=lambda q: (hashlib.sha256(q.encode()).hexdigest(), q))
  return set(distinct[:max(1, round(fraction * len(distinct)))])


def plan(pairs: str | None = None, beir: str | None = None, *, test_fraction: float = 0.2
         ) -> dict[str, list[dict]]:
  """The rows of every split, read and checked whole (``{split: rows}``).

  Args:
    pairs: a pair file (``files.read_pairs``): the training pairs. Without ``beir``, a
      ``test_fraction`` of its distinct queries (chosen by hash, so the same on every machine) is
      held out as the test split, and the corpus is every distinct positive and negative text.
    beir: a BEIR folder (``files.read_beir``): its corpus is the corpus, and qrels/train, dev and
      test.tsv give the train, validation and test rows (with ``pairs``, the train rows come from
      the pair file instead).
    test_fraction: the held-out share of a pair file's queries (without ``beir``).
  """
  if pairs is None and beir is None:
    raise ValueError("a text dataset needs --from_pairs FILE, --from_beir DIR, or both.")
  splits: dict[str, list[dict]] = {}
  if beir is not None:
    data = files.read_beir(beir)
    splits[CORPUS] = [corpus_row(i, t) for i, t in data.corpus.items()]
    for split, qrels in data.qrels.items():
      rows = [pair_row(q, data.queries[q], d, data.corpus[d], (), grade)
              for q, judged in qrels.items() for d, grade in judged.items() if grade > 0]
      if rows and not (split == "train" and pairs is not None):
        splits[split] = rows
  if pairs is not None:
    if not 0 < test_fraction < 1:
      raise ValueError(f"--test_fraction={test_fraction}: must be in (0, 1).")
    read = files.read_pairs(pairs)
    query_ids: dict[str, str] = {}
    doc_ids: dict[str, str] = {}
    for pair in read:
      query_ids.setdefault(pair.query, f"q{len(query_ids)}")
      if beir is None:
        for text in (pair.positive, *pair.negatives):
          doc_ids.setdefault(text, f"d{len(doc_ids)}")
    held_out = set() if beir is not None else _held_out(query_ids, test_fraction)
    if beir is None and len(held_out) == len(query_ids):
      raise ValueError(f"{pairs}: {len(query_ids)} distinct queries leave none for training once "
                       f"{test_fraction:.0%} are held out for testing; add pairs or lower "
                       "--test_fraction.")
    rows = {"train": [], "test": []}
    for pair in read:
      split = "test" if pair.query in held_out else "train"
      rows[split].append(pair_row(query_ids[pair.query], pair.query,
                                  doc_ids.get(pair.positive, ""), pair.positive, pair.negatives))
    splits["train"] = rows["train"]
    if beir is None:
      splits["test"] = rows["test"]
      splits[CORPUS] = [corpus_row(i, t) for t, i in doc_ids.items()]
  return splits


def make_builder(name: str, *, pairs: str | None = None, beir: str | None = None,
                 test_fraction: float = 0.2):
  """A TFDS builder class named ``name`` storing a user's text files; see the module doc.

  Returns:
    (builder class, {split: number of rows}).
  """
  check_name(name)
  rows = plan(pairs, beir, test_fraction=test_fraction)
  return make_builder_from_rows(name, rows,
                                source=", ".join(p for p in (pairs, beir) if p))


def check_name(name: str) -> None:
  """Raises unless ``name`` can name a TFDS dataset of the user's."""
  from jaxcl.data.builders import folder  # pylint: disable=g-import-not-at-top
  if not folder.NAME_PATTERN.fullmatch(name):
    raise ValueError(f"--name={name!r}: use lower-case letters, digits and _ (starting with a letter).")


def make_builder_from_rows(name: str, splits: dict[str, list[dict]], *, source: str,
                           keep_order: bool = False):
  """A TFDS builder class named ``name`` storing rows already made (``pair_row`` / ``corpus_row``).

  Args:
    name: the dataset name (lower-case letters, digits and _).
    splits: ``{split: rows}``, e.g. ``plan``'s, or a prepared dataset's rows with new negatives.
    source: where the rows come from, for the dataset's description and release notes.
    keep_order: store every split in the given order (TFDS otherwise stores rows in the order of
      a hash of their index), e.g. so the rows of a copy are those of its source, row for row.

  Returns:
    (builder class, {split: number of rows}).
  """
  check_name(name)
  rows = dict(splits)

  class TextPairs(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The user's query/passage pairs, corpus and qrels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"From {source}."}
    code_path = None  # no checksums file (TFDS's lookup would need importlib_resources)

    def _info(self) -> tfds.core.DatasetInfo:
      sizes = ", ".join(f"{len(r):,} {s}" for s, r in rows.items())
      return tfds.core.DatasetInfo(builder=self, description=f"Text pairs from {source} ({sizes}).",
                                   features=features(), disable_shuffling=keep_order)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split_rows) for split, split_rows in rows.items()}

    def _generate_examples(self, split_rows):
      yield from enumerate(split_rows)

  TextPairs.name = name
  return TextPairs, {s: len(r) for s, r in rows.items()}
