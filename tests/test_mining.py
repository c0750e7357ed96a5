"""Mined hard negatives: the algorithm on small made embeddings (known positives never returned, the
NV-Retriever margin filter, skip, ties, padding, argument errors), and a made text dataset stored again
with mined negatives and read back through the training pipeline. Offline; everything in tmp_path."""

import json
import os
import pathlib

import numpy as np
import pytest

from jaxcl import data
from jaxcl.data import text
from jaxcl.data.builders import text_pairs
from jaxcl.evaluate import ranking
from jaxcl.serve import mining


def _unit(*vectors):
  x = np.asarray(vectors, np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(query_emb, corpus_emb, positives, *, num_negatives, top_k, skip, margin):
  """The algorithm of the module doc, one query at a time in NumPy float64."""
  scores = np.asarray(query_emb, np.float64) @ np.asarray(corpus_emb, np.float64).T
  out = []
  for q, s in enumerate(scores):
    order = sorted(range(len(s)), key=lambda r: (-s[r], r))
    pool = [r for r in order if r not in positives[q]][:top_k]
    if margin is not None and positives[q]:
      best = max(s[r] for r in positives[q])
      pool = [r for r in pool if s[r] <= margin * best]
    kept = pool[skip:skip + num_negatives]
    out.append(kept + [-1] * (num_negatives - len(kept)))
  return np.asarray(out)


def test_matches_a_reference_and_never_returns_a_known_positive():
  rng = np.random.default_rng(0)
  queries, corpus = rng.normal(size=(13, 8)), rng.normal(size=(40, 8))
  positives = [set(rng.choice(40, size=rng.integers(0, 6), replace=False).tolist())
               for _ in range(13)]
  for margin, skip in [(None, 0), (None, 2), (0.9, 1)]:
    got = mining.mine_hard_negatives(queries, corpus, positives, num_negatives=4, top_k=9,
                                     skip=skip, margin=margin)
    want = _reference(queries, corpus, positives, num_negatives=4, top_k=9, skip=skip,
                      margin=margin)
    np.testing.assert_array_equal(got.rows, want)
    assert got.rows.dtype == np.int32 and got.rows.shape == got.scores.shape == (13, 4)
    for q, rows in enumerate(got.rows):
      assert not set(rows.tolist()) & positives[q]
      valid = rows >= 0
      np.testing.assert_allclose(got.scores[q][valid], (corpus[rows[valid]] @ queries[q]), rtol=1e-5)
      assert np.all(np.diff(got.scores[q][valid]) <= 0)  # best first
  # Positives ranked above the candidates are counted as dropped, the rest are not candidates.
  assert got.num_dropped_positives > 0


def test_margin_drops_a_near_duplicate_of_the_positive_and_keeps_the_rest():
  query = _unit([1.0, 0.0, 0.0])
  corpus = _unit([1.0, 0.05, 0.0],   # 0: the positive (score 0.9988)
                 [1.0, 0.06, 0.0],   # 1: a near duplicate of it (0.9982 > 0.95 x 0.9988)
                 [1.0, 0.5, 0.0],    # 2: hard (0.894)
                 [1.0, 0.8, 0.0],    # 3: (0.781)
                 [0.0, 1.0, 0.0])    # 4: easy (0)
  plain = mining.mine_hard_negatives(query, corpus, [{0}], num_negatives=3, top_k=4, margin=None)
  assert plain.rows.tolist() == [[1, 2, 3]] and plain.num_dropped_positives == 1
  assert plain.num_dropped_margin == 0
  mined = mining.mine_hard_negatives(query, corpus, [{0}], num_negatives=3, top_k=4, margin=0.95,
                                     similarity="cosine")
  assert mined.rows.tolist() == [[2, 3, 4]] and mined.num_dropped_margin == 1
  # A positive outside the searched top-k still sets the threshold (scored on the host): here it
  # scores 0.6 and both candidates (0.9, 0.8) are above 0.95 x 0.6. Cosine ignores the norms.
  cosines = np.asarray([0.9, 0.8, 0.7, 0.6, 0.55])
  angled = np.stack([cosines, np.sqrt(1 - cosines**2)], 1) * np.asarray([2, 3, 1, 5, 0.5])[:, None]
  far_query = _unit([1.0, 0.0]) * 4
  far = mining.mine_hard_negatives(far_query, angled, [{3}], num_negatives=1, top_k=2,
                                   margin=0.95, similarity="cosine")
  assert far.rows.tolist() == [[-1]] and far.num_dropped_margin == 2
  assert far.num_dropped_positives == 0
  far = mining.mine_hard_negatives(far_query, angled, [{3}], num_negatives=1, top_k=2,
                                   margin=None, similarity="cosine")
  assert far.rows.tolist() == [[0]] and far.num_dropped_margin == 0
  # A query without a positive in the corpus is mined without the filter.
  none = mining.mine_hard_negatives(query, corpus, [()], num_negatives=2, top_k=2)
  assert none.rows.tolist() == [[0, 1]] and none.num_dropped_margin == 0


def test_skip_passes_over_the_hardest_survivors():
  query = _unit([1.0, 0.0])
  corpus = _unit([1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [1.0, 0.4], [1.0, 0.5])
  mined = mining.mine_hard_negatives(query, corpus, [{0}], num_negatives=2, top_k=5, skip=2,
                                     margin=None)
  assert mined.rows.tolist() == [[3, 4]]


def test_deterministic_with_ties_to_the_lower_corpus_row():
  query = np.ones((2, 4), np.float32)
  corpus = np.ones((7, 4), np.float32)  # every document ties
  first = mining.mine_hard_negatives(query, corpus, [{2}, set()], num_negatives=3, top_k=5,
                                     margin=None)
  assert first.rows.tolist() == [[0, 1, 3], [0, 1, 2]]
  again = mining.mine_hard_negatives(query, corpus, [{2}, set()], num_negatives=3, top_k=5,
                                     margin=None)
  np.testing.assert_array_equal(first.rows, again.rows)
  np.testing.assert_array_equal(first.scores, again.scores)


def test_pads_with_minus_one_when_too_few_are_found():
  query = _unit([1.0, 0.0])
  corpus = _unit([1.0, 0.0], [1.0, 0.01], [1.0, 1.0])
  mined = mining.mine_hard_negatives(query, corpus, [[0]], num_negatives=3, top_k=4, margin=0.95)
  assert mined.rows.tolist() == [[2, -1, -1]] and mined.num_dropped_margin == 1
  assert mined.scores[0, 0] > 0 and np.all(np.isneginf(mined.scores[0, 1:]))
  assert mined.for_rows([0, 0]) == [[2], [2]]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_negatives": 0}, r"num_negatives=0: must be an integer >= 1"),
    ({"num_negatives": 3, "top_k": 4, "skip": 2}, r"top_k=4: must be an integer >= num_negatives"),
    ({"skip": -1}, r"skip=-1: must be an integer >= 0"),
    ({"margin": 0.0}, r"margin=0.0: must be in \(0, 1\]"),
    ({"margin": 1.5}, r"margin=1.5: must be in \(0, 1\]"),
    ({"similarity": "l2"}, r"similarity='l2'"),
    ({"query_emb": np.ones((2, 3))}, r"must share D"),
    ({"positives": [{0}]}, r"positives has 1 entries for 2 queries"),
    ({"positives": [{0}, {9}]}, r"positives\[1\] holds 9, not a row of the corpus"),
])
def test_bad_arguments_fail_in_one_line(kwargs, match):
  args = {"query_emb": np.ones((2, 4)), "corpus_emb": np.ones((5, 4)), "positives": [{0}, set()],
          "num_negatives": 2, "top_k": 4, **kwargs}
  with pytest.raises(ValueError, match=match) as err:
    mining.mine_hard_negatives(args.pop("query_emb"), args.pop("corpus_emb"), args.pop("positives"),
                               **args)
  assert "\n" not in str(err.value)


