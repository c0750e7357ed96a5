"""Inception-style random resized crop, with the crop box and the resampling as separate pure functions.

The box follows Szegedy et al., "Going deeper with convolutions" (2015), as torchvision's
``RandomResizedCrop`` implements it (the crop SimCLR, MoCo and BYOL use): up to 10 tries of an area
fraction drawn uniformly from ``scale`` and an aspect ratio drawn log-uniformly from ``ratio``; the first
try that fits inside the image wins; if none fits, a centre crop of the whole image clamped to the ratio
range. Here the 10 tries are drawn at once and the first valid one is selected, so the function has no
data-dependent control flow and runs under ``jit``/``vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _check_range(name: str, value: Sequence[float], *, low: float) -> tuple[float, float]:
  if len(value) != 2 or not low < value[0] <= value[1]:
    raise ValueError(f"{name} must be a pair (min, max) with {low} < min <= max, got {value!r}")
  return float(value[0]), float(value[1])


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
  """The whole-image centre crop, clamped to the ratio range (torchvision's fallback)."""
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def crop_box(
    key: jax.Array,
    height: int,
    width: int,
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> jax.Array:
  """Samples an Inception-style crop box (Szegedy et al. 2015; torchvision ``RandomResizedCrop``).

  Args:
    key: PRNG key.
    height: image height in pixels (static).
    width: image width in pixels (static).
    scale: range of the crop area as a fraction of the image area, sampled uniformly.
    ratio: range of the crop aspect ratio width/height, sampled log-uniformly.
    attempts: number of tries before falling back to the clamped whole-image centre crop.

  Returns:
    int32 array ``[top, left, crop_height, crop_width]``.
  """
  scale = _check_range("scale", scale, low=0.0)
  ratio = _check_range("ratio", ratio, low=0.0)
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width
  target_area = area * jax.random.uniform(k_area, (attempts,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(
      k_ratio, (attempts,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])))
  # Round half to even, as Python's round() in the reference does.
  w = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
  h = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
  valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = jnp.argmax(valid)  # index of the first valid try (0 if none, then unused)
  found = jnp.any(valid)
  f_top, f_left, f_h, f_w = _fallback_box(height, width, ratio)
  h = jnp.where(found, h[first], f_h)
  w = jnp.where(found, w[first], f_w)
  # Uniform integer offsets in [0, height - h] and [0, width - w].
  top = jnp.minimum(jnp.floor(jax.random.uniform(k_top) * (height - h + 1)), height - h)
  left = jnp.minimum(jnp.floor(jax.random.uniform(k_left) * (width - w + 1)), width - w)
  top = jnp.where(found, top.astype(jnp.int32), f_top)
  left = jnp.where(found, left.astype(jnp.int32), f_left)
  return jnp.stack([top, left, h, w]).astype(jnp.int32)


def _resample_weights(in_size: int, out_size: int, start: jax.Array, length: jax.Array) -> jax.Array:
  """[out_size, in_size] bilinear (triangle-filter) weights that read only pixels inside the crop.

  Pixel centres are aligned (``align_corners=False``). When downsampling, the triangle is widened by
  the scale factor, as PIL and torchvision's ``antialias=True`` do, so small views do not alias.
  """
  length = length.astype(jnp.float32)
  step = length / out_size  # input pixels per output pixel
  centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * step - 0.5
  support = jnp.maximum(step, 1.0)
  idx = jnp.arange(in_size, dtype=jnp.float32)
  w = jnp.maximum(0.0, 1.0 - jnp.abs(idx[None, :] - centres[:, None]) / support)
  inside = (idx >= start) & (idx < start + length)
  w = jnp.where(inside[None, :], w, 0.0)
  # Renormalising over in-crop pixels repeats the crop's edge, like resizing the cropped image.
  return w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-12)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
  pair = (size, size) if isinstance(size, int) else tuple(size)
  if len(pair) != 2 or min(pair) < 1:
    raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
  return int(pair[0]), int(pair[1])


def resized_crop(image: jax.Array, box: jax.Array, *, size: int | Sequence[int]) -> jax.Array:
  """Crops ``box`` = [top, left, h, w] out of ``image`` [H, W, C] and resizes it bilinearly to ``size``.

  The box may be traced; the output shape depends only on ``size``. The resampling is two small
  matrix products (rows, then columns), which map well to accelerators.

  Args:
    image: float image [H, W, C].
    box: int array [top, left, crop_height, crop_width], inside the image.
    size: output side, or (height, width).

  Returns:
    float32 image [size_h, size_w, C].
  """
  out_h, out_w = _size_pair(size)
  height, width = image.shape[0], image.shape[1]
  box = jnp.asarray(box)
  wy = _resample_weights(height, out_h, box[0], box[2])
  wx = _resample_weights(width, out_w, box[1], box[3])
  out = jnp.einsum("yh,hwc,xw->yxc", wy, image.astype(jnp.float32), wx)
  return jnp.clip(out, 0.0, 1.0)


def random_resized_crop(
    key: jax.Array,
    image: jax.Array,
    *,
    size: int | Sequence[int],
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> jax.Array:
  """Inception-style random resized crop (Szegedy et al. 2015), as used by SimCLR (Chen et al. 2020).

  Args:
    key: PRNG key.
    image: float image [H, W, C] in [0, 1].
    size: output side, or (height, width).
    scale: range of the crop area as a fraction of the image area.
    ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.

  Returns:
    float32 image [size, size, C] in [0, 1].
  """
  box = crop_box(key, image.shape[0], image.shape[1], scale=scale, ratio=ratio)
  return resized_crop(image, box, size=size)
