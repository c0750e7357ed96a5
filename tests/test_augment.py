"""Tests of jaxcl.augment against independent references: PIL, colorsys, scipy.ndimage, NumPy."""

import colorsys
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from jaxcl import augment
from jaxcl.augment import color, crop


def _image(seed=0, shape=(16, 16, 3)):
  return np.random.default_rng(seed).random(shape).astype(np.float32)


def _in_unit_range(x):
  x = np.asarray(x)
  return x.min() >= 0.0 and x.max() <= 1.0


# ---------------------------------------------------------------- single ops: range and shape

@pytest.mark.parametrize("channels", [3, 1])
def test_ops_keep_shape_dtype_and_unit_range(channels):
  img = jnp.asarray(_image(1, (16, 12, channels)))
  keys = jax.random.split(jax.random.key(0), 8)
  cases = {
      "crop": (functools.partial(augment.random_resized_crop, size=10), (10, 10, channels)),
      "flip": (augment.random_flip, img.shape),
      "jitter": (functools.partial(augment.color_jitter, brightness=0.8, contrast=0.8,
                                   saturation=0.8, hue=0.2), img.shape),
      "gray": (functools.partial(augment.random_grayscale, p=0.5), img.shape),
      "blur": (functools.partial(augment.gaussian_blur, kernel_size=5), img.shape),
      "solarize": (augment.solarize, img.shape),
      "apply": (functools.partial(augment.random_apply, fn=augment.solarize, p=0.5), img.shape),
  }
  # One jit over all ops: a single compile instead of op-by-op eager dispatch.
  outs = jax.jit(lambda k, x: {name: jax.vmap(fn, in_axes=(0, None))(k, x)
                               for name, (fn, _) in cases.items()})(keys, img)
  for name, (_, shape) in cases.items():
    out = outs[name]
    assert out.shape == (8,) + shape, name
    assert out.dtype == jnp.float32, name
    assert _in_unit_range(out), name


# ---------------------------------------------------------------- crop

def _torchvision_box(rng, height, width, scale, ratio):
  """NumPy transcription of torchvision RandomResizedCrop.get_params (the reference semantics)."""
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("scale,ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.05, 0.14), (0.5, 2.0))])
def test_crop_box_follows_requested_ranges(scale, ratio):
  height, width, n = 64, 48, 2000
  boxes = np.asarray(jax.jit(jax.vmap(functools.partial(
      crop.crop_box, height=height, width=width, scale=scale, ratio=ratio)))(
          jax.random.split(jax.random.key(1), n)))
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= height).all() and (left + w <= width).all()
  frac, log_ar = h * w / (height * width), np.log(w / h)
  # Rounding to whole pixels moves the edges by at most half a pixel.
  assert frac.min() >= scale[0] * 0.85 and frac.max() <= min(1.0, scale[1] * 1.15)
  assert log_ar.min() >= math.log(ratio[0]) - 0.06 and log_ar.max() <= math.log(ratio[1]) + 0.06
  rng = np.random.default_rng(0)
  ref = np.array([_torchvision_box(rng, height, width, scale, ratio) for _ in range(n)])
  ref_frac, ref_log_ar = ref[:, 2] * ref[:, 3] / (height * width), np.log(ref[:, 3] / ref[:, 2])
  q = [0.1, 0.25, 0.5, 0.75, 0.9]
  np.testing.assert_allclose(np.quantile(frac, q), np.quantile(ref_frac, q), atol=0.04)
  np.testing.assert_allclose(np.quantile(log_ar, q), np.quantile(ref_log_ar, q), atol=0.06)
  # Offsets are uniform over the free space: centres spread evenly around the image centre.
  assert abs(np.mean(top + h / 2) - height / 2) < 1.5 and abs(np.mean(left + w / 2) - width / 2) < 1.5


def test_crop_box_falls_back_to_ratio_clamped_centre_crop():
  # With scale (1, 1) no try fits a 32x64 image (its ratio 2 is outside [3/4, 4/3]).
  box = crop.crop_box(jax.random.key(0), 32, 64, scale=(1.0, 1.0), ratio=(3 / 4, 4 / 3))
  np.testing.assert_array_equal(np.asarray(box), _torchvision_box(np.random.default_rng(0), 32, 64,
                                                                    (1.0, 1.0), (3 / 4, 4 / 3)))
  np.testing.assert_array_equal(np.asarray(box), [0, 10, 32, 43])


