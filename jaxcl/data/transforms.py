"""Per-example transforms run by Grain, in the main process or in worker processes.

They are module-level classes holding only plain values, so Grain's spawned workers can unpickle them
by import path (a lambda or a closure would not survive `spawn`).
"""

import dataclasses
from typing import Any

import grain
import numpy as np
from PIL import Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def resize_and_crop(image: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
  """uint8 [H,W,C] -> uint8 [size,size,C]: shorter side to `size`, then the centre square.

  This is the usual evaluation-style resize (e.g. ImageNet at 224); training crops and flips happen
  later on the accelerator (jaxcl.augment), so the host does one cheap, deterministic resize.
  """
  h, w = image.shape[:2]
  if (h, w) == (size, size):
    return image
  scale = size / min(h, w)
  new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
  channels = image.shape[2]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((new_w, new_h), _RESAMPLE[method]), dtype=np.uint8)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  out = out[top:top + size, left:left + size]
  return out[..., None] if channels == 1 else out


def to_sequence(x: np.ndarray, length: int | None) -> np.ndarray:
  """float32 [length, C] of audio [T] or a signal [T, C]: integer samples scaled to [-1, 1] (int16 by
  1/32768), the first ``length`` steps kept, a shorter sequence zero-padded at the end."""
  x = x[:, None] if x.ndim == 1 else x
  if np.issubdtype(x.dtype, np.integer):
    x = x.astype(np.float32) / (np.iinfo(x.dtype).max + 1)
  x = x.astype(np.float32, copy=False)
  if length is None or len(x) == length:
    return x
  out = np.zeros((length, x.shape[1]), np.float32)
  out[:min(length, len(x))] = x[:length]
  return out


@dataclasses.dataclass(frozen=True)
class ToImageLabel(grain.transforms.Map):
  """A decoded TFDS example -> dict(image=uint8 [S,S,C], label=int32 scalar); a sequence (any
  non-uint8 [T] or [T, C] feature) becomes float32 [sequence_length, C] (``to_sequence``) under the
  key "image"."""

  image_key: str = "image"
  label_key: str = "label"
  image_size: int | None = None
  resize_method: str = "bilinear"
  sequence_length: int | None = None

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    image = np.asarray(element[self.image_key])
    if image.dtype != np.uint8 and image.ndim <= 2:  # a sequence: audio [T] or a signal [T, C]
      return {"image": to_sequence(image, self.sequence_length),
              "label": np.asarray(element[self.label_key], dtype=np.int32)}
    if image.ndim == 2:
      image = image[..., None]
    if image.dtype != np.uint8:
      raise ValueError(f"expected uint8 images in feature {self.image_key!r}, got {image.dtype}.")
    if self.image_size is not None:
      image = resize_and_crop(image, self.image_size, self.resize_method)
    return {"image": image, "label": np.asarray(element[self.label_key], dtype=np.int32)}


@dataclasses.dataclass(frozen=True)
class ToImageCaption(grain.transforms.Map):
  """A decoded example of an image-caption dataset -> ``ToImageLabel``'s dict(image, label) plus
  ``caption_ids`` int32 [max_length]: the caption tokenized by ``encoder`` (a
  ``jaxcl.data.text.TextEncoder``, which pickles as its tokenizer's JSON for Grain's workers)."""

  images: ToImageLabel
  encoder: Any
  caption_key: str = "caption"

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    out = self.images.map(element)
    caption = element[self.caption_key]
    caption = caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)
    out["caption_ids"] = np.asarray(self.encoder([caption])[0][0], np.int32)
    return out
