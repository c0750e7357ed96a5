"""Reading a user's text-retrieval files: pairs, a corpus, queries and qrels (the BEIR layout).

Pair files (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``) hold one training example per record, in
either column convention of sentence-transformers' datasets:

  query, positive[, negative | negatives]       (MS MARCO-style query/passage pairs)
  anchor, positive[, negative | negatives]      (triplets)

A negative is one text or a list of texts (JSONL lists, Parquet ``list<string>``); CSV/TSV files also
take ``negative_1, negative_2, ...`` columns, and an empty negative cell there means none. Other
columns are ignored. Every record becomes ``TextPair(query, positive, negatives)``.

Corpus and query files (same formats) have ``_id`` (or ``id``) and ``text`` columns; a corpus may
also have ``title``, which is put before the text with a space, as BEIR's dense retrievers do. Qrels
are BEIR's TSV: ``query-id<TAB>corpus-id<TAB>score`` with an optional header line and integer
scores. A BEIR folder holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{train,dev,test}.tsv``
(``dev`` becomes the validation split); any of the qrels files may be missing.

Every file is read as data (JSON with ``json.loads``, CSV with the ``csv`` module, Parquet with
pyarrow): nothing is evaluated or unpickled. Each line and each record is bounded in size, and each
problem raises a one-line ``ValueError`` naming the file, the line or row, and the fix.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from jaxcl import extras

PAIR_FORMATS = (".jsonl", ".csv", ".tsv", ".parquet")
MAX_TEXT_CHARS = 100_000    # one query, passage or negative (csv's own field limit is 131,072)
MAX_RECORD_CHARS = 1 << 20  # one line of JSONL/CSV/TSV, or all the texts of one Parquet row
MAX_ROW_GROUP_BYTES = 1 << 30  # a Parquet row group is decompressed whole
BEIR_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
_NEGATIVE_N = re.compile(r"negative_(\d+)")
_PAIRS_FIX = ("pair files need query (or anchor) and positive columns, optionally negative or "
              "negatives")


class TextPair(NamedTuple):
  """One training example: a query, a text relevant to it, and texts that are not."""

  query: str
  positive: str
  negatives: tuple[str, ...] = ()


def _format(path: str, formats: tuple[str, ...], flag: str) -> str:
  if not os.path.isfile(path):
    raise ValueError(f"{flag}={path!r} is not a file.")
  ext = os.path.splitext(path)[1].lower()
  if ext not in formats:
    raise ValueError(f"{path}: unknown format {ext or '(no extension)'!r}; use one of "
                     f"{', '.join(formats)}.")
  return ext


def _lines(f, path: str) -> Iterator[tuple[int, str]]:
  """(number, line) of a text file, each bounded by MAX_RECORD_CHARS before it is read whole."""
  number = 0
  try:
    for number, line in enumerate(iter(lambda: f.readline(MAX_RECORD_CHARS + 1), ""), start=1):
      if len(line) > MAX_RECORD_CHARS:
        raise ValueError(f"{path}:{number}: a line longer than {MAX_RECORD_CHARS:,} characters; "
                         "split the record or shorten its texts.")
      yield number, line
  except UnicodeDecodeError:
    raise ValueError(f"{path}:{number + 1}: not UTF-8 text; save the file as UTF-8.") from None


def _jsonl_records(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
  with open(path, encoding="utf-8-sig") as f:
    for number, line in _lines(f, path):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON ({e.msg}, column {e.colno}); each line must be "
                         "one JSON object.") from None
      except (ValueError, RecursionError) as e:  # an integer of >4,300 digits; deep nesting
        raise ValueError(f"{where}: unreadable JSON ({type(e).__name__}); each line must be one "
                         "JSON object of texts.") from None
      if not isinstance(record, dict):
        raise ValueError(f"{where}: a JSON {type(record).__name__}, not an object; each line must "
                         'be one object such as {"query": ..., "positive": ...}.')
      yield where, record


def _csv_records(path: str, delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
  # TSV files (MS MARCO's, BEIR's) are unquoted: a quote character is text there.
  quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader((line for _, line in _lines(f, path)), delimiter=delimiter,
                        quoting=quoting)
    try:
      header = next(reader, None)
      if header is None:
        raise ValueError(f"{path}: empty file; the first line must name the columns.")
      header = [h.strip() for h in header]
      if len(set(header)) != len(header):
        raise ValueError(f"{path}:1: repeated column names {header}; name each column once.")
      for row in reader:
        where = f"{path}:{reader.line_num}"
        if not row or row == [""]:
          continue
        if len(row) != len(header):
          raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)}; quote "
                           "fields that contain the delimiter.")
        # An empty cell is a missing value: CSV cannot tell them apart.
        yield where, {h: v for h, v in zip(header, row) if v != ""}
    except csv.Error as e:
      raise ValueError(f"{path}:{reader.line_num}: unreadable CSV ({e}); fields are at most "
                       f"{MAX_TEXT_CHARS:,} characters.") from None


def _parquet_records(path: str, columns: list[str] | None = None
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
  pa = extras.require("pyarrow", "text", "reading Parquet text files")
  pq = extras.require("pyarrow.parquet", "text", "reading Parquet text files")
  try:
    parquet = pq.ParquetFile(path)
  except (pa.ArrowException, OSError) as e:
    raise ValueError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]}); write it "
                     "again, e.g. with pandas.DataFrame.to_parquet.") from None
  with parquet:
    names = parquet.schema_arrow.names
    for i in range(parquet.num_row_groups):
      size = parquet.metadata.row_group(i).total_byte_size
      if size > MAX_ROW_GROUP_BYTES:
        raise ValueError(f"{path}: row group {i} holds {size:,} bytes, more than {MAX_ROW_GROUP_BYTES:,}; "
                         "write it with smaller row groups (row_group_size).")
    wanted = [c for c in (columns or names) if c in names]
    row = 0
    try:
      for batch in parquet.iter_batches(batch_size=1024, columns=wanted):
        for record in batch.to_pylist():
          yield f"{path} row {row}", {k: v for k, v in record.items() if v is not None}
          row += 1
    except pa.ArrowException as e:
      raise ValueError(f"{path} row {row}: unreadable ({str(e).splitlines()[0]}); write the file "
                       "again.") from None


def _records(path: str, ext: str, columns: list[str] | None = None
             ) -> Iterator[tuple[str, dict[str, Any]]]:
  if ext == ".jsonl":
    return _jsonl_records(path)
  if ext == ".parquet":
    return _parquet_records(path, columns)
  return _csv_records(path, "\t" if ext == ".tsv" else ",")


def _text(value: Any, where: str, column: str) -> str:
  if not isinstance(value, str):
    raise ValueError(f"{where}: {column!r} is {type(value).__name__} {_short(value)}, not text; "
                     "store every text as a string.")
  if not value.strip():
    raise ValueError(f"{where}: {column!r} is empty; remove the record or fill in the text.")
  if len(value) > MAX_TEXT_CHARS:
    raise ValueError(f"{where}: {column!r} has {len(value):,} characters, more than "
                     f"{MAX_TEXT_CHARS:,}; shorten it (models read a few hundred tokens).")
  try:
    value.encode("utf-8")  # JSON's "\ud800" is a str that no file can store
  except UnicodeEncodeError:
    raise ValueError(f"{where}: {column!r} holds a lone surrogate (e.g. \\ud800), which is not "
                     "text; fix the escape in the file.") from None
  return value


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


def _negatives(record: dict[str, Any], where: str) -> tuple[str, ...]:
  if "negative" in record and "negatives" in record:
    raise ValueError(f"{where}: both 'negative' and 'negatives'; keep one of them.")
  key = "negatives" if "negatives" in record else "negative"
  value = record.get(key)
  values = [] if value is None else value if isinstance(value, list) else [value]
  numbered = sorted((int(m.group(1)), k) for k in record if (m := _NEGATIVE_N.fullmatch(k)))
  columns = [key] * len(values) + [k for _, k in numbered]
  values += [record[k] for _, k in numbered]
  return tuple(_text(v, where, c) for v, c in zip(values, columns))


def pair_from_record(record: dict[str, Any], where: str) -> TextPair:
  """A record of either column convention -> TextPair, or a one-line ValueError naming ``where``."""
  if "query" in record and "anchor" in record:
    raise ValueError(f"{where}: both 'query' and 'anchor'; keep one of them ({_PAIRS_FIX}).")
  query_key = "query" if "query" in record else "anchor"
  for key in (query_key, "positive"):
    if key not in record:
      shown = ", ".join(sorted(record)[:8]) or "none"
      raise ValueError(f"{where}: no {key!r} (columns: {shown}); {_PAIRS_FIX}.")
  pair = TextPair(_text(record[query_key], where, query_key),
                  _text(record["positive"], where, "positive"), _negatives(record, where))
  size = len(pair.query) + len(pair.positive) + sum(map(len, pair.negatives))
  if size > MAX_RECORD_CHARS:
    raise ValueError(f"{where}: the record's texts have {size:,} characters, more than "
                     f"{MAX_RECORD_CHARS:,}; use fewer negatives or shorter texts.")
  return pair


def read_pairs(path: str) -> list[TextPair]:
  """Every pair of a .jsonl, .csv, .tsv or .parquet file (see the module doc for the columns).

  Raises:
    ValueError: one line naming the file, the line or row, and the fix.
  """
  ext = _format(path, PAIR_FORMATS, "--from_pairs")
  pairs = [pair_from_record(record, where) for where, record in _records(path, ext)]
  if not pairs:
    raise ValueError(f"{path}: no pairs; {_PAIRS_FIX}, one record per line (row).")
  return pairs


def _record_id(record: dict[str, Any], where: str) -> str:
  key = "_id" if "_id" in record else "id"
  value = record.get(key)
  # JSON ids are sometimes numbers; they name the same thing as the string in the qrels.
  if isinstance(value, int) and not isinstance(value, bool):
    value = str(value)
  if not isinstance(value, str) or not value.strip():
    raise ValueError(f"{where}: no '_id' (or 'id') text; give every record a unique id.")
  if len(value) > 1000:
    raise ValueError(f"{where}: an id of {len(value):,} characters; ids are at most 1,000.")
  return value


def read_texts(path: str, *, kind: str = "corpus") -> dict[str, str]:
  """``{id: text}`` of a corpus or queries file (.jsonl, .csv, .tsv, .parquet).

  Args:
    path: the file.
    kind: "corpus" (an optional ``title`` is put before the text) or "queries".

  Raises:
    ValueError: a missing or repeated id, a text that is empty, not a string or too long.
  """
  ext = _format(path, PAIR_FORMATS, f"--{kind}")
  columns = ["_id", "id", "text"] + (["title"] if kind == "corpus" else [])
  texts: dict[str, str] = {}
  for where, record in _records(path, ext, columns):
    key = _record_id(record, where)
    if key in texts:
      raise ValueError(f"{where}: id {key!r} appears twice; ids must be unique.")
    title = record.get("title") if kind == "corpus" else None
    if title is not None and not isinstance(title, str):
      raise ValueError(f"{where}: 'title' is {type(title).__name__}, not text.")
    text = record.get("text", "")
    if title and title.strip() and isinstance(text, str):
      text = f"{title.strip()} {text}".strip()
    texts[key] = _text(text, where, "text")
  if not texts:
    raise ValueError(f"{path}: no records; a {kind} file has one record ({{'_id', 'text'}}) per line.")
  return texts


def read_qrels(path: str, *, queries: dict[str, str] | None = None,
               corpus: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
  """``{query id: {corpus id: score}}`` of a BEIR qrels TSV (``query-id corpus-id score``).

  Args:
    path: the .tsv file; a first line whose score is not an integer is taken as the header.
    queries / corpus: when given, every id must be one of theirs.

  Raises:
    ValueError: a line without three tab-separated fields, a score that is not an integer, a
      repeated (query, document) pair or an unknown id, naming the line.
  """
  _format(path, (".tsv",), "--qrels")
  qrels: dict[str, dict[str, int]] = {}
  with open(path, encoding="utf-8-sig") as f:
    for number, line in _lines(f, path):
      fields = line.rstrip("\r\n").split("\t")
      if fields == [""]:
        continue
      where = f"{path}:{number}"
      if len(fields) != 3:
        raise ValueError(f"{where}: {len(fields)} tab-separated fields; qrels lines are "
                         "'query-id<TAB>corpus-id<TAB>score'.")
      query_id, doc_id, score = (x.strip() for x in fields)
      try:
        grade = int(score)
      except ValueError:
        if number == 1:
          continue  # the header, "query-id corpus-id score"
        raise ValueError(f"{where}: score {score!r} is not an integer; qrels scores are integer "
                         "relevance grades (0 = not relevant).") from None
      if queries is not None and query_id not in queries:
        raise ValueError(f"{where}: query id {query_id!r} is not in the queries file; remove the "
                         "line or add the query.")
      if corpus is not None and doc_id not in corpus:
        raise ValueError(f"{where}: corpus id {doc_id!r} is not in the corpus; remove the line "
                         "or add the document.")
      judged = qrels.setdefault(query_id, {})
      if doc_id in judged:
        raise ValueError(f"{where}: ({query_id!r}, {doc_id!r}) is judged twice; keep one line.")
      judged[doc_id] = grade
  return qrels


class Beir(NamedTuple):
  """A BEIR folder read whole: the corpus, the queries and the qrels of each split present."""

  corpus: dict[str, str]
  queries: dict[str, str]
  qrels: dict[str, dict[str, dict[str, int]]]  # split ("train", "validation", "test") -> qrels


def read_beir(folder: str) -> Beir:
  """corpus.jsonl, queries.jsonl and qrels/{train,dev,test}.tsv of a BEIR folder.

  Raises:
    ValueError: a missing file (the message lists what the folder needs) or any bad record.
  """
  if not os.path.isdir(folder):
    raise ValueError(f"--from_beir={folder!r} is not a folder (it needs corpus.jsonl, "
                     "queries.jsonl and qrels/test.tsv).")
  paths = {name: os.path.join(folder, f"{name}.jsonl") for name in ("corpus", "queries")}
  for name, path in paths.items():
    if not os.path.isfile(path):
      raise ValueError(f"{folder} has no {name}.jsonl; a BEIR folder holds corpus.jsonl, "
                       "queries.jsonl and qrels/<split>.tsv.")
  corpus = read_texts(paths["corpus"], kind="corpus")
  queries = read_texts(paths["queries"], kind="queries")
  qrels = {}
  for name, split in BEIR_SPLITS.items():
    path = os.path.join(folder, "qrels", f"{name}.tsv")
    if os.path.isfile(path):
      qrels[split] = read_qrels(path, queries=queries, corpus=corpus)
  if not qrels:
    raise ValueError(f"{folder} has no qrels/train.tsv, qrels/dev.tsv or qrels/test.tsv; add the "
                     "relevance judgements of at least one split.")
  return Beir(corpus, queries, qrels)
