"""Text retrieval data and evaluation: the readers of pair / corpus / qrels files, the stdlib_code
builder, tokenization, ranking metrics against trec_eval and NumPy, BM25, and `jaxcl prepare-data
--from-pairs` as a user runs it. Offline; everything lives in tmp_path."""

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from jaxcl import data
from jaxcl.data import text
from jaxcl.data.builders import stdlib_code
from jaxcl.data.text import files
from jaxcl.evaluate import ranking
from jaxcl.serve import bm25

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAXCL = [shutil.which("jaxcl")] if shutil.which("jaxcl") else [sys.executable, "-m", "jaxcl"]

PAIRS = [
    files.TextPair("how do I open a file", "Use open(path) to read a file.", ("Lists are mutable.",)),
    files.TextPair("what is a tuple", "A tuple is an immutable sequence.", ()),
    files.TextPair("sort a list", "sorted(xs) returns a new sorted list.",
                   ("Tuples cannot be sorted in place.", "Dicts keep insertion order.")),
]


# ----------------------------------------------------------------------------------- the readers


def _write_pairs(path, pairs, query_key="query"):
  """Writes ``pairs`` as a .jsonl/.csv/.tsv/.parquet file in that format's usual negative columns."""
  ext = os.path.splitext(path)[1]
  if ext == ".jsonl":
    with open(path, "w", encoding="utf-8") as f:
      for p in pairs:  # one negative as a string, several as a list, none absent
        record = {query_key: p.query, "positive": p.positive, "id": 7}
        if p.negatives:
          record["negative"] = p.negatives[0] if len(p.negatives) == 1 else list(p.negatives)
        f.write(json.dumps(record) + "\n")
  elif ext == ".parquet":
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({query_key: [p.query for p in pairs],
                             "positive": [p.positive for p in pairs],
                             "negatives": [list(p.negatives) for p in pairs]}), path)
  else:
    import csv
    width = max(len(p.negatives) for p in pairs)
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f, delimiter="\t" if ext == ".tsv" else ",",
                          quoting=csv.QUOTE_NONE if ext == ".tsv" else csv.QUOTE_MINIMAL)
      writer.writerow([query_key, "positive"] + [f"negative_{i + 1}" for i in range(width)])
      for p in pairs:
        writer.writerow([p.query, p.positive] + list(p.negatives) + [""] * (width - len(p.negatives)))
  return str(path)


@pytest.mark.parametrize("query_key", ["query", "anchor"])
@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_pair_files_in_every_format_and_column_convention(tmp_path, ext, query_key):
  path = _write_pairs(tmp_path / f"pairs{ext}", PAIRS, query_key)
  assert files.read_pairs(path) == PAIRS


def test_csv_quoting_and_a_single_negative_column(tmp_path):
  path = tmp_path / "p.csv"
  path.write_text('query,positive,negative,score\n"a, quoted ""q""","line one\nline two",,1\n'
                  "plain q,plain p,a negative,0\n", encoding="utf-8")
  assert files.read_pairs(str(path)) == [
      files.TextPair('a, quoted "q"', "line one\nline two", ()),
      files.TextPair("plain q", "plain p", ("a negative",))]


def _jsonl(*records):
  return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


