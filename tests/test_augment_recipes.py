"""Tests of the view recipes (SimCLR, BYOL, MoCo v2, multi-crop) and the preview grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import augment
from jaxcl.augment import preview


def _images(n=3, size=20, channels=3, seed=0):
  # Mixed content: smooth gradients, noise and a flat image, so crops and colour ops all bite.
  rng = np.random.default_rng(seed)
  imgs = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
  ramp = np.linspace(0, 255, size, dtype=np.float32)
  imgs[0] = (ramp[None, :, None] * np.linspace(0.2, 1.0, channels)[None, None, :]).astype(np.uint8)
  if n > 2:
    imgs[2] = 77
  return imgs


def _small_simclr(size=16):
  cfg = augment.default_config("simclr", size=size)
  cfg.blur_prob = (0.5, 0.5)  # off by default at small sizes; on here so the test covers it
  cfg.blur_kernel_size = 3
  cfg.solarize_prob = (0.0, 0.3)
  return augment.make_recipe(cfg)


def test_recipe_is_deterministic_in_keys_and_vmap_equals_per_image_calls():
  recipe = jax.jit(_small_simclr())
  imgs = _images()
  keys = jax.random.split(jax.random.key(0), len(imgs))
  v1, v2 = recipe(keys, imgs)
  assert v1.shape == v2.shape == (3, 16, 16, 3) and v1.dtype == jnp.float32
  assert float(v1.min()) >= 0.0 and float(v1.max()) <= 1.0
  again = recipe(keys, imgs)
  np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(v1))
  np.testing.assert_array_equal(np.asarray(again[1]), np.asarray(v2))
  # Two views of one example differ, and other keys give other views.
  assert np.abs(np.asarray(v1[0]) - np.asarray(v2[0])).max() > 1e-2
  other = recipe(jax.random.split(jax.random.key(1), len(imgs)), imgs)
  assert np.abs(np.asarray(other[0][:2]) - np.asarray(v1[:2])).max() > 1e-2
  # A view depends only on its example's key and image, not on the rest of the batch.
  for i in range(len(imgs)):
    w1, w2 = recipe(keys[i:i + 1], imgs[i:i + 1])
    np.testing.assert_allclose(np.asarray(w1[0]), np.asarray(v1[i]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(w2[0]), np.asarray(v2[i]), atol=1e-5)


def _crop_flip_only(name="moco_v2", size=8):
  # Every probabilistic colour/blur op off: a small graph that compiles fast.
  cfg = augment.default_config(name, size=size)
  cfg.jitter_prob = cfg.grayscale_prob = 0.0
  cfg.blur_prob = cfg.solarize_prob = (0.0, 0.0)
  return augment.make_recipe(cfg)


def test_uint8_and_float_inputs_give_the_same_views():
  recipe = jax.jit(_crop_flip_only())
  imgs = _images(n=2, size=10)
  keys = jax.random.split(jax.random.key(5), 2)
  a = recipe(keys, imgs)
  b = recipe(keys, imgs.astype(np.float32) / 255.0)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


@pytest.mark.parametrize("name,num_views", [("simclr", 2), ("byol", 2), ("moco_v2", 2), ("multicrop", 8)])
@pytest.mark.parametrize("channels", [3, 1])
def test_each_recipe_returns_its_views(name, num_views, channels):
  cfg = augment.default_config(name, size=24)
  cfg.blur_kernel_size = 3
  cfg.blur_prob = (0.5,) * cfg.num_views
  recipe = augment.make_recipe(cfg)
  keys = jax.random.split(jax.random.key(0), 4)
  imgs = jax.ShapeDtypeStruct((4, 32, 30, channels), jnp.uint8)
  # Shapes by tracing only (cheap); one recipe is run for real below.
  views = jax.eval_shape(recipe, keys, imgs)
  assert len(views) == num_views
  expected = [(4, 24, 24, channels)] * 2 + [(4, cfg.local_size, cfg.local_size, channels)] * (num_views - 2)
  assert [v.shape for v in views] == expected
  assert all(v.dtype == jnp.float32 for v in views)


def test_multicrop_runs_on_digits_sized_gray_images():
  cfg = augment.default_config("multicrop", size=8)
  cfg.num_local = 1
  views = jax.jit(augment.make_recipe(cfg))(jax.random.split(jax.random.key(0), 3), _images(3, 8, 1))
  assert [v.shape for v in views] == [(3, 8, 8, 1)] * 2 + [(3, cfg.local_size, cfg.local_size, 1)]
  for v in views:
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0


def test_default_configs_follow_the_papers():
  simclr = augment.default_config("simclr", size=224)
  assert simclr.jitter == (0.8, 0.8, 0.8, 0.2) and simclr.jitter_prob == 0.8
  assert simclr.blur_prob == (0.5, 0.5) and simclr.blur_kernel_size == 23
  assert augment.default_config("simclr", size=32).blur_prob == (0.0, 0.0)
  byol = augment.default_config("byol")
  assert byol.blur_prob == (1.0, 0.1) and byol.solarize_prob == (0.0, 0.2)
  assert augment.default_config("moco_v2").scale == (0.2, 1.0)
  multicrop = augment.default_config("multicrop")
  assert multicrop.local_size == 96 and multicrop.local_scale == (0.05, 0.14)
  assert multicrop.scale == (0.14, 1.0) and multicrop.num_local > 0


def test_bad_configs_raise_value_errors_naming_the_field():
  with pytest.raises(ValueError, match="simclr, byol, moco_v2, multicrop"):
    augment.default_config("swav")
  cfg = augment.default_config("simclr")
  cfg.recipe = "swav"
  with pytest.raises(ValueError, match="augment.recipe"):
    augment.make_recipe(cfg)
  cfg = augment.default_config("simclr")
  cfg.blur_prob = (0.5,)
  with pytest.raises(ValueError, match="augment.blur_prob"):
    augment.make_recipe(cfg)
  cfg = augment.default_config("simclr")
  cfg.jitter_prob = 1.5
  with pytest.raises(ValueError, match="augment.jitter_prob"):
    augment.make_recipe(cfg)


def test_save_view_grid_writes_a_png(tmp_path):
  recipe = _crop_flip_only("simclr", size=8)
  digits = preview.example_images("digits")[:2]
  assert digits.shape == (2, 8, 8, 1) and digits.dtype == np.uint8 and digits.max() > 200
  path = preview.save_view_grid(recipe, digits, str(tmp_path / "grid" / "views.png"), num_views=3)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  from PIL import Image

  width, height = Image.open(path).size
  assert width > height > 0  # 4 columns (original + 3 views) by 2 rows
