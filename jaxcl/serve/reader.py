"""Reading an index folder (the format is ``jaxcl.serve.index``'s) without running code from it.

``index.json`` is parsed as JSON, every ``.npy`` header is checked (dtype, shape) before
``np.load(allow_pickle=False)`` reads the data, file names must be plain names inside the folder, and
every count and shape is checked against ``index.json``.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from jaxcl.evaluate import ranking
from jaxcl.serve import index

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def load_index(path: str | os.PathLike, *, mmap_mode: str | None = None) -> index.Index:
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
  header_path = os.path.join(path, index.INDEX_FILE)
  if not os.path.isfile(header_path):
    raise FileNotFoundError(f"{header_path} not found: {path} is not a jaxcl index (or its write "
                            f"was interrupted); write it with IndexWriter (jaxcl embed).")
  try:
    with open(header_path, encoding="utf-8") as f:
      header = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{header_path}: not valid JSON ({e}); {index.REWRITE}.") from None
  _check_header(header, header_path)
  shards, ids = [], []
  for shard in header["shards"]:
    emb_path = os.path.join(path, shard["embeddings"])
    shards.append(_load_embeddings(emb_path, shard["count"], header, mmap_mode))
    ids.extend(_load_ids(os.path.join(path, shard["ids"]), shard["count"]))
  return index.Index(path, header, shards, ids)


def _check_header(header, where):
  def bad(field, want):
    got = header.get(field, "<missing>") if isinstance(header, dict) else header
    raise ValueError(f"{where}: {field} must be {want}; got {got!r}: {index.REWRITE}.")

  if not isinstance(header, dict):
    bad("the file", "a JSON object")
  if header.get("format") != index.FORMAT:
    bad("format", repr(index.FORMAT))
  if header.get("version") != index.VERSION:
    bad("version", f"{index.VERSION} (this jaxcl reads version {index.VERSION} indexes)")
  for field, least in (("dim", 1), ("count", 0)):
    value = header.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
      bad(field, f"an int >= {least}")
  if header.get("dtype") not in index.DTYPES:
    bad("dtype", f"one of {index.DTYPES}")
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
                     f"the index is inconsistent: {index.REWRITE}.")


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
      raise ValueError(f"{path}: not a readable .npy array ({e}); {index.REWRITE}.") from None
  raise ValueError(f"{path}: .npy format version {version} is not one IndexWriter writes; "
                   f"{index.REWRITE}.")


def _load_embeddings(path, count, header, mmap_mode):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} (listed in index.json) is missing; {index.REWRITE}.")
  shape, _, dtype = _npy_header(path)
  if dtype.hasobject:
    raise ValueError(f"{path} holds Python objects (dtype {dtype}), not embeddings; refused "
                     f"without unpickling: {index.REWRITE}.")
  want = np.dtype(header["dtype"])
  if dtype != want:
    raise ValueError(f"{path} has dtype {dtype} but index.json says {want}; {index.REWRITE}.")
  if tuple(shape) != (count, header["dim"]):
    raise ValueError(f"{path} has shape {tuple(shape)} but index.json says ({count}, "
                     f"{header['dim']}); {index.REWRITE}.")
  try:
    array = np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
  except (ValueError, OSError, EOFError) as e:
    raise ValueError(f"{path}: unreadable ({e}); the file is truncated or damaged: "
                     f"{index.REWRITE}.") from None
  if mmap_mode is None and not np.isfinite(array).all():
    raise ValueError(f"{path} holds NaN or inf values; {index.REWRITE}.")
  return array


def _load_ids(path, count):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} (listed in index.json) is missing; {index.REWRITE}.")
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 ({e}); {index.REWRITE}.") from None
  if count and not text.endswith("\n"):
    raise ValueError(f"{path}: the last line has no newline (truncated file?); {index.REWRITE}.")
  ids = text.split("\n")[:-1] if text else []
  if len(ids) != count:
    raise ValueError(f"{path} holds {len(ids)} ids but index.json says {count}; {index.REWRITE}.")
  return ids