_GOOD = {"query": "q", "positive": "p"}
_BAD_PAIR_FILES = {
    "missing-positive": ("p.jsonl", _jsonl(_GOOD, {"query": "q"}), r"p.jsonl:2: no 'positive'"),
    "empty-query": ("p.jsonl", _jsonl({"query": "  ", "positive": "p"}), r"p.jsonl:1: 'query' is empty"),
    "number-not-text": ("p.jsonl", _jsonl({"query": 5, "positive": "p"}),
                        r"p.jsonl:1: 'query' is int 5, not text"),
    "negative-list-of-int": ("p.jsonl", _jsonl({**_GOOD, "negative": ["n", 3]}),
                             r"p.jsonl:1: 'negative' is int 3"),
    "empty-negative": ("p.jsonl", _jsonl({**_GOOD, "negatives": [""]}), r"'negatives' is empty"),
    "invalid-json": ("p.jsonl", _jsonl(_GOOD, '{"query": "q", "positive": '),
                     r"p.jsonl:2: invalid JSON \(Expecting value"),
    "json-array": ("p.jsonl", _jsonl(["q", "p"]), r"p.jsonl:1: a JSON list, not an object"),
    "deep-nesting": ("p.jsonl", "[" * 100_000 + "\n", r"p.jsonl:1: unreadable JSON"),
    "query-and-anchor": ("p.jsonl", _jsonl({**_GOOD, "anchor": "a"}), r"both 'query' and 'anchor'"),
    "text-too-long": ("p.jsonl", _jsonl({"query": "q", "positive": "x" * 100_001}),
                      r"p.jsonl:1: 'positive' has 100,001 characters, more than 100,000"),
    "line-too-long": ("p.jsonl", _jsonl({"query": "q", "positive": "p", "pad": "x" * (1 << 20)}),
                      r"p.jsonl:1: a line longer than 1,048,576 characters"),
    "not-utf8": ("p.jsonl", b'{"query": "caf\xe9", "positive": "p"}\n', r"p.jsonl:1: not UTF-8"),
    "lone-surrogate": ("p.jsonl", '{"query": "a \\ud800 b", "positive": "p"}\n',
                       r"p.jsonl:1: 'query' holds a lone surrogate"),
    "no-records": ("p.jsonl", "\n\n", r"p.jsonl: no pairs"),
    "csv-missing-column": ("p.csv", "anchor,text\na,b\n", r"p.csv:2: no 'positive' \(columns: anchor, text\)"),
    "csv-empty-positive": ("p.csv", "query,positive\na,\n", r"p.csv:2: no 'positive'"),
    "csv-field-count": ("p.csv", "query,positive\na,b,c\n", r"p.csv:2: 3 fields, the header has 2"),
    "unknown-format": ("p.txt", "q\tp\n", r"unknown format '.txt'"),
}


