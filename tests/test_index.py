"""The on-disk embedding index: atomic writes, checked reads, exact (sharded too) and ANN search."""

import json
import os
import shutil
import sys

import numpy as np
import pytest

from jaxcl.evaluate import ranking
from jaxcl.serve import IndexWriter, load_index


def _write(path, embeddings, *, shard_size=7, ids=None, **kwargs):
  ids = ids if ids is not None else [f"doc-{i}" for i in range(len(embeddings))]
  with IndexWriter(path, dim=embeddings.shape[1], shard_size=shard_size,
                   meta=kwargs.pop("meta", {"model": "test"}), **kwargs) as writer:
    for start in range(0, len(embeddings), 5):
      writer.add(embeddings[start:start + 5], ids[start:start + 5])
  return ids


def _brute_force(queries, corpus, k, similarity):
  """NumPy float64 reference: scores and rows, ties to the lower row."""
  queries, corpus = np.asarray(queries, np.float64), np.asarray(corpus, np.float64)
  if similarity == "cosine":
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
  scores = queries @ corpus.T
  rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, rows, 1), rows


@pytest.mark.parametrize("dtype, mmap_mode", [("float32", None), ("float16", "r")])
def test_round_trip_across_shards(tmp_path, dtype, mmap_mode):
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(27, 6)).astype(np.float32)
  with IndexWriter(tmp_path / "ix", dim=6, shard_size=7, dtype=dtype, similarity="dot",
                   meta={"model": "clip", "workdir": "/runs/a", "tower": "image"}) as writer:
    for lo, hi in ((0, 5), (5, 14), (14, 17), (17, 27)):  # adds that straddle the shard edges
      writer.add(embeddings[lo:hi], [f"id {i} \u00e9" for i in range(lo, hi)])
  header = json.loads((tmp_path / "ix" / "index.json").read_text())
  assert [s["count"] for s in header["shards"]] == [7, 7, 7, 6]
  assert sorted(os.listdir(tmp_path / "ix")) == sorted(
      ["index.json"] + [f"embeddings-{i:05d}.npy" for i in range(4)]
      + [f"ids-{i:05d}.txt" for i in range(4)])
  assert sorted(os.listdir(tmp_path)) == ["ix"]  # no partial folder left behind
  index = load_index(tmp_path / "ix", mmap_mode=mmap_mode)
  assert (index.count, index.dim, index.dtype, index.similarity) == (27, 6, dtype, "dot")
  assert index.meta == {"model": "clip", "workdir": "/runs/a", "tower": "image"}
  assert index.ids == [f"id {i} \u00e9" for i in range(27)]
  assert all(s.dtype == np.dtype(dtype) for s in index.shards)
  assert isinstance(index.shards[0], np.memmap) == (mmap_mode == "r")
  np.testing.assert_array_equal(np.asarray(index.embeddings), embeddings.astype(dtype))
  np.testing.assert_array_equal(index.embeddings[5:16], embeddings[5:16].astype(dtype))


def test_interrupted_write_leaves_nothing_loadable(tmp_path):
  embeddings = np.ones((20, 4), np.float32)
  with (pytest.raises(RuntimeError, match="crash"),
        IndexWriter(tmp_path / "ix", dim=4, shard_size=3, meta={}) as writer):
    writer.add(embeddings, [str(i) for i in range(20)])
    raise RuntimeError("crash")
  assert os.listdir(tmp_path) == []
  with pytest.raises(FileNotFoundError, match="interrupted"):
    load_index(tmp_path / "ix")
  # A killed process never reaches close(): shards exist in the partial folder, but no index.json.
  writer = IndexWriter(tmp_path / "ix", dim=4, shard_size=3, meta={})
  writer.add(embeddings, [str(i) for i in range(20)])
  (partial,) = os.listdir(tmp_path)
  assert partial.startswith(".ix.partial-") and "embeddings-00005.npy" in os.listdir(
      tmp_path / partial)
  assert not (tmp_path / "ix").exists()
  with pytest.raises(FileNotFoundError, match="index.json"):
    load_index(tmp_path / partial)
  writer.abort()
  assert os.listdir(tmp_path) == []


def test_refuses_an_existing_folder_unless_overwrite(tmp_path):
  embeddings = np.eye(3, 4, dtype=np.float32)
  (tmp_path / "ix").mkdir()
  _write(tmp_path / "ix", embeddings)  # an empty folder is fine
  with pytest.raises(FileExistsError, match="overwrite=True"):
    IndexWriter(tmp_path / "ix", dim=4, meta={})
  (tmp_path / "file").write_text("x")
  with pytest.raises(FileExistsError, match="not a folder"):
    IndexWriter(tmp_path / "file", dim=4, meta={}, overwrite=True)
  _write(tmp_path / "ix", 2 * embeddings[:2], ids=["a", "b"], overwrite=True)
  index = load_index(tmp_path / "ix")
  assert index.ids == ["a", "b"] and len(os.listdir(tmp_path / "ix")) == 3
  assert sorted(os.listdir(tmp_path)) == ["file", "ix"]


