"""An on-disk embedding index: written once in shards, read without running code, searched exactly.

An index is a folder::

  index.json            {"format": "jaxcl-index", "version": 1, "dim": D, "count": N,
                         "dtype": "float32" | "float16", "similarity": "dot" | "cosine",
                         "shards": [{"embeddings": "embeddings-00000.npy",
                                     "ids": "ids-00000.txt", "count": n0}, ...],
                         "meta": {...}}      (the writer's meta: model, workdir, tower, ...)
  embeddings-00000.npy  [n0, D] float32 or float16, a plain NumPy .npy array
  ids-00000.txt         n0 ids, UTF-8, one per line ("\\n"-terminated)
  ...
  ann-usearch-cos.usearch   (only after ``search(..., exact=False)``: the usearch HNSW graph)

Public API::

  with IndexWriter(out_dir, dim=D, meta={...}) as writer:   (shard_size, dtype, similarity, overwrite)
    writer.add(embeddings [n, D], ids)
  index = load_index(out_dir, mmap_mode=None | "r")
  scores [Q, k], ids [[str] * k] * Q, rows [Q, k] = index.search(queries [Q, D], k, mesh=None)

Writes are all-or-nothing. ``IndexWriter`` writes into a hidden sibling folder
(``.<name>.partial-XXXX``) and writes ``index.json`` last; only when ``close()`` (the end of the
``with`` block) has written everything is that folder renamed to ``out_dir``. An exception inside
the ``with`` block deletes the partial folder; a killed process leaves it behind, but ``out_dir``
never appears and the partial folder has no ``index.json``, so nothing half-written loads.

Reading never runs code from the files: ``index.json`` is parsed as JSON, every ``.npy`` header is
checked (dtype, shape) before ``np.load(allow_pickle=False)`` reads the data, and every count and
shape is checked against ``index.json``. Search goes through ``ranking.top_k_search`` (one device,
or the corpus sharded over a mesh's "data" axis; both exact, same result). ``exact=False`` uses an
HNSW graph from the optional ``usearch`` package (``pip install 'jaxcl[ann]'``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any, Self

import jax
import numpy as np

from jaxcl.evaluate import ranking

FORMAT = "jaxcl-index"
VERSION = 1
INDEX_FILE = "index.json"
DTYPES = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_ANN_METRICS = {"dot": "ip", "cosine": "cos"}
_REWRITE = "rewrite the index with IndexWriter (jaxcl embed)"


class IndexWriter:
  """Writes embeddings and their ids to an index folder in shards (see the module doc).

  Use as a context manager; ``add`` appends rows, the end of the ``with`` block writes
  ``index.json`` and moves the finished folder to ``out_dir``.

  Args:
    out_dir: the index folder to create. It must not exist or be empty, unless ``overwrite``.
    dim: D, the embedding width.
    shard_size: rows per shard file (the last shard holds the rest).
    meta: JSON-serialisable facts about the embeddings (model, workdir, tower, ...), stored as is.
    dtype: "float32", or "float16" to halve the files (values must fit float16's range).
    similarity: "cosine" or "dot": how the embeddings are meant to be compared; ``search`` uses it.
    overwrite: replace an existing index (or any folder) at ``out_dir`` when the write completes.
  """

  def __init__(self, out_dir: str | os.PathLike, *, dim: int, shard_size: int = 65536,
               meta: dict[str, Any], dtype: str = "float32", similarity: str = "cosine",
               overwrite: bool = False):
    if not isinstance(dim, int) or dim < 1:
      raise ValueError(f"dim={dim!r}: must be a positive int (the embedding width).")
    if not isinstance(shard_size, int) or shard_size < 1:
      raise ValueError(f"shard_size={shard_size!r}: must be a positive int (rows per shard file).")
    if dtype not in DTYPES:
      raise ValueError(f"dtype={dtype!r}: use one of {DTYPES}.")
    if similarity not in ranking.SIMILARITIES:
      raise ValueError(f"similarity={similarity!r}: use one of {ranking.SIMILARITIES}.")
    if not isinstance(meta, dict):
      raise TypeError(f"meta must be a dict (model, workdir, tower, ...); got "
                      f"{type(meta).__name__}.")
    try:
      self.meta = json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as e:
      raise ValueError(f"meta must be JSON-serialisable (str keys; str, number, bool, list, dict "
                       f"values): {e}.") from None
    self.out_dir = os.path.abspath(os.fspath(out_dir))
    self.dim, self.shard_size, self.dtype, self.similarity = dim, shard_size, dtype, similarity
    self.overwrite = overwrite
    self._check_out_dir()
    parent, name = os.path.split(self.out_dir)
    os.makedirs(parent, exist_ok=True)
    self._tmp = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    self._shards: list[dict[str, Any]] = []
    self._pending: list[tuple[np.ndarray, list[bytes]]] = []
    self._pending_rows = 0
    self.count = 0
    self._open = True

  def _check_out_dir(self):
    if os.path.lexists(self.out_dir):
      if not os.path.isdir(self.out_dir) or os.path.islink(self.out_dir):
        raise FileExistsError(f"out_dir {self.out_dir} exists and is not a folder: pick another "
                              f"path or remove it.")
      if os.listdir(self.out_dir) and not self.overwrite:
        raise FileExistsError(f"out_dir {self.out_dir} exists and is not empty: pick another path "
                              f"or pass overwrite=True to replace it.")

  def __enter__(self) -> Self:
    return self

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False

  def add(self, embeddings: np.ndarray, ids: Sequence[str]) -> None:
    """Appends rows.

    Args:
      embeddings: float [n, dim], finite.
      ids: n strings, one per row, without newlines ("\\n", "\\r").
    """
    if not self._open:
      raise RuntimeError("IndexWriter.add after close/abort: open a new IndexWriter.")
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
      raise ValueError(f"embeddings must be [n, dim={self.dim}]; got {embeddings.shape}.")
    if not (np.issubdtype(embeddings.dtype, np.floating)
            or np.issubdtype(embeddings.dtype, np.integer)):
      raise ValueError(f"embeddings must be real numbers; got dtype {embeddings.dtype}.")
    embeddings = embeddings.astype(np.float32)
    if isinstance(ids, (str, bytes)) or len(ids) != len(embeddings):
      raise ValueError(f"ids must be a sequence of {len(embeddings)} strings (one per row); got "
                       f"{type(ids).__name__} of length {len(ids)}.")
    if not np.isfinite(embeddings).all():
      row = int(np.argmin(np.isfinite(embeddings).all(axis=1)))
      raise ValueError(f"embeddings row {row} (id {ids[row]!r}) is not finite (NaN or inf): fix "
                       f"the model/inputs that produced it before indexing.")
    if self.dtype == "float16" and embeddings.size and np.abs(embeddings).max() > _FLOAT16_MAX:
      raise ValueError(f"embeddings exceed float16's range ({_FLOAT16_MAX:g}): write with "
                       f"dtype='float32' (or normalise them first).")
    encoded = []
    for i, item in enumerate(ids):
      if not isinstance(item, str):
        raise TypeError(f"ids[{i}] must be a str; got {type(item).__name__}.")
      if "\n" in item or "\r" in item:
        raise ValueError(f"ids[{i}]={item!r} contains a newline; ids are stored one per line: "
                         f"replace or escape newlines in ids.")
      try:
        encoded.append(item.encode("utf-8"))
      except UnicodeEncodeError as e:
        raise ValueError(f"ids[{i}]={item!r} is not encodable as UTF-8 ({e.reason}).") from None
    self._pending.append((embeddings, encoded))
    self._pending_rows += len(embeddings)
    self.count += len(embeddings)
    while self._pending_rows >= self.shard_size:
      self._write_shard(self.shard_size)

  def _write_shard(self, rows: int):
    embeddings = np.concatenate([e for e, _ in self._pending])
    ids = [i for _, chunk in self._pending for i in chunk]
    rest = (embeddings[rows:], ids[rows:])
    self._pending = [rest] if len(rest[1]) else []
    self._pending_rows = len(rest[1])
    number = len(self._shards)
    shard = {"embeddings": f"embeddings-{number:05d}.npy", "ids": f"ids-{number:05d}.txt",
             "count": rows}
    with open(os.path.join(self._tmp, shard["embeddings"]), "wb") as f:
      np.save(f, embeddings[:rows].astype(self.dtype), allow_pickle=False)
      _sync(f)
    with open(os.path.join(self._tmp, shard["ids"]), "wb") as f:
      f.write(b"".join(i + b"\n" for i in ids[:rows]))
      _sync(f)
    self._shards.append(shard)

  def close(self) -> None:
    """Writes the last shard and ``index.json``, then moves the folder to ``out_dir``."""
    if not self._open:
      return
    try:
      if self.count == 0:
        raise ValueError(f"IndexWriter({self.out_dir}): no embeddings were added; nothing to write.")
      if self._pending_rows:
        self._write_shard(self._pending_rows)
      header = {"format": FORMAT, "version": VERSION, "dim": self.dim, "count": self.count,
                "dtype": self.dtype, "similarity": self.similarity, "shards": self._shards,
                "meta": self.meta}
      with open(os.path.join(self._tmp, INDEX_FILE), "w", encoding="utf-8") as f:
        json.dump(header, f, indent=2)
        f.write("\n")
        _sync(f)
      self._check_out_dir()  # someone may have filled it meanwhile
      old = None
      if os.path.isdir(self.out_dir):
        parent, name = os.path.split(self.out_dir)
        old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
        os.rename(self.out_dir, os.path.join(old, name))
      os.rename(self._tmp, self.out_dir)
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
      self.abort()
      raise
    self._open = False

  def abort(self) -> None:
    """Discards everything written so far; ``out_dir`` is left as it was."""
    self._open = False
    shutil.rmtree(self._tmp, ignore_errors=True)


def _sync(f):
  f.flush()
  os.fsync(f.fileno())


class _Rows:
  """The index's rows as one read-only [N, D] array-like over its shards (slices copy only them)."""

  def __init__(self, shards: Sequence[np.ndarray], dim: int):
    self._shards = list(shards)
    self._starts = np.cumsum([0] + [len(s) for s in self._shards])
    self.shape = (int(self._starts[-1]), dim)
    self.ndim = 2
    self.dtype = self._shards[0].dtype if self._shards else np.dtype(np.float32)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      row = range(self.shape[0])[index]
      shard = int(np.searchsorted(self._starts, row, side="right")) - 1
      return self._shards[shard][row - self._starts[shard]]
    if not isinstance(index, slice):
      raise TypeError("index rows take an int or a slice (np.asarray(index.embeddings) for all).")
    lo, hi, step = index.indices(self.shape[0])
    if step != 1:
      raise TypeError("index rows take a contiguous slice (step 1).")
    pieces = []
    for shard, start in zip(self._shards, self._starts[:-1]):
      a, b = max(lo - start, 0), min(hi - start, len(shard))
      if a < b:
        pieces.append(shard[a:b])
    if len(pieces) == 1:
      return pieces[0]
    return np.concatenate(pieces) if pieces else np.zeros((0, self.shape[1]), self.dtype)

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)