@pytest.mark.parametrize("box,size", [((5, 7, 10, 12), 16), ((3, 2, 40, 30), 16), ((0, 0, 48, 40), 9)])
def test_resized_crop_matches_pil_crop_then_bilinear_resize(box, size):
  img = _image(2, (48, 40))
  t, l, h, w = box
  ref = np.asarray(Image.fromarray(img[t:t + h, l:l + w], mode="F").resize((size, size), Image.BILINEAR))
  out = np.asarray(crop.resized_crop(jnp.asarray(img)[..., None], jnp.array(box), size=size))[..., 0]
  np.testing.assert_allclose(out, np.clip(ref, 0.0, 1.0), atol=1e-5)


def test_resized_crop_of_whole_image_at_same_size_is_identity():
  img = _image(3, (12, 10, 3))
  out = crop.resized_crop(jnp.asarray(img), jnp.array([0, 0, 12, 10]), size=(12, 10))
  np.testing.assert_allclose(np.asarray(out), img, atol=1e-6)


# ---------------------------------------------------------------- colour

def test_zero_strength_jitter_and_neutral_factors_are_identity():
  img = _image(4)
  np.testing.assert_array_equal(np.asarray(augment.color_jitter(jax.random.key(0), img)), img)
  # The neutral factor of each op (the HSV round trip included) returns the image.
  for out in (color.adjust_brightness(img, 1.0), color.adjust_contrast(img, 1.0),
              color.adjust_saturation(img, 1.0), color.adjust_hue(img, 0.0)):
    np.testing.assert_allclose(np.asarray(out), img, atol=1e-6)


def test_brightness_contrast_saturation_match_numpy():
  img = _image(5)
  gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
  np.testing.assert_allclose(color.adjust_brightness(img, 1.3), np.clip(img * 1.3, 0, 1), atol=1e-6)
  np.testing.assert_allclose(color.adjust_contrast(img, 0.6),
                             np.clip(0.6 * img + 0.4 * gray.mean(), 0, 1), atol=1e-6)
  np.testing.assert_allclose(color.adjust_saturation(img, 1.7),
                             np.clip(1.7 * img - 0.7 * gray[..., None], 0, 1), atol=1e-6)


def test_grayscale_uses_bt601_weights_and_keeps_channels():
  img = _image(6)
  expected = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
  out = np.asarray(augment.random_grayscale(jax.random.key(0), img, p=1.0))
  assert out.shape == img.shape
  for c in range(3):
    np.testing.assert_allclose(out[..., c], expected, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(augment.random_grayscale(jax.random.key(0), img, p=0.0)), img)


@pytest.mark.parametrize("shift", [0.3, -0.45])
def test_hue_shift_agrees_with_colorsys(shift):
  pixels = _image(7, (64, 3))
  pixels[0] = [0.5, 0.5, 0.5]  # gray: hue undefined, must stay gray
  pixels[1] = [0.0, 0.0, 0.0]
  pixels[2] = [1.0, 0.2, 0.2]
  hsv = np.asarray(color.rgb_to_hsv(jnp.asarray(pixels)))
  np.testing.assert_allclose(hsv, [colorsys.rgb_to_hsv(*p) for p in pixels], atol=1e-6)
  out = np.asarray(color.adjust_hue(jnp.asarray(pixels)[None], shift))[0]
  expected = []
  for p in pixels:
    h, s, v = colorsys.rgb_to_hsv(*p)
    expected.append(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v))
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_jitter_on_one_channel_applies_brightness_and_skips_colour():
  img = _image(8, (16, 16, 1)) * 0.5
  keys = jax.random.split(jax.random.key(2), 64)
  # Saturation and hue have nothing to act on in a gray image.
  colour_only = jax.vmap(lambda k: augment.color_jitter(k, img, saturation=0.8, hue=0.4))(keys)
  np.testing.assert_array_equal(np.asarray(colour_only), np.broadcast_to(img, colour_only.shape))
  # Brightness alone scales every pixel by one factor drawn from [1 - b, 1 + b].
  bright = np.asarray(jax.vmap(lambda k: augment.color_jitter(k, img, brightness=0.4))(keys))
  factors = bright / img
  np.testing.assert_allclose(factors, factors[:, :1, :1, :] * np.ones_like(factors), rtol=1e-5)
  assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
  assert factors.max() - factors.min() > 0.5  # the factor does vary with the key


