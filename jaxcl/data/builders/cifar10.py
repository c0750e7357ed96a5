"""CIFAR-10 from the user's own `cifar-10-python.tar.gz`, as a TFDS array_record dataset.

The archive (https://www.cs.toronto.edu/~kriz/cifar.html) holds `cifar-10-batches-py/` with the
python pickles data_batch_1..5 (train, 50,000), test_batch (10,000) and batches.meta (label names).
Reading them needs only `tarfile` and a restricted unpickler, so no TensorFlow is involved.

A pickle can call any importable function while it loads, so an archive from a mirror or a shared
drive could run code as the user. `safe_pickle` builds only what the real files hold (dicts, lists,
bytes, str, ints and uint8 NumPy arrays) and refuses every other global, so loading a file never runs
code; each batch is then checked (shape, dtype, labels) before any of it is written.
"""

import os
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import tensorflow_datasets as tfds

from jaxcl.data.builders import local, safe_pickle
from jaxcl.data.builders.safe_pickle import UnsafePickleError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
_SPLIT_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# A real batch file is ~31 MB (10,000 rows of 3,072 bytes); anything far larger is not one, and is
# refused before it is read.
MAX_MEMBER_BYTES = 200 * 2**20
# The real archive has 8 members; a tar of millions of empty entries would only eat memory.
MAX_MEMBERS = 1000
_ROW_BYTES = 32 * 32 * 3
_FIX = f"re-download {ARCHIVE} from https://www.cs.toronto.edu/~kriz/cifar.html"


def _load(file: BinaryIO, where: str) -> Any:
  """Unpickles one member with ``safe_pickle``; a damaged file raises one ValueError line."""
  try:
    return safe_pickle.load(file, where, dataset="CIFAR-10", fix=_FIX)
  except UnsafePickleError:
    raise
  except (*safe_pickle.DAMAGED_ERRORS, tarfile.TarError, zlib.error) as e:
    raise _damaged(where, e) from e


def _damaged(where: str, error: BaseException) -> ValueError:
  detail = str(error).splitlines()[0] if str(error) else type(error).__name__
  return ValueError(f"{where} is damaged: truncated, empty or not the CIFAR-10 python version "
                    f"({detail}); {_FIX}.")


def find_source(manual_dir: str | os.PathLike) -> str | None:
  """Path of the archive (or of an already extracted folder) in manual_dir, else None."""
  for candidate in (os.path.join(manual_dir, ARCHIVE), os.path.join(manual_dir, FOLDER)):
    if os.path.exists(candidate):
      return candidate
  return None


def _check_size(where: str, size: int) -> None:
  if size > MAX_MEMBER_BYTES:
    raise ValueError(f"{where} is {size:,} bytes, more than any CIFAR-10 batch file "
                     f"({MAX_MEMBER_BYTES:,}); it is not one; {_FIX}.")


def _read_pickles(source: str, wanted: tuple[str, ...]) -> Iterator[tuple[str, str, Any]]:
  """Yields (file name, where, unpickled object) for the wanted batch files.

  Args:
    source: the archive, or the folder it was extracted to.
    wanted: base names of the files to read.

  Yields:
    The file's base name, where it is (for error messages) and what it unpickles to.
  """
  if os.path.isdir(source):
    for name in wanted:
      path = os.path.join(source, name)
      if os.path.isfile(path):  # A missing file is reported by the caller, by name.
        _check_size(path, os.path.getsize(path))
        with open(path, "rb") as f:
          yield name, path, _load(f, path)
    return
  try:
    with tarfile.open(source, "r:gz") as tar:
      for count, member in enumerate(tar):
        if count >= MAX_MEMBERS:
          raise ValueError(f"{source} has more than {MAX_MEMBERS} members; it is not the CIFAR-10 "
                           f"archive; {_FIX}.")
        name = os.path.basename(member.name)
        if member.isfile() and name in wanted:
          where = f"{source} member {member.name}"
          _check_size(where, member.size)
          yield name, where, _load(tar.extractfile(member), where)
  except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
    # Zero bytes, not gzip, or cut short: tarfile and gzip say so in several ways.
    raise _damaged(source, e) from e


