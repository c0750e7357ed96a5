"""Reading a prepared image-caption dataset (``jaxcl prepare-data --from_captions FILE --name NAME``).

  cfg = jaxcl.data.default_config("my_captions")
  captions.is_caption_dataset(cfg)            # True: its examples have a "caption"
  captions.info(cfg)                          # CaptionInfo(image_shape=(64, 64, 3), num_images=...)
  test = captions.load_captions(cfg, "test")  # each image once, every caption, caption -> image
  it = jaxcl.data.train_iterator(cfg, seed=0, global_batch_size=64,
                                 caption_encoder=jaxcl.data.text.TextEncoder(tok, 32))

The features and splits are those of ``jaxcl.data.builders.captions``: one row per (image, caption)
pair, ``label`` the image's index. The run's tokenizer is trained on the training captions by
``jaxcl.data.text.tokenizer_for`` (``training_texts`` reads a caption dataset's captions).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from jaxcl.data import pipeline, sources

CAPTION_KEY = "caption"


@dataclasses.dataclass(frozen=True)
class CaptionInfo:
  """Sizes of an image-caption dataset: images over all splits, and captions (rows) per split."""

  image_shape: tuple[int, int, int]
  num_images: int
  num_train: int
  num_test: int


@dataclasses.dataclass(frozen=True)
class CaptionSet:
  """One split as evaluation reads it: each image once, and every caption of those images.

  Attributes:
    images: uint8 [M, H, W, C], in order of first appearance in the stored split.
    image_ids: [M] the images' paths as stored.
    captions: [C] the captions.
    caption_image: int32 [C], the row of ``images`` each caption describes.
  """

  images: np.ndarray
  image_ids: list[str]
  captions: list[str]
  caption_image: np.ndarray


def _str(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def is_caption_dataset(cfg: ml_collections.ConfigDict) -> bool:
  """Whether ``cfg.name`` is a prepared dataset of images with captions (jaxcl's own are not)."""
  if cfg.name in sources.EMBEDDED:
    return False
  try:
    features = sources.builder(cfg).info.features
  except (ValueError, OSError):
    return False
  return CAPTION_KEY in features and cfg.image_key in features


def info(cfg: ml_collections.ConfigDict) -> CaptionInfo:
  """The stored image shape (or ``data.image_size``'s), the image count and the captions per split."""
  b = sources.builder(cfg)
  if CAPTION_KEY not in b.info.features:
    raise ValueError(f"{cfg.name} has no captions (features: {sorted(b.info.features)}); prepare "
                     "one with `jaxcl prepare-data --from_captions FILE --name NAME`.")
  image = sources.info(cfg).image_shape
  splits = {name: split.num_examples for name, split in b.info.splits.items()}
  return CaptionInfo(image_shape=tuple(image), num_images=int(b.info.features["label"].num_classes),
                     num_train=splits.get(cfg.train_split, 0), num_test=splits.get(cfg.eval_split, 0))


def load_captions(cfg: ml_collections.ConfigDict, split: str, *, max_images: int = 0) -> CaptionSet:
  """Every image of ``split`` once (resized as training reads it) and all their captions.

  Args:
    cfg: the data config.
    split: "train" or "test" mean ``cfg.train_split`` and ``cfg.eval_split``; else a TFDS split.
    max_images: > 0 keeps the first ``max_images`` images (and only their captions).
  """
  name = {"train": cfg.train_split, "test": cfg.eval_split}.get(split, split)
  source = sources.data_source(cfg, name, field="split")
  transform = pipeline._example_transform(cfg)  # pylint: disable=protected-access
  row_of: dict[str, int] = {}
  images, captions, caption_image = [], [], []
  for index in range(len(source)):
    example = source[index]
    image_id = _str(example["image_id"])
    if image_id not in row_of:
      if max_images and len(row_of) >= max_images:
        continue
      row_of[image_id] = len(row_of)
      images.append(transform.map(example)["image"])
    captions.append(_str(example[CAPTION_KEY]))
    caption_image.append(row_of[image_id])
  if not images:
    raise ValueError(f"{cfg.name} split {name!r} has no images; prepare it with a larger "
                     "--test_fraction or choose another split.")
  return CaptionSet(np.stack(images), list(row_of), captions, np.asarray(caption_image, np.int32))