class Index:
  """A loaded index (``load_index``): ids, embeddings (per shard) and what ``index.json`` says.

  Attributes:
    path: the index folder.
    dim / count / dtype / similarity / meta: from ``index.json``.
    ids: the N ids, in row order.
    shards: the per-shard embedding arrays (memory maps with ``mmap_mode="r"``).
    embeddings: all rows as one read-only [N, D] array-like (slice it; ``np.asarray`` copies all).
  """

  def __init__(self, path: str, header: dict[str, Any], shards: Sequence[np.ndarray],
               ids: list[str]):
    self.path = path
    self.dim, self.count = header["dim"], header["count"]
    self.dtype, self.similarity = header["dtype"], header["similarity"]
    self.meta = header["meta"]
    self.shards = tuple(shards)
    self.ids = ids
    self.embeddings = _Rows(self.shards, self.dim)
    self._ann: dict[str, Any] = {}

  def __len__(self) -> int:
    return self.count

  def __repr__(self) -> str:
    return (f"Index({self.path!r}, count={self.count}, dim={self.dim}, dtype={self.dtype}, "
            f"similarity={self.similarity})")

  def search(self, queries: np.ndarray, k: int, *, mesh: jax.sharding.Mesh | None = None,
             exact: bool = True, similarity: str | None = None, query_chunk: int | None = None,
             corpus_chunk: int | None = None, device_rows: int | None = None
             ) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """The k nearest rows of every query.

    Args:
      queries: float [Q, dim] query embeddings (from the matching query tower).
      k: results per query (at most ``count``).
      mesh: exact search with the corpus sharded over this mesh's "data" axis (same result as
        without); None: one device.
      exact: False for approximate search through a usearch HNSW graph, built on first use and
        saved next to the shards (``pip install 'jaxcl[ann]'``).
      similarity: "dot" or "cosine"; default: the index's own.
      query_chunk / corpus_chunk / device_rows: memory bounds of exact search (``top_k_search``).

    Returns:
      (scores float32 [Q, k], ids: Q lists of k ids, rows int32 [Q, k]), best first; ties go to
      the lower row. Approximate search marks missing results (if the graph finds fewer than k) with
      row -1 and score -inf and leaves them out of the id lists.
    """
    similarity = similarity or self.similarity
    if similarity not in ranking.SIMILARITIES:
      raise ValueError(f"similarity={similarity!r}: use one of {ranking.SIMILARITIES}.")
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != self.dim:
      raise ValueError(f"queries must be [Q, dim={self.dim}] (the index's width); got "
                       f"{queries.shape}.")
    if exact:
      scores, rows = ranking.top_k_search(queries, self.embeddings, k, similarity=similarity,
                                          query_chunk=query_chunk, corpus_chunk=corpus_chunk,
                                          mesh=mesh, device_rows=device_rows)
    else:
      if mesh is not None:
        raise ValueError("mesh is for exact search: pass exact=True, or mesh=None for usearch.")
      scores, rows = self._ann_search(queries, k, similarity)
    ids = [[self.ids[r] for r in row if r >= 0] for row in rows.tolist()]
    return scores, ids, rows

  def _ann_search(self, queries, k, similarity):
    ann = self._ann_index(similarity)
    k = min(int(k), self.count)
    if k < 1:
      raise ValueError(f"k={k}: must be >= 1.")
    matches = ann.search(queries, k)
    keys = np.asarray(matches.keys).reshape(len(queries), -1)[:, :k].astype(np.int64)
    distances = np.asarray(matches.distances, np.float32).reshape(len(queries), -1)[:, :k]
    found = np.arange(k)[None, :] < np.asarray(matches.counts).reshape(-1, 1)
    # usearch's "ip" distance is 1 - dot and its "cos" distance is 1 - cosine.
    scores = np.where(found, 1.0 - distances, -np.inf).astype(np.float32)
    rows = np.where(found, keys, -1).astype(np.int32)
    return scores, rows

  def _ann_index(self, similarity):
    if similarity in self._ann:
      return self._ann[similarity]
    try:
      from usearch.index import Index as HnswIndex
    except ImportError:
      raise ImportError("exact=False needs the usearch package: pip install 'jaxcl[ann]' (or "
                        "search with exact=True).") from None
    metric = _ANN_METRICS[similarity]
    path = os.path.join(self.path, f"ann-usearch-{metric}.usearch")
    ann = None
    if os.path.isfile(path):
      try:
        ann = HnswIndex.restore(path)
      except Exception as e:  # noqa: BLE001 (a broken cache is rebuilt, not fatal)
        warnings.warn(f"{path}: unreadable usearch index ({e}); rebuilding it.", stacklevel=3)
      if ann is not None and (ann.ndim != self.dim or len(ann) != self.count):
        warnings.warn(f"{path}: built for another index ({len(ann)} x {ann.ndim}, this index is "
                      f"{self.count} x {self.dim}); rebuilding it.", stacklevel=3)
        ann = None
    if ann is None:
      ann = HnswIndex(ndim=self.dim, metric=metric, dtype="f32")
      for start in range(0, self.count, 65536):
        block = np.asarray(self.embeddings[start:start + 65536], np.float32)
        ann.add(np.arange(start, start + len(block), dtype=np.uint64), block)
      try:
        partial = f"{path}.partial-{os.getpid()}"
        ann.save(partial)
        os.replace(partial, path)
      except OSError as e:
        warnings.warn(f"could not save the usearch index next to the shards ({e}); it is kept "
                      f"in memory only.", stacklevel=3)
    self._ann[similarity] = ann
    return ann


