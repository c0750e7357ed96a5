"""stdlib_code: docstring -> code search over the Python standard library, as a TFDS text dataset.

A real retrieval task that needs no download, made the way CodeSearchNet (Husain et al. 2019) is:
every public function and method with a docstring in the standard library of the running
interpreter (the ``.py`` files of ``sysconfig.get_paths()["stdlib"]``, read as text and parsed with
``ast``: nothing is imported or run) gives one pair,

* query: the docstring's first sentence (its first paragraph up to the first ``.``, ``!`` or ``?``
  that ends a sentence), whitespace collapsed;
* positive: the function's source with the docstring removed (decorators, the ``def`` line with its
  name and arguments, comments and body kept, dedented).

Skipped: private names (``_x``, dunders) and anything under a private class, module or package;
nested functions; the ``test``/``tests``/``idle_test`` packages and site-packages; queries of fewer
than ``MIN_QUERY_WORDS`` words (``Emit a record.``) or that repeat the signature; functions with no
code besides the docstring (``pass``, ``...``, ``raise NotImplementedError``); queries over
``MAX_QUERY_CHARS`` and documents over ``MAX_DOCUMENT_CHARS`` characters.

Splits are by top-level package or module (``email``, ``asyncio``, ``json``, ``os``): the first 8 hex
digits of SHA-256 of its name mod 100 give its bucket; buckets 0-9 are test, 10-24 validation, the
rest train. So test queries come from packages never seen in training, not just from other functions
of the same module, and the split of a name is the same on every machine and Python version. Queries
whose text repeats within a split share a query id and every function with that text is relevant to
it. The corpus is every document of every split: test queries are searched against the whole
standard library (as BEIR searches one corpus), so a model must also tell test functions from the
training ones it has seen.

Sizes on CPython 3.11.7 (the content depends on the Python version, and on which stdlib modules
the distribution ships: Debian, for one, moves some out): 3,504 train, 173 validation and 484 test
pairs (3,360 / 172 / 442 distinct queries; 41 test queries have more than one relevant function),
and a corpus of 4,161 documents. The function names are kept (as in CodeSearchNet), which helps
lexical matching; BM25 on the test split (``python -m jaxcl.serve.bm25 stdlib_code``, identifiers
split at "_") scores MRR@10 0.346, NDCG@10 0.394, Recall@1 0.245, Recall@10 0.548 and Recall@100
0.776 (with bm25s' own tokens, which keep ``get_file`` whole: MRR@10 0.227, Recall@100 0.593): word
overlap with the name and the code goes some way, and leaves most of the task to a trained model.
A data_dir prepared under one Python version is read as it is under another; delete its
``stdlib_code`` folder to rebuild it from the running Python.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import os
import re
import sys
import sysconfig
import tokenize

import tensorflow_datasets as tfds

from jaxcl.data.builders import local, text_pairs

MIN_QUERY_WORDS = 4
MAX_QUERY_CHARS = 400
MAX_DOCUMENT_CHARS = 16_384   # the longest stdlib function with a docstring has ~13,300
MAX_FILE_BYTES = 4 * 2**20    # the largest stdlib source file is under 1 MB
TEST_BUCKETS, VALIDATION_BUCKETS = 10, 15  # of 100
SKIPPED_FOLDERS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages"})
# A sentence ends at . ! or ? followed by a space and something that starts a sentence, so
# "e.g. foo" and "os.path.join" do not end it.
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s+[A-Z(`'\"*]|$)")


@dataclasses.dataclass(frozen=True)
class Function:
  """One pair: the function's id (``module:Class.name``), its package, its query and its code."""

  doc_id: str
  package: str
  query: str
  document: str


def stdlib_root() -> str:
  return sysconfig.get_paths()["stdlib"]


def _public(name: str) -> bool:
  return name.isidentifier() and not name.startswith("_")


def source_files(root: str) -> list[tuple[str, str]]:
  """(path, dotted module name) of every public module under ``root``, sorted."""
  found = []
  for folder, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs if _public(d) and d not in SKIPPED_FOLDERS)
    rel = os.path.relpath(folder, root)
    package = [] if rel == os.curdir else rel.split(os.sep)
    for name in sorted(names):
      stem, ext = os.path.splitext(name)
      if ext != ".py" or not (_public(stem) or stem == "__init__"):
        continue
      module = package + ([] if stem == "__init__" else [stem])
      if module:
        found.append((os.path.join(folder, name), ".".join(module)))
  return sorted(found, key=lambda f: f[1])


def first_sentence(docstring: str) -> str:
  """The first sentence of a docstring's first paragraph, whitespace collapsed."""
  paragraph = " ".join(inspect.cleandoc(docstring).split("\n\n")[0].split())
  match = _SENTENCE.match(paragraph)
  return match.group(1) if match else paragraph