def _np_jitter_ops(img, f_b, f_c, f_s, shift):
  """Independent NumPy/colorsys versions of the four torchvision ColorJitter ops."""
  luma = lambda x: x @ np.array([0.299, 0.587, 0.114])

  def hue(x):
    flat = [colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
            for h, s, v in (colorsys.rgb_to_hsv(*p) for p in x.reshape(-1, 3))]
    return np.clip(np.array(flat).reshape(x.shape), 0, 1)

  return [lambda x: np.clip(f_b * x, 0, 1),
          lambda x: np.clip(f_c * x + (1 - f_c) * luma(x).mean(), 0, 1),
          lambda x: np.clip(f_s * x + (1 - f_s) * luma(x)[..., None], 0, 1),
          hue]


def test_jitter_applies_the_four_ops_in_a_random_order():
  # Strong factors make clipping matter, so different orders give different images: each output must
  # equal the four ops applied in some order, and no op may sit at the same place in every output.
  img = _image(9, (4, 4, 3)).astype(np.float64)
  keys = jax.random.split(jax.random.key(3), 12)
  strengths = dict(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.4)
  outs = np.asarray(jax.vmap(lambda k: augment.color_jitter(k, img.astype(np.float32), **strengths))(keys))
  perms = list(itertools.permutations(range(4)))
  common_places = [set(range(4)) for _ in range(4)]  # op -> places consistent with every output
  for key, out in zip(keys, outs):
    # The factors as color_jitter draws them (its key split: order, brightness, contrast, saturation,
    # hue, slot of the hue shift).
    k = jax.random.split(key, 6)
    f_b, f_c, f_s = (float(jax.random.uniform(k[i], minval=0.1, maxval=1.9)) for i in (1, 2, 3))
    shift = float(jax.random.uniform(k[4], minval=-0.4, maxval=0.4))
    ops_ = _np_jitter_ops(img, f_b, f_c, f_s, shift)
    matches = set()
    for perm in perms:
      ref = img
      for i in perm:
        ref = ops_[i](ref)
      if np.allclose(out, ref, atol=2e-5):
        matches.add(perm)
    assert matches, "output is no ordering of brightness, contrast, saturation, hue"
    for op in range(4):
      common_places[op] &= {perm.index(op) for perm in matches}
  assert common_places == [set()] * 4, f"some op always sits at one place: {common_places}"


# ---------------------------------------------------------------- blur, solarize, flip, random_apply

@pytest.mark.parametrize("sigma,kernel_size", [(1.3, 7), (0.6, 3), (4.0, 15)])
def test_blur_matches_scipy_gaussian_filter(sigma, kernel_size):
  img = _image(10, (20, 17, 3))
  out = np.asarray(augment.gaussian_blur(jax.random.key(0), img, sigma=(sigma, sigma),
                                         kernel_size=kernel_size))
  # torchvision/SimCLR reflect padding (edge not repeated) is scipy's mode="mirror".
  ref = np.stack([scipy.ndimage.gaussian_filter(img[..., c].astype(np.float64), sigma, mode="mirror",
                                                radius=kernel_size // 2) for c in range(3)], -1)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_solarize_flip_and_random_apply():
  img = _image(11)
  np.testing.assert_array_equal(np.asarray(augment.solarize(None, img)), np.where(img < 0.5, img, 1 - img))
  np.testing.assert_array_equal(np.asarray(augment.random_flip(jax.random.key(0), img, p=1.0)),
                                img[:, ::-1])
  np.testing.assert_array_equal(np.asarray(augment.random_flip(jax.random.key(0), img, p=0.0)), img)
  const = jnp.full((2, 2, 1), 0.9, jnp.float32)  # solarized -> 0.1
  keys = jax.random.split(jax.random.key(4), 2000)
  outs = np.asarray(jax.vmap(lambda k: augment.random_apply(k, const, fn=augment.solarize, p=0.3))(keys))
  applied = np.isclose(outs[:, 0, 0, 0], 0.1)
  assert np.isclose(outs[:, 0, 0, 0], 0.9).sum() + applied.sum() == len(keys)
  assert abs(applied.mean() - 0.3) < 0.04
  with pytest.raises(ValueError, match="p must be in"):
    augment.random_apply(keys[0], const, fn=augment.solarize, p=1.5)
  with pytest.raises(ValueError, match="kernel_size"):
    augment.gaussian_blur(keys[0], img, kernel_size=4)