def load_index(path: str | os.PathLike, *, mmap_mode: str | None = None) -> Index:
  """Reads an index written by ``IndexWriter``, checking every file against ``index.json``.

  Args:
    path: the index folder.
    mmap_mode: None reads the embeddings into memory (and checks they are finite); "r" memory-maps
      them read-only, so only the rows a search touches are read.

  Returns:
    The ``Index``.

  Raises:
    FileNotFoundError: no index (or an interrupted write) at ``path``, or a listed file is missing.
    ValueError: a file disagrees with ``index.json`` (dtype, shape, count) or is not a plain
      numeric .npy array (object arrays are refused without being unpickled).
  """
  if mmap_mode not in (None, "r"):
    raise ValueError(f"mmap_mode={mmap_mode!r}: use None (read into memory) or 'r' (memory-map).")
  path = os.path.abspath(os.fspath(path))
  header_path = os.path.join(path, INDEX_FILE)
  if not os.path.isfile(header_path):
    raise FileNotFoundError(f"{header_path} not found: {path} is not a jaxcl index (or its write "
                            f"was interrupted); write it with IndexWriter (jaxcl embed).")
  try:
    with open(header_path, encoding="utf-8") as f:
      header = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{header_path}: not valid JSON ({e}); {_REWRITE}.") from None
  _check_header(header, header_path)
  shards, ids = [], []
  for shard in header["shards"]:
    emb_path = os.path.join(path, shard["embeddings"])
    shards.append(_load_embeddings(emb_path, shard["count"], header, mmap_mode))
    ids.extend(_load_ids(os.path.join(path, shard["ids"]), shard["count"]))
  return Index(path, header, shards, ids)


