"""Writing an index folder (the format is ``jaxcl.serve.index``'s): all-or-nothing, in shards.

``IndexWriter`` writes into a hidden sibling folder (``.<name>.partial-XXXX``) and writes
``index.json`` last; only when ``close()`` (the end of the ``with`` block) has written everything is
that folder renamed to ``out_dir``. An exception inside the ``with`` block deletes the partial
folder; a killed process leaves it behind, but ``out_dir`` never appears and the partial folder has
no ``index.json``, so nothing half-written loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from jaxcl.evaluate import ranking
from jaxcl.serve import index

_FLOAT16_MAX = float(np.finfo(np.float16).max)


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
    if dtype not in index.DTYPES:
      raise ValueError(f"dtype={dtype!r}: use one of {index.DTYPES}.")
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
      header = {"format": index.FORMAT, "version": index.VERSION, "dim": self.dim,
                "count": self.count, "dtype": self.dtype, "similarity": self.similarity,
                "shards": self._shards, "meta": self.meta}
      with open(os.path.join(self._tmp, index.INDEX_FILE), "w", encoding="utf-8") as f:
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
