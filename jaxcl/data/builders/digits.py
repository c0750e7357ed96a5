"""The UCI handwritten digits that scikit-learn ships, as a TFDS array_record dataset.

1,797 8x8 grey images with values 0..16 in 10 classes (Alpaydin & Kaynak, 1998), rescaled to uint8
0..255 and upsampled to `image_size` so the ordinary crop recipes apply. The train/test split is a
fixed stratified 70/30 split (scikit-learn `train_test_split(..., stratify=labels, random_state=0)`),
1,257 train and 540 test images.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxcl.data.builders import local

TEST_FRACTION = 0.3
SPLIT_SEED = 0
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
  """Stored size and upsampling method; one prepared copy per (size, method)."""

  image_size: int = 32
  resize_method: str = "bilinear"


def config_for(image_size: int, resize_method: str) -> DigitsConfig:
  """The builder config storing digits at `image_size` px upsampled with `resize_method`."""
  if resize_method not in _RESAMPLE:
    raise ValueError(
        f"data.resize_method={resize_method!r} is not one of {sorted(_RESAMPLE)}; set one of those.")
  if image_size < 8:
    raise ValueError(f"data.image_size={image_size} is below the digits' native 8 px; use >= 8.")
  return DigitsConfig(
      name=f"{image_size}px_{resize_method}", image_size=image_size, resize_method=resize_method,
      description=f"8x8 digits upsampled to {image_size}x{image_size} ({resize_method}).")


def rescaled_images() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 digits as uint8 [N,8,8] in 0..255 and int64 labels, in scikit-learn's order."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  bunch = datasets.load_digits()
  # Values are 0..16; x * 255 / 16 rounded maps 16 to exactly 255.
  images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
  return images, bunch.target.astype(np.int64)


def split_indices() -> dict[str, np.ndarray]:
  """Indices into `rescaled_images()` of the fixed stratified train/test split."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  _, labels = rescaled_images()
  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
  return {"train": np.sort(train), "test": np.sort(test)}


def upsample(image: np.ndarray, size: int, method: str) -> np.ndarray:
  """uint8 [8,8] -> uint8 [size,size,1] with PIL's bilinear or nearest resampling."""
  if size == image.shape[0]:
    return image[..., None]
  out = Image.fromarray(image, mode="L").resize((size, size), _RESAMPLE[method])
  return np.asarray(out, dtype=np.uint8)[..., None]


class Digits(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """UCI handwritten digits (scikit-learn), upsampled, stored as raw uint8 tensors."""

  name = "digits"
  # TFDS derives the code path through `importlib_resources`, which it does not install; this
  # builder has no checksums file to find there anyway.
  code_path = None
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Stratified 70/30 split (seed 0), uint8 0..255."}
  # Configs are made per (size, method) by `config_for`; none is listed, since TFDS rejects a
  # config equal to a listed one but not the same object (as after pickling into a Grain worker).
  BUILDER_CONFIGS = []

  def _create_builder_config(self, builder_config, version):
    # Every DigitsConfig is a valid custom config; skip TFDS's "custom configuration" warning.
    if isinstance(builder_config, DigitsConfig):
      return builder_config
    return super()._create_builder_config(builder_config, version)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description="UCI handwritten digits from scikit-learn, 10 classes.",
        # A raw uint8 Tensor needs no TensorFlow to encode (the Image feature does).
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    return {split: self._generate_examples(idx) for split, idx in split_indices().items()}

  def _generate_examples(self, indices):
    images, labels = rescaled_images()
    cfg = self.builder_config
    for i in indices:
      yield int(i), {"image": upsample(images[i], cfg.image_size, cfg.resize_method),
                     "label": int(labels[i])}