def _check_header(header, where):
  def bad(field, want):
    got = header.get(field, "<missing>") if isinstance(header, dict) else header
    raise ValueError(f"{where}: {field} must be {want}; got {got!r}: {_REWRITE}.")

  if not isinstance(header, dict):
    bad("the file", "a JSON object")
  if header.get("format") != FORMAT:
    bad("format", repr(FORMAT))
  if header.get("version") != VERSION:
    bad("version", f"{VERSION} (this jaxcl reads version {VERSION} indexes)")
  for field, least in (("dim", 1), ("count", 0)):
    value = header.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
      bad(field, f"an int >= {least}")
  if header.get("dtype") not in DTYPES:
    bad("dtype", f"one of {DTYPES}")
  if header.get("similarity") not in ranking.SIMILARITIES:
    bad("similarity", f"one of {ranking.SIMILARITIES}")
  if not isinstance(header.get("meta", {}), dict):
    bad("meta", "a JSON object")
  header.setdefault("meta", {})
  shards = header.get("shards")
  if not isinstance(shards, list):
    bad("shards", "a list of {embeddings, ids, count}")
  for i, shard in enumerate(shards):
    if not isinstance(shard, dict):
      bad(f"shards[{i}]", "an object {embeddings, ids, count}")
    for key in ("embeddings", "ids"):
      name = shard.get(key)
      # Plain file names inside the folder only: a hostile index must not point elsewhere.
      if not isinstance(name, str) or not _SAFE_NAME.match(name):
        bad(f"shards[{i}].{key}", "a plain file name inside the index folder")
    count = shard.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
      bad(f"shards[{i}].count", "an int >= 0")
  total = sum(s["count"] for s in shards)
  if total != header["count"]:
    raise ValueError(f"{where}: count is {header['count']} but the shards hold {total} rows; "
                     f"the index is inconsistent: {_REWRITE}.")