# --------------------------------------------------------------------- a dataset with mined negatives


PAIRS = [  # (query, positive, negatives); "open a file" has two positives (two rows)
    ("open a file", "open(path) opens a file", ["lists are mutable"]),
    ("open a file", "pathlib.Path.open opens a file", []),
    ("what is a tuple", "a tuple is an immutable sequence", []),
    ("sort a list", "sorted(xs) returns a new list", ["dicts keep insertion order"]),
    ("join strings", "', '.join(parts) joins strings", []),
    ("read json", "json.load(f) reads json", ["csv.reader reads rows"]),
    ("make a set", "set(xs) removes duplicates", []),
    ("copy a list", "xs.copy() copies a list", []),
    ("count items", "collections.Counter counts items", []),
    ("reverse a list", "xs[::-1] reverses a list", []),
]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  root = tmp_path_factory.mktemp("mining")
  path = root / "pairs.jsonl"
  with open(path, "w", encoding="utf-8") as f:
    for query, positive, negatives in PAIRS:
      f.write(json.dumps({"query": query, "positive": positive, "negative": negatives}) + "\n")
  data_dir = str(root / "tfds")
  data.prepare_text("made", data_dir=data_dir, pairs=str(path), test_fraction=0.2)
  cfg = data.default_config("made")
  cfg.data_dir = data_dir
  cfg.max_length = 16
  return cfg


