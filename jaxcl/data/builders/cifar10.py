"""CIFAR-10 from the user's own `cifar-10-python.tar.gz`, as a TFDS array_record dataset.

The archive (https://www.cs.toronto.edu/~kriz/cifar.html) holds `cifar-10-batches-py/` with the
python pickles data_batch_1..5 (train, 50,000), test_batch (10,000) and batches.meta (label names).
Reading them needs only `tarfile` and `pickle`, so no TensorFlow is involved.
"""

import os
import pickle
import tarfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
_SPLIT_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def find_source(manual_dir: str | os.PathLike) -> str | None:
  """Path of the archive (or of an already extracted folder) in manual_dir, else None."""
  for candidate in (os.path.join(manual_dir, ARCHIVE), os.path.join(manual_dir, FOLDER)):
    if os.path.exists(candidate):
      return candidate
  return None


def _read_pickles(source: str, wanted: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
  """Yields (file name, unpickled dict) for the wanted batch files, from an archive or folder."""
  if os.path.isdir(source):
    for name in wanted:
      with open(os.path.join(source, name), "rb") as f:
        yield name, pickle.load(f, encoding="bytes")
    return
  with tarfile.open(source, "r:gz") as tar:
    for member in tar:
      name = os.path.basename(member.name)
      if member.isfile() and name in wanted:
        yield name, pickle.load(tar.extractfile(member), encoding="bytes")


def _check_label_names(source: str) -> None:
  metas = dict(_read_pickles(source, ("batches.meta",)))
  if not metas:
    raise ValueError(f"{source} has no {FOLDER}/batches.meta; is it the CIFAR-10 python archive?")
  names = tuple(n.decode() for n in metas["batches.meta"][b"label_names"])
  if names != LABEL_NAMES:
    raise ValueError(f"{source}: label names {names} are not CIFAR-10's {LABEL_NAMES}.")


class Cifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
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
    found = set()
    for name, batch in _read_pickles(source, files):
      found.add(name)
      # Rows are 3072 bytes: the red plane, then green, then blue, each 32x32 row-major.
      images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
      for i, (image, label) in enumerate(zip(images, batch[b"labels"])):
        yield f"{name}_{i}", {"image": image, "label": int(label)}
    missing = set(files) - found
    if missing:
      raise ValueError(f"{source} lacks {sorted(missing)}; the archive is incomplete.")