def _check_label_names(source: str) -> None:
  metas = [(where, meta) for _, where, meta in _read_pickles(source, ("batches.meta",))]
  if not metas:
    raise ValueError(f"{source} has no {FOLDER}/batches.meta, so it is not the CIFAR-10 python "
                     f"archive; {_FIX}.")
  where, meta = metas[0]
  names = meta.get(b"label_names") if isinstance(meta, dict) else None
  if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
    raise ValueError(f"{where} has no list of label_names; it is not the CIFAR-10 python "
                     f"archive; {_FIX}.")
  names = tuple(n.decode("utf-8", "replace") for n in names)
  if names != LABEL_NAMES:
    raise ValueError(f"{where}: label names {names} are not CIFAR-10's {LABEL_NAMES}; {_FIX}.")


def _checked_batch(where: str, batch: Any) -> tuple[np.ndarray, list[int]]:
  """The (rows, labels) of one unpickled batch, after checking it is a CIFAR-10 batch."""
  if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
    raise ValueError(f"{where} is not a CIFAR-10 batch (no data and labels); {_FIX}.")
  rows, labels = batch[b"data"], batch[b"labels"]
  if (not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2
      or rows.shape[1] != _ROW_BYTES):
    shape = getattr(rows, "shape", None)
    dtype = getattr(rows, "dtype", type(rows).__name__)
    raise ValueError(f"{where}: data is {dtype} {shape}, not uint8 [N, {_ROW_BYTES}] rows of "
                     f"32x32x3 images; {_FIX}.")
  if not isinstance(labels, list) or len(labels) != len(rows):
    raise ValueError(f"{where}: labels are not a list of {len(rows)} ints, one per row; {_FIX}.")
  for i, label in enumerate(labels):
    if (not isinstance(label, (int, np.integer)) or isinstance(label, bool)
        or not 0 <= label < len(LABEL_NAMES)):
      raise ValueError(f"{where}: label {label!r} of row {i} is not a class index 0..9; {_FIX}.")
  return rows, [int(label) for label in labels]


class Cifar10(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR-10 (Krizhevsky, 2009) from the python pickles, stored as raw uint8 tensors."""

  name = "cifar10"
  # TFDS derives the code path through `importlib_resources`, which it does not install; this
  # builder has no checksums file to find there anyway.
  code_path = None
  # Distinct from the TFDS catalog's cifar10 versions (3.x) so both can share one data_dir.
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "From cifar-10-python.tar.gz, uint8 [32,32,3]."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {ARCHIVE} from https://www.cs.toronto.edu/~kriz/cifar.html and place it in the "
      "manual directory.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="CIFAR-10: 60,000 32x32 colour images in 10 classes.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=LABEL_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    )

  def _split_generators(self, dl_manager):
    source = find_source(dl_manager.manual_dir)
    if source is None:
      raise ValueError(f"{ARCHIVE} not found in {dl_manager.manual_dir}. "
                       + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    _check_label_names(source)
    return {split: self._generate_examples(source, files) for split, files in _SPLIT_FILES.items()}

  def _generate_examples(self, source, files):
    # A bad batch raises before any of its rows is yielded; TFDS writes into an `incomplete.*`
    # folder and deletes it on the error, so no partial dataset is left to read.
    found = set()
    for name, where, batch in _read_pickles(source, files):
      found.add(name)
      rows, labels = _checked_batch(where, batch)
      # Rows are 3072 bytes: the red plane, then green, then blue, each 32x32 row-major.
      images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
      for i, (image, label) in enumerate(zip(images, labels)):
        yield f"{name}_{i}", {"image": image, "label": label}
    missing = set(files) - found
    if missing:
      raise ValueError(f"{source} lacks {sorted(missing)}; the archive is incomplete; {_FIX}.")