def _rows(cfg, split):
  source = data.sources.data_source(cfg, split)
  out = []
  for i in range(len(source)):
    r = source[i]
    out.append({k: ([n.decode() for n in v] if k == "negatives" else
                    v.decode() if isinstance(v, bytes) else int(v)) for k, v in r.items()})
  return out


def test_train_queries_group_rows_and_find_their_positives_in_the_corpus(made):
  ids, docs = text.load_corpus(made)
  train = text.load_train_queries(made, corpus=(ids, docs))
  rows = _rows(made, "train")
  assert len(train.row_query) == len(rows) and train.num_outside_corpus == 0
  for row, q in zip(rows, train.row_query):
    assert train.queries[q] == row["query"] and ids.index(row["positive_id"]) in train.positives[q]
  if "open a file" in train.queries:
    q = train.queries.index("open a file")
    assert {docs[r] for r in train.positives[q]} == {p for qq, p, _ in PAIRS if qq == "open a file"}


def test_train_positives_outside_the_corpus_are_matched_by_text_or_left_out(tmp_path):
  beir = tmp_path / "beir"
  (beir / "qrels").mkdir(parents=True)
  (beir / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in [
      {"_id": "d1", "text": "boil water fast"}, {"_id": "d2", "text": "bicycles have two wheels"}]))
  (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "heat water"}))
  (beir / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
  pairs = tmp_path / "train.jsonl"
  pairs.write_text(json.dumps({"query": "kettle", "positive": "boil water fast"}) + "\n"
                   + json.dumps({"query": "pedals", "positive": "not in the corpus"}) + "\n")
  data_dir = str(tmp_path / "tfds")
  data.prepare_text("mixed", data_dir=data_dir, pairs=str(pairs), beir=str(beir))
  cfg = data.default_config("mixed")
  cfg.data_dir = data_dir
  train = text.load_train_queries(cfg)
  assert train.queries == ["kettle", "pedals"] and train.row_query.tolist() == [0, 1]
  assert train.positives == [frozenset({0}), frozenset()] and train.num_outside_corpus == 1
  with pytest.raises(ValueError, match="not in the corpus"):
    text.load_queries(cfg, "train")  # the evaluation loader stays strict


def test_written_dataset_reads_back_with_the_mined_negatives(made):
  ids, docs = text.load_corpus(made)
  train = text.load_train_queries(made, corpus=(ids, docs))
  rng = np.random.default_rng(1)
  mined = mining.mine_hard_negatives(rng.normal(size=(len(train.queries), 6)),
                                     rng.normal(size=(len(docs), 6)), train.positives,
                                     num_negatives=2, top_k=4, margin=None)
  per_row = mined.for_rows(train.row_query)
  folder = text.write_negatives(made, per_row, name="made_mined")
  assert os.path.isfile(os.path.join(folder, "dataset_info.json"))
  cfg = made.copy_and_resolve_references()
  cfg.name = "made_mined"
  source_rows, new_rows = _rows(made, "train"), _rows(cfg, "train")
  assert len(new_rows) == len(source_rows)
  for old, new, negs in zip(source_rows, new_rows, per_row):
    assert new == {**old, "negatives": [docs[r] for r in negs]} and len(negs) == 2
    assert old["positive"] not in new["negatives"]
  for split in ("test", "corpus"):
    assert _rows(cfg, split) == _rows(made, split)
  assert text.info(cfg) == text.info(made)

  tok = text.tokenizer_for(cfg)
  batch = next(text.pairs_iterator(cfg, tok, seed=0, global_batch_size=4, num_negatives=2))
  assert batch["negative_ids"].shape == (4, 2, cfg.max_length) and batch["negative_valid"].all()
  encoder = text.TextEncoder(tok, cfg.max_length)
  expected = {encoder([row["query"]])[0][0].tobytes(): encoder(row["negatives"])[0]
              for row in new_rows}
  for query_ids, negative_ids in zip(batch["query_ids"], batch["negative_ids"]):
    np.testing.assert_array_equal(negative_ids, expected[np.asarray(query_ids).tobytes()])

  with pytest.raises(ValueError, match=r"--name='made_mined' is already prepared"):
    text.write_negatives(made, per_row, name="made_mined")


def test_bad_negatives_write_nothing(made, monkeypatch):
  rows = len(_rows(made, "train"))
  with pytest.raises(ValueError, match=rf"negatives has 1 entries but made's train split has {rows}"):
    text.write_negatives(made, [[0]], name="broken")
  with pytest.raises(ValueError, match=r"negatives\[1\] \(the corpus rows of train row 1\) holds 99"):
    text.write_negatives(made, [[0]] + [[99]] * (rows - 1), name="broken")
  with pytest.raises(ValueError, match="jaxcl's own datasets"):
    text.write_negatives(made, [[0]] * rows, name="stdlib_code")
  # A failure while TFDS writes (here: the last split) leaves no dataset, and the name stays free.
  real = text_pairs.make_builder_from_rows

  class FailingRows(list):
    def __iter__(self):
      yield from list.__iter__(self)
      raise RuntimeError("disk full")

  def failing(name, splits, **kwargs):
    return real(name, {**splits, "test": FailingRows(splits["test"])}, **kwargs)

  monkeypatch.setattr(text_pairs, "make_builder_from_rows", failing)
  with pytest.raises(RuntimeError, match="disk full"):
    text.write_negatives(made, [[0]] * rows, name="broken")
  monkeypatch.undo()
  left = pathlib.Path(made.data_dir, "broken")
  assert "broken" not in data.sources.prepared_datasets(made.data_dir)
  assert not [p for p in left.rglob("*") if p.is_file()]
  text.write_negatives(made, [[0]] * rows, name="broken")  # the name is still free
  assert "broken" in data.sources.prepared_datasets(made.data_dir)


def test_a_ranking_from_elsewhere_selects_as_the_embedding_search_does():
  rng = np.random.default_rng(3)
  corpus = rng.normal(size=(40, 8)).astype(np.float32)
  queries = corpus[:6] + 0.3 * rng.normal(size=(6, 8)).astype(np.float32)
  positives = [{i} for i in range(6)]  # each query's own document: ranked near the top
  kw = dict(num_negatives=3, top_k=10, skip=1)
  for margin in (None, 0.95):
    want = mining.mine_hard_negatives(queries, corpus, positives, margin=margin, **kw)
    scores, rows = ranking.top_k_search(queries, corpus, 11)
    got = mining.mine_from_ranking(scores, rows, positives, corpus_size=40, margin=margin, **kw)
    np.testing.assert_array_equal(got.rows, want.rows)
    assert got.num_dropped_margin == want.num_dropped_margin
  with pytest.raises(ValueError, match="scores and rows must both be"):
    mining.mine_from_ranking(scores[:, :3], rows, positives, corpus_size=40, **kw)