def _npy_header(path):
  """(shape, fortran_order, dtype) from a .npy header, read without touching the data."""
  with open(path, "rb") as f:
    try:
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
      if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
      raise ValueError(f"{path}: not a readable .npy array ({e}); {_REWRITE}.") from None
  raise ValueError(f"{path}: .npy format version {version} is not one IndexWriter writes; "
                   f"{_REWRITE}.")


def _load_embeddings(path, count, header, mmap_mode):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} (listed in index.json) is missing; {_REWRITE}.")
  shape, _, dtype = _npy_header(path)
  if dtype.hasobject:
    raise ValueError(f"{path} holds Python objects (dtype {dtype}), not embeddings; refused "
                     f"without unpickling: {_REWRITE}.")
  want = np.dtype(header["dtype"])
  if dtype != want:
    raise ValueError(f"{path} has dtype {dtype} but index.json says {want}; {_REWRITE}.")
  if tuple(shape) != (count, header["dim"]):
    raise ValueError(f"{path} has shape {tuple(shape)} but index.json says ({count}, "
                     f"{header['dim']}); {_REWRITE}.")
  try:
    array = np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
  except (ValueError, OSError, EOFError) as e:
    raise ValueError(f"{path}: unreadable ({e}); the file is truncated or damaged: "
                     f"{_REWRITE}.") from None
  if mmap_mode is None and not np.isfinite(array).all():
    raise ValueError(f"{path} holds NaN or inf values; {_REWRITE}.")
  return array


def _load_ids(path, count):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} (listed in index.json) is missing; {_REWRITE}.")
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 ({e}); {_REWRITE}.") from None
  if count and not text.endswith("\n"):
    raise ValueError(f"{path}: the last line has no newline (truncated file?); {_REWRITE}.")
  ids = text.split("\n")[:-1] if text else []
  if len(ids) != count:
    raise ValueError(f"{path} holds {len(ids)} ids but index.json says {count}; {_REWRITE}.")
  return ids