def test_writer_rejects_bad_input_with_clear_errors(tmp_path):
  with IndexWriter(tmp_path / "ix", dim=3, meta={}, dtype="float16") as writer:
    with pytest.raises(ValueError, match="newline"):
      writer.add(np.zeros((2, 3)), ["ok", "two\nlines"])
    with pytest.raises(ValueError, match="newline"):
      writer.add(np.zeros((1, 3)), ["carriage\rreturn"])
    with pytest.raises(ValueError, match=r"\[n, dim=3\]"):
      writer.add(np.zeros((2, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="sequence of 2 strings"):
      writer.add(np.zeros((2, 3)), ["a"])
    with pytest.raises(ValueError, match="row 1 .*not finite"):
      writer.add(np.array([[0, 0, 0], [0, np.nan, 0]]), ["a", "b"])
    with pytest.raises(ValueError, match="dtype='float32'"):
      writer.add(np.full((1, 3), 1e6), ["big"])
    writer.add(np.zeros((1, 3)), ["fine"])
  with (pytest.raises(ValueError, match="no embeddings were added"),
        IndexWriter(tmp_path / "empty", dim=3, meta={})):
    pass
  with pytest.raises(ValueError, match="JSON-serialisable"):
    IndexWriter(tmp_path / "m", dim=3, meta={"model": object()})
  assert sorted(os.listdir(tmp_path)) == ["ix"]


class _Payload:
  """Unpickling this would create a file: proof that loading ran code."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_hostile_files_are_refused_with_the_file_named(tmp_path):
  good = tmp_path / "good"
  _write(good, np.ones((10, 4), np.float32))  # shards of 7 and 3

  def hostile(name, edit):
    shutil.copytree(good, tmp_path / name)
    edit(tmp_path / name)
    return tmp_path / name

  def save(array):
    return lambda d: np.save(d / "embeddings-00000.npy", array, allow_pickle=True)

  wrong_dtype = hostile("dtype", save(np.ones((7, 4), np.float64)))
  with pytest.raises(ValueError, match=r"embeddings-00000\.npy has dtype float64 .*IndexWriter"):
    load_index(wrong_dtype)
  marker = tmp_path / "pwned"
  pickled = hostile("pickle", save(np.array([_Payload(str(marker))] * 7, dtype=object)))
  for mmap_mode in (None, "r"):
    with pytest.raises(ValueError, match=r"embeddings-00000\.npy holds Python objects"):
      load_index(pickled, mmap_mode=mmap_mode)
  assert not marker.exists()
  short = hostile("shape", save(np.ones((6, 4), np.float32)))
  with pytest.raises(ValueError, match=r"shape \(6, 4\) but index.json says \(7, 4\)"):
    load_index(short)
  extra_id = hostile("ids", lambda d: (d / "ids-00001.txt").write_text("a\nb\nc\nd\n"))
  with pytest.raises(ValueError, match=r"ids-00001\.txt holds 4 ids but index.json says 3"):
    load_index(extra_id)

  def edit_header(change):
    def edit(d):
      header = json.loads((d / "index.json").read_text())
      change(header)
      (d / "index.json").write_text(json.dumps(header))
    return edit

  count = hostile("count", edit_header(lambda h: h.update(count=11)))
  with pytest.raises(ValueError, match="count is 11 but the shards hold 10 rows"):
    load_index(count)
  escape = hostile("escape", edit_header(lambda h: h["shards"][0].update(embeddings="../x.npy")))
  with pytest.raises(ValueError, match=r"shards\[0\]\.embeddings must be a plain file name"):
    load_index(escape)
  truncated = hostile("truncated", lambda d: (d / "embeddings-00001.npy").write_bytes(
      (good / "embeddings-00001.npy").read_bytes()[:-8]))
  for mmap_mode in (None, "r"):
    with pytest.raises(ValueError, match=r"embeddings-00001\.npy: unreadable"):
      load_index(truncated, mmap_mode=mmap_mode)
  missing = hostile("missing", lambda d: os.remove(d / "ids-00001.txt"))
  with pytest.raises(FileNotFoundError, match=r"ids-00001\.txt .*missing"):
    load_index(missing)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_exact_search_equals_numpy_brute_force(tmp_path, similarity):
  rng = np.random.default_rng(1)
  corpus = rng.normal(size=(40, 8)).astype(np.float32)
  corpus[30] = corpus[3]  # a tie: row 3 first
  queries = rng.normal(size=(6, 8)).astype(np.float32)
  queries[0] = corpus[3]
  ids = _write(tmp_path / "ix", corpus, similarity=similarity)
  scores, got_ids, rows = load_index(tmp_path / "ix").search(queries, 12, corpus_chunk=16)
  want_scores, want_rows = _brute_force(queries, corpus, 12, similarity)
  np.testing.assert_array_equal(rows, want_rows)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
  assert got_ids == [[ids[r] for r in row] for row in want_rows]
  assert list(rows[0, :2]) == [3, 30]
  with pytest.raises(ValueError, match=r"\[Q, dim=8\]"):
    load_index(tmp_path / "ix").search(queries[:, :4], 3)


def test_sharded_search_equals_single_device_including_ties(tmp_path, mesh):
  rng = np.random.default_rng(2)
  # Small integers: dot products are exact in float32, so there are many exact ties to break.
  corpus = rng.integers(-2, 3, size=(101, 8)).astype(np.float32)
  queries = rng.integers(-2, 3, size=(11, 8)).astype(np.float32)
  _write(tmp_path / "ix", corpus, shard_size=16, similarity="dot")
  index = load_index(tmp_path / "ix", mmap_mode="r")
  want_scores, want_rows = _brute_force(queries, corpus, 30, "dot")
  single = index.search(queries, 30, corpus_chunk=4)
  # 101 rows over 8 devices: 16 padded rows each in chunks of 4 (k=30 > rows per device); then
  # at most 8 rows per device at once, so the corpus streams through in two slices.
  for device_rows in (None, 8):
    sharded = index.search(queries, 30, mesh=mesh, corpus_chunk=4, device_rows=device_rows)
    np.testing.assert_array_equal(sharded[2], single[2])
    np.testing.assert_array_equal(sharded[0], single[0])
    assert sharded[1] == single[1]
  np.testing.assert_array_equal(single[2], want_rows)
  np.testing.assert_array_equal(single[0], want_scores)
  # Default chunks, float32 random data, cosine: bit-for-bit the single-device result.
  corpus = rng.normal(size=(300, 16)).astype(np.float32)
  queries = rng.normal(size=(9, 16)).astype(np.float32)
  for similarity in ("dot", "cosine"):
    one = ranking.top_k_search(queries, corpus, 10, similarity=similarity)
    many = ranking.top_k_search(queries, corpus, 10, similarity=similarity, mesh=mesh)
    np.testing.assert_array_equal(many[1], one[1])
    np.testing.assert_array_equal(many[0], one[0])
  with pytest.raises(ValueError, match="axis='model' is not an axis"):
    ranking.top_k_search(queries, corpus, 10, mesh=mesh, axis="model")


def test_cosine_and_dot_rank_differently(tmp_path):
  corpus = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, 1.0]], np.float32)
  query = np.array([[1.0, 0.0]], np.float32)
  _write(tmp_path / "dot", corpus, similarity="dot")
  _write(tmp_path / "cos", corpus, similarity="cosine")
  scores, ids, _ = load_index(tmp_path / "dot").search(query, 3)
  assert ids == [["doc-1", "doc-0", "doc-2"]]
  np.testing.assert_allclose(scores, [[10.0, 1.0, 0.0]])
  scores, ids, _ = load_index(tmp_path / "cos").search(query, 3)
  assert ids == [["doc-0", "doc-1", "doc-2"]]
  np.testing.assert_allclose(scores, [[1.0, np.sqrt(0.5), 0.0]], rtol=1e-6, atol=1e-7)
  _, ids, _ = load_index(tmp_path / "cos").search(query, 1, similarity="dot")
  assert ids == [["doc-1"]]


def test_approximate_search_without_usearch_says_how_to_install(tmp_path, monkeypatch):
  _write(tmp_path / "ix", np.eye(3, dtype=np.float32))
  monkeypatch.setitem(sys.modules, "usearch", None)
  monkeypatch.setitem(sys.modules, "usearch.index", None)
  with pytest.raises(ImportError, match=r"pip install 'jaxcl\[ann\]'"):
    load_index(tmp_path / "ix").search(np.eye(3, dtype=np.float32), 1, exact=False)


def test_approximate_search_recall_at_10(tmp_path):
  rng = np.random.default_rng(3)
  corpus = rng.normal(size=(2000, 32)).astype(np.float32)
  queries = rng.normal(size=(50, 32)).astype(np.float32)
  _write(tmp_path / "ix", corpus, shard_size=512)
  index = load_index(tmp_path / "ix")
  _, _, exact = index.search(queries, 10)
  scores, ids, approx = index.search(queries, 10, exact=False)
  recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
  assert recall >= 0.99, recall  # what the manual says
  assert ids == [[f"doc-{r}" for r in row] for row in approx.tolist()]
  cosine = _brute_force(queries, corpus, 2000, "cosine")
  want = np.take_along_axis(cosine[0], np.argsort(cosine[1], axis=1), 1)  # [Q, N] by row
  np.testing.assert_allclose(scores, np.take_along_axis(want, approx, 1), atol=1e-3)
  saved = tmp_path / "ix" / "ann-usearch-cos.usearch"
  assert saved.is_file()
  mtime = saved.stat().st_mtime_ns
  _, _, again = load_index(tmp_path / "ix").search(queries, 10, exact=False)  # loads, not rebuilds
  assert saved.stat().st_mtime_ns == mtime
  np.testing.assert_array_equal(again, approx)
  with pytest.raises(ValueError, match="mesh is for exact search"):
    index.search(queries, 10, exact=False, mesh=object())

