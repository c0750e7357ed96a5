"""Colour distortions: brightness, contrast, saturation, hue (in a random order), and grayscale.

Semantics follow torchvision's ``ColorJitter`` and ``RandomGrayscale`` on float images, which SimCLR
(Chen et al. 2020, Appendix A), MoCo v2 and BYOL use. Images are [H, W, C] float in [0, 1] with C = 3
(RGB) or C = 1 (gray). On one channel, brightness and contrast act as usual; saturation, hue and
grayscale have nothing to change and are the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ITU-R BT.601 luma weights (the ones PIL's convert("L") and torchvision use).
_LUMA_601 = (0.299, 0.587, 0.114)


def _channels(image: jax.Array) -> int:
  c = image.shape[-1]
  if c not in (1, 3):
    raise ValueError(f"images must be [H, W, C] with C = 1 or 3, got shape {image.shape}")
  return c


def rgb_to_grayscale(image: jax.Array) -> jax.Array:
  """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, kept as C channels. Gray images pass through."""
  if _channels(image) == 1:
    return image
  gray = image[..., 0] * _LUMA_601[0] + image[..., 1] * _LUMA_601[1] + image[..., 2] * _LUMA_601[2]
  return jnp.broadcast_to(gray[..., None], image.shape)


def rgb_to_hsv(image: jax.Array) -> jax.Array:
  """RGB [..., 3] in [0, 1] to HSV [..., 3] with hue in [0, 1), as Python's ``colorsys.rgb_to_hsv``."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  maxc = jnp.max(image, axis=-1)
  minc = jnp.min(image, axis=-1)
  delta = maxc - minc
  safe_delta = jnp.where(delta > 0, delta, 1.0)
  s = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
  h = jnp.where(r == maxc, bc - gc, jnp.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.where(delta > 0, jnp.mod(h / 6.0, 1.0), 0.0)
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """HSV [..., 3] (hue in [0, 1)) to RGB, as ``colorsys.hsv_to_rgb``, written without branches."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  # Channel n's value drops from v along the hue circle: R at n=5, G at n=3, B at n=1.
  def channel(n):
    k = jnp.mod(n + h * 6.0, 6.0)
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
  """Scales intensities by ``factor`` (blend with black)."""
  return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
  """Blends with the mean of the grayscale image: ``factor * x + (1 - factor) * mean(gray(x))``."""
  mean = jnp.mean(rgb_to_grayscale(image)[..., 0])
  return jnp.clip(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
  """Blends with the grayscale image: ``factor * x + (1 - factor) * gray(x)``."""
  return jnp.clip(factor * image + (1.0 - factor) * rgb_to_grayscale(image), 0.0, 1.0)


def adjust_hue(image: jax.Array, shift: jax.Array) -> jax.Array:
  """Rotates the hue by ``shift`` (a fraction of the colour circle, in [-0.5, 0.5]) in HSV space."""
  if _channels(image) == 1:
    return image
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + shift, 1.0))
  return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)


def color_jitter(
    key: jax.Array,
    image: jax.Array,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
) -> jax.Array:
  """Random colour distortion in a random order (SimCLR, Chen et al. 2020; torchvision ``ColorJitter``).

  Factors are drawn uniformly: brightness, contrast and saturation from ``[max(0, 1 - x), 1 + x]``,
  the hue shift from ``[-hue, hue]``. The four operations (those with non-zero strength) are applied
  in an order drawn per call. Strengths are Python numbers (static); an op with strength 0 is skipped,
  so all-zero strengths return the image unchanged.

  Args:
    key: PRNG key.
    image: float image [H, W, C] in [0, 1], C = 1 or 3.
    brightness: brightness strength, >= 0.
    contrast: contrast strength, >= 0.
    saturation: saturation strength, >= 0 (no effect on one channel).
    hue: hue strength in [0, 0.5] (no effect on one channel).

  Returns:
    float32 image of the same shape, in [0, 1].
  """
  for name, value in (("brightness", brightness), ("contrast", contrast),
                      ("saturation", saturation), ("hue", hue)):
    if value < 0:
      raise ValueError(f"color_jitter {name} must be >= 0, got {value}")
  if hue > 0.5:
    raise ValueError(f"color_jitter hue must be in [0, 0.5], got {hue}")
  gray = _channels(image) == 1
  image = image.astype(jnp.float32)
  k_order, k_b, k_c, k_s, k_h, k_slot = jax.random.split(key, 6)

  def factor(k, strength):
    return jax.random.uniform(k, minval=max(0.0, 1.0 - strength), maxval=1.0 + strength)

  # Brightness, contrast and saturation are all blends ``f * x + (1 - f) * ref`` with a different
  # reference (black, the mean gray level, the pixel's gray level), so one blend step with a selected
  # reference applies whichever of them the order asks for. Under vmap this costs one cheap blend per
  # step instead of evaluating every op at every position.
  kinds, factors = [], []
  for kind, (k, strength) in enumerate(((k_b, brightness), (k_c, contrast), (k_s, saturation))):
    if strength > 0 and not (gray and kind == 2):
      kinds.append(kind)
      factors.append(factor(k, strength))
  use_hue = hue > 0 and not gray
  if not kinds and not use_hue:
    return image
  n = len(kinds)
  perm = jax.random.permutation(k_order, n) if n > 1 else jnp.zeros((n,), jnp.int32)
  # jnp.take rather than indexing: inside shard_map a constant indexed by a per-device permutation
  # is a gather whose operands differ in varying manual axes, which check_vma rejects.
  kinds_in_order = jnp.take(jnp.asarray(kinds, jnp.int32), perm) if n else None
  factors_in_order = jnp.stack(factors)[perm] if n else None

  def blend_step(x, j, active):
    kind = kinds_in_order[j]
    f = jnp.where(active, factors_in_order[j], 1.0)
    luma = rgb_to_grayscale(x)
    ref = jnp.where(kind == 0, 0.0, jnp.where(kind == 1, jnp.mean(luma[..., 0]), luma))
    return jnp.clip(f * x + (1.0 - f) * ref, 0.0, 1.0)

  if not use_hue:
    for j in range(n):
      image = blend_step(image, j, True)
    return image
  # A uniform order of all four ops = a uniform order of the blends and a uniform slot for the hue
  # shift among them: blends before the slot, the (expensive, nonlinear) hue shift once, the rest after.
  slot = jax.random.randint(k_slot, (), 0, n + 1)
  for j in range(n):
    image = blend_step(image, j, j < slot)
  image = adjust_hue(image, jax.random.uniform(k_h, minval=-hue, maxval=hue))
  for j in range(n):
    image = blend_step(image, j, j >= slot)
  return image


def random_grayscale(key: jax.Array, image: jax.Array, *, p: float = 0.2) -> jax.Array:
  """With probability ``p``, replaces the image by its BT.601 luma on every channel.

  Args:
    key: PRNG key.
    image: float image [H, W, C], C = 1 or 3 (one channel is returned unchanged).
    p: probability of converting.

  Returns:
    float32 image of the same shape.
  """
  image = image.astype(jnp.float32)
  if _channels(image) == 1 or p <= 0:
    return image
  return jnp.where(jax.random.bernoulli(key, p), rgb_to_grayscale(image), image)