@pytest.mark.parametrize("case", sorted(_BAD_PAIR_FILES))
def test_bad_pair_files_fail_in_one_line_naming_the_place(tmp_path, case):
  name, content, match = _BAD_PAIR_FILES[case]
  path = tmp_path / name
  (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
  with pytest.raises(ValueError, match=match) as err:
    files.read_pairs(str(path))
  assert "\n" not in str(err.value)


def test_bad_parquet_fails_in_one_line(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  path = tmp_path / "p.parquet"
  pq.write_table(pa.table({"query": ["a", "b"], "positive": [1, 2]}), path)
  with pytest.raises(ValueError, match=r"p.parquet row 0: 'positive' is int 1, not text"):
    files.read_pairs(str(path))
  path.write_bytes(b"PAR1 not really")
  with pytest.raises(ValueError, match=r"p.parquet: not a readable Parquet file") as err:
    files.read_pairs(str(path))
  assert "\n" not in str(err.value)


def _beir(root, *, qrels_test="query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\nq2\td1\t0\n"):
  root.mkdir()
  (root / "corpus.jsonl").write_text(_jsonl(
      {"_id": "d1", "title": "Kettles", "text": "boil water fast"},
      {"_id": "d2", "title": "", "text": "tea needs hot water"},
      {"_id": "d3", "text": "bicycles have two wheels"},
      {"_id": 4, "title": "Only a title"}))
  (root / "queries.jsonl").write_text(_jsonl({"_id": "q1", "text": "how to heat water"},
                                             {"_id": "q2", "text": "a vehicle with pedals"}))
  (root / "qrels").mkdir()
  (root / "qrels" / "test.tsv").write_text(qrels_test)
  return str(root)


def test_beir_folder_reader(tmp_path):
  beir = files.read_beir(_beir(tmp_path / "beir"))
  assert beir.corpus == {"d1": "Kettles boil water fast", "d2": "tea needs hot water",
                         "d3": "bicycles have two wheels", "4": "Only a title"}
  assert beir.queries == {"q1": "how to heat water", "q2": "a vehicle with pedals"}
  assert beir.qrels == {"test": {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1, "d1": 0}}}


@pytest.mark.parametrize("qrels, match", [
    ("q1\td9\t1\n", r"test.tsv:1: corpus id 'd9' is not in the corpus"),
    ("q1\td1\t1\nq7\td1\t1\n", r"test.tsv:2: query id 'q7' is not in the queries file"),
    ("q1\td1\t1\nq1\td2\thigh\n", r"test.tsv:2: score 'high' is not an integer"),
    ("q1\td1\t1\nq1\td1\t2\n", r"test.tsv:2: \('q1', 'd1'\) is judged twice"),
    ("q1 d1 1\n", r"test.tsv:1: 1 tab-separated fields"),
])
def test_bad_qrels_fail_in_one_line(tmp_path, qrels, match):
  with pytest.raises(ValueError, match=match) as err:
    files.read_beir(_beir(tmp_path / "beir", qrels_test=qrels))
  assert "\n" not in str(err.value)


def test_corpus_with_a_repeated_id_fails(tmp_path):
  path = tmp_path / "corpus.jsonl"
  path.write_text(_jsonl({"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}))
  with pytest.raises(ValueError, match=r"corpus.jsonl:2: id 'a' appears twice"):
    files.read_texts(str(path))


# ----------------------------------------------------------------------------- the stdlib corpus


@pytest.fixture(scope="module")
def stdlib_cfg(tmp_path_factory):
  cfg = data.default_config("stdlib_code")
  cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
  cfg.max_length = 32
  return cfg


def _rows(cfg, split):
  source = data.sources.data_source(cfg, split)
  return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in source[i].items()}
          for i in range(len(source))]


def test_stdlib_code_is_prepared_on_first_use_and_split_by_package(stdlib_cfg):
  info = text.info(stdlib_cfg)  # not prepared yet: builds it from this Python's stdlib
  assert str(stdlib_code.StdlibCode.VERSION) == data.sources.EMBEDDED_VERSION
  assert min(info.num_train, info.num_validation, info.num_test) > 50
  assert info.num_train + info.num_validation + info.num_test == info.corpus_size > 3000
  splits = {s: _rows(stdlib_cfg, s) for s in ("train", "validation", "test")}
  packages = {s: {r["positive_id"].split(":")[0].split(".")[0] for r in rows}
              for s, rows in splits.items()}
  # Disjoint by top-level package: no test query comes from a package seen in training.
  assert not packages["train"] & packages["test"] and not packages["train"] & packages["validation"]
  assert not packages["validation"] & packages["test"]
  for split, names in packages.items():
    assert {stdlib_code.split_of(p) for p in names} == {split}
  corpus_ids, _ = text.load_corpus(stdlib_cfg)
  assert len(set(corpus_ids)) == len(corpus_ids) == info.corpus_size
  assert sorted(corpus_ids) == sorted(r["positive_id"] for rows in splits.values() for r in rows)
  for rows in splits.values():
    for r in rows:
      assert len(r["query"].split()) >= stdlib_code.MIN_QUERY_WORDS and r["positive"].strip()
      assert r["score"] == 1 and r["negatives"] == []
  # The document is the function's code without its docstring, the def line (and name) kept.
  for r in splits["test"] + splits["validation"]:
    function = ast.parse(r["positive"]).body[0]
    assert isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
    assert ast.get_docstring(function) is None
    assert function.name == r["positive_id"].split(":")[1].split(".")[-1].split("#")[0]
  # Equal query texts share one query id, and then every function with that text is relevant.
  evalset = text.load_queries(stdlib_cfg, "test", corpus_ids)
  assert len(evalset.queries) == len(set(evalset.queries)) == len(evalset.query_ids)
  assert sum(len(r) for r in evalset.relevant) == info.num_test


def test_stdlib_split_is_by_sha256_of_the_package_so_the_same_everywhere():
  # Pinned: these would change if the split used Python's per-process hash() or another digest.
  assert [stdlib_code.split_of(m) for m in ("email.message", "threading", "json.decoder", "difflib",
                                            "asyncio.events", "os")] == [
      "test", "test", "validation", "validation", "train", "train"]


_SOURCE = '''
import functools

def public(a, b=1):
    """Add two numbers and return the sum.

    More text that is not the first sentence.
    """
    # a comment stays
    return a + b

@functools.cache
def decorated(x):
    """Compute the square of x, e.g. for tests."""
    return x * x

def _private(x):
    """This private function is never included."""
    return x

def short(x):
    """Too short."""
    return x

def stub(self):
    """Subclasses must implement this method."""
    raise NotImplementedError

def signature(x):
    """signature(x) -> int: the signature repeated."""
    return 1

class Thing:
    def method(self):
        """Return a string that
        spans lines in the source."""
        s = """
not indented
"""
        return s

    def nested_owner(self):
        """The owner of a nested function here."""
        def inner():
            """Nested functions are not public API."""
            return 1
        return inner

class _Hidden:
    def method(self):
        """Methods of private classes are skipped."""
        return 0

if True:
    def twice():
        """Defined on one platform like this one."""
        return 1
else:
    def twice():
        """Defined on the other platform like that."""
        return 2
'''


def test_functions_in_keeps_code_and_drops_docstrings_and_trivia():
  found = {f.doc_id: f for f in stdlib_code.functions_in(_SOURCE, "pkg.mod")}
  assert sorted(found) == ["pkg.mod:Thing.method", "pkg.mod:Thing.nested_owner", "pkg.mod:decorated",
                           "pkg.mod:public", "pkg.mod:twice", "pkg.mod:twice#2"]
  public = found["pkg.mod:public"]
  assert public.query == "Add two numbers and return the sum."
  assert public.document == "def public(a, b=1):\n    # a comment stays\n    return a + b"
  assert found["pkg.mod:decorated"].query == "Compute the square of x, e.g. for tests."
  assert found["pkg.mod:decorated"].document.startswith("@functools.cache\ndef decorated(x):\n")
  method = found["pkg.mod:Thing.method"]
  assert method.query == "Return a string that spans lines in the source."
  assert method.document.startswith("def method(self):\n    s = ") and "\nnot indented\n" in method.document
  assert "inner" in found["pkg.mod:Thing.nested_owner"].document
  assert {f.package for f in found.values()} == {"pkg"}
  for f in found.values():
    assert ast.get_docstring(ast.parse(f.document).body[0]) is None


def test_extract_is_deterministic_and_never_imports(tmp_path):
  stdlib = sysconfig.get_paths()["stdlib"]
  root = tmp_path / "lib"
  shutil.copytree(os.path.join(stdlib, "json"), root / "json",
                  ignore=shutil.ignore_patterns("__pycache__", "tool.py"))
  for name in ("shlex.py", "textwrap.py"):
    shutil.copy(os.path.join(stdlib, name), root / name)
  (root / "boom.py").write_text('raise SystemExit("imported")\n\ndef run_it(x):\n'
                                '    """Run the given thing and return it."""\n    return x\n')
  (root / "py2.py").write_text('print "python 2"\n')  # not this Python's syntax: skipped
  (root / "test").mkdir()
  (root / "test" / "test_x.py").write_text('def test_it():\n    """Tests are never part of it."""\n    return 1\n')
  first, second = stdlib_code.extract(str(root)), stdlib_code.extract(str(root))
  assert first == second
  ids = [f.doc_id for split in first.values() for f in split]
  assert "boom:run_it" in ids and not any(i.startswith(("test", "py2")) for i in ids)
  assert "json.decoder:JSONDecoder.decode" in ids and "textwrap:dedent" in ids
  assert [f.doc_id for f in first["validation"]][:1] == ["json:dump"]  # json's bucket


# ------------------------------------------------------------------------------- tokenization


_TEXTS = [p.query for p in PAIRS] + [p.positive for p in PAIRS] + ["def get_file(path): return open(path)"] * 3


def test_tokenizer_training_is_deterministic_and_round_trips(tmp_path):
  first = text.train_tokenizer(iter(_TEXTS), vocab_size=200, min_frequency=1)
  for _ in range(3):  # tokenizers' WordPiece trainer differed here about every other time
    assert text.train_tokenizer(iter(_TEXTS), vocab_size=200, min_frequency=1).to_str() == first.to_str()
  path = text.save_tokenizer(first, str(tmp_path / "run" / "tokenizer.json"))
  assert os.listdir(tmp_path / "run") == ["tokenizer.json"]  # no temporary file left behind
  loaded = text.load_tokenizer(path)
  assert loaded.encode("open a file").ids == first.encode("open a file").ids
  tokens = first.encode("def get_file(path)").tokens
  assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "_" in tokens  # identifiers split at _


def test_text_encoder_pads_and_truncates_to_max_length():
  tok = text.train_tokenizer(_TEXTS, vocab_size=200, min_frequency=1)
  encode = text.TextEncoder(tok, max_length=6)
  ids, mask = encode(["open", "how do I open a file to read a file"])
  assert ids.shape == mask.shape == (2, 6) and ids.dtype == mask.dtype == np.int32
  pad, cls, sep = (tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]"))
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0, 0], [1] * 6])
  assert list(ids[0, [0, 2]]) == [cls, sep] and list(ids[0, 3:]) == [pad] * 3
  assert ids[1, 0] == cls and ids[1, -1] == sep  # truncated, the special tokens kept
  # Grain's workers get the transform pickled: it travels as JSON and encodes the same.
  transform = pickle.loads(pickle.dumps(text.TokenizePairs(encode, num_negatives=2)))
  out = transform.map({"query": b"open", "positive": b"a file", "negatives": [b"lists"],
                       "query_id": b"q1", "positive_id": b"d1", "score": 1})
  np.testing.assert_array_equal(out["query_ids"], ids[0])
  assert out["negative_ids"].shape == (2, 6) and list(out["negative_valid"]) == [True, False]
  assert out["negative_mask"][1].sum() == 0 and (out["negative_ids"][1] == pad).all()