def split_of(module: str) -> str:
  """"train", "validation" or "test" of a module, by its top-level package's SHA-256."""
  package = module.split(".")[0]
  bucket = int(hashlib.sha256(package.encode()).hexdigest()[:8], 16) % 100
  if bucket < TEST_BUCKETS:
    return "test"
  return "validation" if bucket < TEST_BUCKETS + VALIDATION_BUCKETS else "train"


def _is_stub(body: list[ast.stmt]) -> bool:
  """No code: nothing, ``pass``, ``...`` or ``raise NotImplementedError[(...)]``."""
  if len(body) != 1:
    return not body
  stmt = body[0]
  if isinstance(stmt, ast.Raise) and stmt.exc is not None:
    exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
  return isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(
      stmt.value, ast.Constant) and stmt.value.value is Ellipsis)


def _without_docstring(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
  """The function's source, docstring lines removed and dedented; None if it cannot be cut clean."""
  doc = node.body[0]
  start = min([node.lineno] + [d.lineno for d in node.decorator_list])
  if doc.lineno == node.lineno or doc.end_lineno is None or node.end_lineno is None:
    return None  # def f(): "doc"; return 1
  first, last = lines[doc.lineno - 1], lines[doc.end_lineno - 1]
  if first[:doc.col_offset].strip() or last[doc.end_col_offset:].strip():
    return None  # "doc"; x = 1 on the docstring's own lines
  kept = lines[start - 1:doc.lineno - 1] + lines[doc.end_lineno:node.end_lineno]
  # Dedent by the def's own indent; a line with less (inside a multi-line string) stays as it is.
  indent = node.col_offset
  kept = [line[indent:] if not line[:indent].strip() else line for line in kept]
  return "\n".join(kept).strip("\n")


def functions_in(source: str, module: str) -> list[Function]:
  """The pairs of one module's source (see the module doc for what is kept)."""
  tree = ast.parse(source)
  lines = source.splitlines()
  found: list[Function] = []
  seen: dict[str, int] = {}

  def visit(node: ast.AST, prefix: list[str]) -> None:
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.ClassDef):
        if _public(child.name):
          visit(child, prefix + [child.name])
      elif isinstance(child, (ast.If, ast.Try)):  # if sys.platform == ...: def f(): ...
        visit(child, prefix)
      elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(child.name):
        docstring = ast.get_docstring(child, clean=False)
        if not docstring or _is_stub(child.body[1:]):
          continue
        query = first_sentence(docstring)
        if (len(query.split()) < MIN_QUERY_WORDS or len(query) > MAX_QUERY_CHARS
            or query.startswith(child.name + "(")):
          continue
        document = _without_docstring(lines, child)
        if not document or len(document) > MAX_DOCUMENT_CHARS:
          continue
        name = ".".join(prefix + [child.name])
        seen[name] = seen.get(name, 0) + 1  # a name defined twice (per platform) gets #2
        suffix = "" if seen[name] == 1 else f"#{seen[name]}"
        found.append(Function(f"{module}:{name}{suffix}", module.split(".")[0], query, document))

  visit(tree, [])
  return found


def extract(root: str | None = None) -> dict[str, list[Function]]:
  """Every pair of the standard library at ``root`` (default: this interpreter's), by split.

  Files are read as text (``tokenize.open`` honours a coding cookie) and parsed with ``ast``.
  """
  root = root or stdlib_root()
  splits: dict[str, list[Function]] = {"train": [], "validation": [], "test": []}
  for path, module in source_files(root):
    if os.path.getsize(path) > MAX_FILE_BYTES:
      continue
    try:
      with tokenize.open(path) as f:
        source = f.read()
      functions = functions_in(source, module)
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
      continue  # e.g. lib2to3's Python 2 test data; not a module of this Python
    splits[split_of(module)] += functions
  return splits


def rows(functions: list[Function]) -> list[dict]:
  """The TFDS rows of one split; functions with the same query text share one query id."""
  query_ids: dict[str, str] = {}
  for f in functions:
    query_ids.setdefault(f.query, f.doc_id)
  return [text_pairs.pair_row(query_ids[f.query], f.query, f.doc_id, f.document)
          for f in functions]


class StdlibCode(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Docstring first sentence -> function code, from this Python's standard library."""

  name = "stdlib_code"
  code_path = None  # no checksums file to look up (see animal_shapes)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Public functions with docstrings; split by top-level package hash."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"Python {sys.version.split()[0]} standard library: docstring first "
                     "sentence -> function code."),
        features=text_pairs.features(),
        homepage="https://docs.python.org/3/library/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the files ship with Python.
    splits = extract()
    corpus = sorted((f for functions in splits.values() for f in functions), key=lambda f: f.doc_id)
    out = {split: rows(functions) for split, functions in splits.items()}
    out[text_pairs.CORPUS] = [text_pairs.corpus_row(f.doc_id, f.document) for f in corpus]
    return {split: self._generate_examples(split_rows) for split, split_rows in out.items()}

  def _generate_examples(self, split_rows):
    yield from enumerate(split_rows)
