"""Animal-Shape, the silhouettes the `animal-shape-mnist` package ships, as a TFDS array_record dataset.

10,000 28x28 grey silhouettes of animals, 1,000 in each of 10 classes (bear, bird, cat, cow, dog,
elephant, giraffe, horse, sheep, zebra; MIT licence, Sina Mohammadi 2025), installed with jaxcl as the
package `animal-shape-mnist`: a real image dataset of objects, not digits, that needs no download. The
package stores each array as a gzipped NumPy pickle; they are read with `safe_pickle` (containers and
arrays only, nothing is run; the package's own loader, which unpickles and imports TensorFlow, is
never imported), size-bounded before they are decompressed, and checked before anything is written.
The train/test split is a fixed stratified 80/20 split (scikit-learn `train_test_split(...,
stratify=labels, random_state=0)`), 8,000 train and 2,000 test images.
"""

import gzip
import io
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from jaxcl import extras
from jaxcl.data.builders import local, safe_pickle

PACKAGE = "animal_shape_mnist"
CLASS_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
NUM_IMAGES, SIDE = 10_000, 28
_FILES = {"images": "animal_data_version_3.gz", "labels": "animal_label_version_3.gz"}
# The real arrays unpickled: 7,840,164 and 80,160 bytes; a file that inflates beyond these bounds is
# not one of them and is refused before it fills memory.
_MAX_BYTES = {"images": 8 * 2**20, "labels": 2**17}
TEST_FRACTION = 0.2
SPLIT_SEED = 0
_FIX = "reinstall it: pip install --force-reinstall animal-shape-mnist==0.39"


def data_dir() -> str:
  """The folder of the installed package's arrays (found without importing the package)."""
  what = "dataset 'animal_shapes' (shipped in the animal-shape-mnist wheel)"
  return os.path.join(extras.package_dir(PACKAGE, "shapes", what), "data", "Animal Shape")


def _read(kind: str) -> np.ndarray:
  path = os.path.join(data_dir(), _FILES[kind])
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read(_MAX_BYTES[kind] + 1)
    if len(raw) > _MAX_BYTES[kind]:
      raise ValueError(f"inflates to more than {_MAX_BYTES[kind]:,} bytes")
    array = safe_pickle.load(io.BytesIO(raw), path, dataset="Animal-Shape", fix=_FIX)
  except safe_pickle.UnsafePickleError:
    raise
  except (*safe_pickle.DAMAGED_ERRORS, zlib.error, gzip.BadGzipFile) as e:
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"{path} is damaged or not the Animal-Shape {kind} ({detail}); {_FIX}.") from e
  want = ((NUM_IMAGES, SIDE, SIDE), np.uint8) if kind == "images" else ((NUM_IMAGES,), np.int64)
  if not isinstance(array, np.ndarray) or (array.shape, array.dtype) != want:
    got = (getattr(array, "shape", None), getattr(array, "dtype", type(array).__name__))
    raise ValueError(f"{path} holds {got}, not the Animal-Shape {kind} {want}; {_FIX}.")
  return array


def images_and_labels() -> tuple[np.ndarray, np.ndarray]:
  """All 10,000 images uint8 [N, 28, 28] and labels int64 [N] (0..9, ``CLASS_NAMES`` order)."""
  images, labels = _read("images"), _read("labels")
  if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
    raise ValueError(f"labels outside 0..{len(CLASS_NAMES) - 1} in {data_dir()}; {_FIX}.")
  return images, labels


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Indices of the fixed stratified train/test split."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
  return {"train": np.sort(train), "test": np.sort(test)}


class AnimalShapes(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Animal-Shape silhouettes (the animal-shape-mnist package), stored as raw uint8 tensors."""

  name = "animal_shapes"
  # TFDS derives the code path through `importlib_resources`, which it does not install; this
  # builder has no checksums file to find there anyway.
  code_path = None
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "animal-shape-mnist 0.39, stratified 80/20 split (seed 0)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Animal-Shape: 10,000 28x28 animal silhouettes in 10 classes.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(SIDE, SIDE, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://pypi.org/project/animal-shape-mnist/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with an installed package.
    images, labels = images_and_labels()  # checked whole before any split is written
    return {split: self._generate_examples(images, labels, idx)
            for split, idx in split_indices(labels).items()}

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {"image": images[i][..., None], "label": int(labels[i])}