def test_users_tokenizer_json_without_a_pad_token_and_bad_files(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers
  tok = Tokenizer(models.WordLevel({"<unk>": 0, "open": 1, "file": 2}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.save(str(tmp_path / "mine.json"))
  ids, mask = text.TextEncoder(text.load_tokenizer(str(tmp_path / "mine.json")), 4)(["open file"])
  np.testing.assert_array_equal(ids, [[1, 2, 0, 0]])
  np.testing.assert_array_equal(mask, [[1, 1, 0, 0]])
  (tmp_path / "bad.json").write_text('{"model": "not a tokenizer"}')
  with pytest.raises(ValueError, match=r"bad.json is not a tokenizer.json \(") as err:
    text.load_tokenizer(str(tmp_path / "bad.json"))
  assert "\n" not in str(err.value)
  with pytest.raises(ValueError, match="is not a file"):
    text.load_tokenizer(str(tmp_path / "missing.json"))


def test_pairs_iterator_tokenizes_in_grain_and_resumes(stdlib_cfg, tmp_path):
  tok = text.tokenizer_for(stdlib_cfg, str(tmp_path))  # trained on the train split and saved
  assert (tmp_path / "tokenizer.json").is_file()
  assert text.tokenizer_for(stdlib_cfg, str(tmp_path)).to_str() == tok.to_str()  # loaded again
  it = text.pairs_iterator(stdlib_cfg, tok, seed=0, global_batch_size=8)
  first = next(it)
  state = it.get_state()
  second = next(it)
  assert first["query_ids"].shape == first["positive_mask"].shape == (8, 32)
  assert first["query_ids"].dtype == np.int32 and first["query_key"].shape == (8,)
  assert (first["query_mask"][:, 0] == 1).all() and (first["query_mask"].sum(1) < 32).any()
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["positive_ids"], second["positive_ids"])
  again = next(text.pairs_iterator(stdlib_cfg, tok, seed=0, global_batch_size=8))
  np.testing.assert_array_equal(again["query_ids"], first["query_ids"])


# ------------------------------------------------------------------------------------ metrics


def _reference_metrics(scores, relevant, k=10, ks=(1, 10, 100)):
  """NumPy from the definitions (module doc of jaxcl.evaluate.ranking), one query at a time."""
  out = {"mrr@10": [], "ndcg@10": [], **{f"recall@{c}": [] for c in ks}}
  for row, rel in zip(scores, relevant):
    rel = {d: g for d, g in rel.items() if g > 0}
    if not rel:
      continue
    order = sorted(range(len(row)), key=lambda d: -row[d])
    ranks = [i + 1 for i, d in enumerate(order[:k]) if d in rel]
    out["mrr@10"].append(1 / ranks[0] if ranks else 0)
    dcg = sum(rel.get(d, 0) / np.log2(i + 2) for i, d in enumerate(order[:k]))
    idcg = sum(g / np.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:k]))
    out["ndcg@10"].append(dcg / idcg)
    for c in ks:
      out[f"recall@{c}"].append(len(set(order[:c]) & set(rel)) / len(rel))
  return {m: float(np.mean(v)) for m, v in out.items()}


def _random_run(rng, queries=40, docs=150):
  scores = rng.permutation(queries * docs).reshape(queries, docs).astype(np.float64)  # no ties
  relevant = []
  for _ in range(queries):
    judged = rng.choice(docs, rng.integers(0, 6), replace=False)
    relevant.append({int(d): int(rng.integers(0, 4)) for d in judged})
  return scores, relevant


def test_ranking_metrics_match_numpy_from_the_definitions():
  scores, relevant = _random_run(np.random.default_rng(0))
  ours = ranking.ranking_metrics(ranking.ranking_from_scores(scores, 100), relevant)
  reference = _reference_metrics(scores, relevant)
  assert ours.pop("num_queries") == sum(any(g > 0 for g in r.values()) for r in relevant)
  assert ours.keys() == reference.keys()
  for name in ours:
    np.testing.assert_allclose(ours[name], reference[name], rtol=1e-12, err_msg=name)


def test_ranking_metrics_match_trec_eval():
  pytrec_eval = pytest.importorskip("pytrec_eval", reason="pip install '.[test]' installs it")
  scores, relevant = _random_run(np.random.default_rng(1))
  ranked = ranking.ranking_from_scores(scores, 100)
  ours = ranking.ranking_metrics(ranked, relevant)
  qrels = {f"q{i}": {f"d{d}": g for d, g in r.items()} for i, r in enumerate(relevant)
           if any(g > 0 for g in r.values())}

  def run(cut):
    return {f"q{i}": {f"d{d}": float(scores[i, d]) for d in row[:cut]} for i, row in enumerate(ranked)}

  full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.1,10,100"}).evaluate(run(100))
  # trec_eval's recip_rank has no cutoff: MRR@10 is recip_rank of the run cut at 10.
  cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run(10))
  np.testing.assert_allclose(ours["mrr@10"], np.mean([v["recip_rank"] for v in cut.values()]))
  np.testing.assert_allclose(ours["ndcg@10"], np.mean([v["ndcg_cut_10"] for v in full.values()]))
  for k in (1, 10, 100):
    np.testing.assert_allclose(ours[f"recall@{k}"], np.mean([v[f"recall_{k}"] for v in full.values()]))


def test_top_k_search_is_exact_in_chunks_with_ties_to_the_lower_row():
  rng = np.random.default_rng(2)
  queries = rng.normal(size=(13, 8)).astype(np.float32)
  corpus = rng.normal(size=(70, 8)).astype(np.float32)
  corpus[40] = corpus[5]  # a tie: row 5 must come first
  expected = ranking.ranking_from_scores(queries @ corpus.T, 20)
  scores, rows = ranking.top_k_search(queries, corpus, 20, query_chunk=4, corpus_chunk=16)
  np.testing.assert_array_equal(rows, expected)
  np.testing.assert_allclose(scores, np.take_along_axis(queries @ corpus.T, expected, 1), rtol=1e-5)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  _, rows = ranking.top_k_search(queries, corpus * 3.0, 5, similarity="cosine", corpus_chunk=32)
  np.testing.assert_array_equal(rows, ranking.ranking_from_scores(unit(queries) @ unit(corpus).T, 5))


def test_bm25_finds_the_known_answers():
  corpus = ["The kettle boils water for tea.", "def get_file(path): return open(path)",
            "Bicycles have two wheels and pedals.", "Water boils at 100 degrees at sea level.",
            "Tea leaves come from the tea plant."]
  queries = ["pedals and wheels", "open a file", "which plant gives tea leaves", "zebra"]
  rows, scores = bm25.bm25_search(corpus, queries, k=3)
  assert rows.shape == scores.shape == (4, 3)
  assert list(rows[:3, 0]) == [2, 1, 4]  # "file" finds get_file: identifiers split at "_"
  assert (scores[3] == 0).all()          # no shared word: nothing scores
  metrics = ranking.ranking_metrics(rows[:3], [{2: 1}, {1: 1}, {4: 1}], recall_ks=(1,))
  assert metrics["mrr@10"] == metrics["recall@1"] == metrics["ndcg@10"] == 1.0
  rows, _ = bm25.bm25_search(corpus, ["get_file"], k=1, token_pattern=bm25.BM25S_TOKENS)
  assert rows[0, 0] == 1


# ------------------------------------------------------------------------------- prepare-data


def _jaxcl(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("JAXCL_TRACEBACK", None)
  return subprocess.run([*JAXCL, *args], capture_output=True, text=True, timeout=300, env=env,
                        cwd=ROOT, check=False)


def test_prepare_data_from_pairs_through_the_cli(tmp_path):
  pairs = [files.TextPair(f"question number {i}", f"answer text {i % 15}",
                          (f"wrong answer {i}",) if i % 3 == 0 else ()) for i in range(20)]
  path = _write_pairs(tmp_path / "pairs.jsonl", pairs)
  data_dir = str(tmp_path / "tfds")
  out = _jaxcl("prepare-data", "--from-pairs", path, "--name", "my_pairs", "--data_dir", data_dir,
               "--test-fraction", "0.25")
  assert out.returncode == 0, out.stderr
  assert "TextInfo(num_train=15, num_validation=0, num_test=5, corpus_size=22)" in out.stdout
  assert "--config.data.name=my_pairs" in out.stdout
  cfg = data.default_config("my_pairs")
  cfg.data_dir = data_dir
  ids, documents = text.load_corpus(cfg)
  assert sorted(documents) == sorted({p.positive for p in pairs} | {n for p in pairs for n in p.negatives})
  evalset = text.load_queries(cfg, "test", ids)
  assert len(evalset.queries) == 5
  by_query = {p.query: p.positive for p in pairs}
  for query, rel in zip(evalset.queries, evalset.relevant):
    assert [documents[r] for r in rel] == [by_query[query]]
  train = _rows(cfg, "train")
  assert not {r["query"] for r in train} & set(evalset.queries)
  assert sum(bool(r["negatives"]) for r in train) + sum(
      bool(p.negatives) for p in pairs if p.query in evalset.queries) == 7


def test_prepare_data_from_beir_and_pairs(tmp_path):
  beir = _beir(tmp_path / "beir")
  path = _write_pairs(tmp_path / "train.csv", PAIRS)
  data_dir = str(tmp_path / "tfds")
  data.prepare_text("mixed", data_dir=data_dir, pairs=path, beir=beir)
  cfg = data.default_config("mixed")
  cfg.data_dir = data_dir
  assert text.info(cfg) == text.TextInfo(num_train=3, num_validation=0, num_test=3, corpus_size=4)
  ids, _ = text.load_corpus(cfg)
  evalset = text.load_queries(cfg, "test", ids)
  assert evalset.query_ids == ["q1", "q2"]
  assert evalset.relevant == [{ids.index("d1"): 2, ids.index("d2"): 1}, {ids.index("d3"): 1}]
  with pytest.raises(ValueError, match="not in the corpus"):
    text.load_queries(cfg, "train", ids)  # training pairs from a file are not corpus documents


def test_bad_pair_file_through_the_cli_is_one_line_and_prepares_nothing(tmp_path, capsys):
  from jaxcl import main
  path = tmp_path / "pairs.jsonl"
  path.write_text(_jsonl(_GOOD, _GOOD, {"query": "q", "positive": ""}))
  data_dir = tmp_path / "tfds"
  with pytest.raises(SystemExit) as exit_info:
    main.run(["jaxcl", "prepare-data", "--from-pairs", str(path), "--name", "broken",
              "--data_dir", str(data_dir)])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[0].startswith("jaxcl prepare-data: ValueError: ") and "pairs.jsonl:3: 'positive' is empty" in err[0]
  assert not list(data_dir.glob("**/dataset_info.json")) and not (data_dir / "broken").exists()
