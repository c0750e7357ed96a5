"""View recipes: the augmentation pipelines of SimCLR, BYOL, MoCo v2 and multi-crop, built from config.

A recipe is ``recipe(keys, images) -> tuple of views``: ``keys`` holds one PRNG key per example ([B]),
``images`` is [B, H, W, C] uint8 (or float in [0, 1]); each view is float32 [B, h, w, C] in [0, 1].
Every view of every example uses its own key derived from the example's key, so a view depends only
on that key and the image, not on the batch it sits in or on the device count.

Each view runs: random resized crop -> flip -> colour jitter (prob) -> grayscale (prob) -> Gaussian
blur (prob) -> solarize (prob), the order of BYOL's and solo-learn's pipelines. Global views may differ
in their blur and solarize probabilities (BYOL's asymmetry); multi-crop adds ``num_local`` smaller views.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from jaxcl.augment import color, crop, ops

Recipe = Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]]

NAMES = ("simclr", "byol", "moco_v2", "multicrop")


def _odd_kernel(size: int) -> int:
  """An odd kernel of about 10% of the side (SimCLR, Appendix A)."""
  return max(1, int(0.1 * size)) | 1


def default_config(recipe: str = "simclr", *, size: int = 224) -> ml_collections.ConfigDict:
  """Every parameter of a view recipe, with the values of its paper.

  * ``simclr`` (Chen et al. 2020, Appendix A): crop 0.08-1, flip, colour jitter with prob 0.8 and
    strengths ``strength * (0.8, 0.8, 0.8, 0.2)``, grayscale 0.2, blur 0.5 on both views.
  * ``byol`` (Grill et al. 2020, Table 6): jitter (0.4, 0.4, 0.2, 0.1) with prob 0.8, grayscale 0.2,
    blur 1.0 / 0.1 and solarize 0.0 / 0.2 on the two views.
  * ``moco_v2`` (Chen et al. 2020, "Improved baselines"): crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1)
    with prob 0.8, grayscale 0.2, blur 0.5.
  * ``multicrop`` (SwAV, Caron et al. 2020; DINO, Caron et al. 2021): BYOL's two global views with
    crop scale 0.14-1 plus ``num_local`` local views of ``local_size`` px with crop scale 0.05-0.14.

  The blur kernel is ~10% of the view side. At ``size <= 64`` (CIFAR-like images) the blur
  probabilities are 0, as in SimCLR's CIFAR-10 setup: a 0.1-2 px blur wipes out a 32 px image.

  Args:
    recipe: one of ``NAMES``.
    size: side of the (global) views in pixels.

  Returns:
    An unlocked ``ConfigDict``; override fields, then pass it to ``make_recipe``.
  """
  if recipe not in NAMES:
    raise ValueError(f"unknown augment recipe {recipe!r}; valid names: {', '.join(NAMES)}")
  small = size <= 64
  cfg = ml_collections.ConfigDict()
  cfg.recipe = recipe  # one of NAMES: simclr, byol, moco_v2, multicrop
  cfg.size = size  # side of the (global) views in pixels
  cfg.scale = (0.08, 1.0)  # random resized crop: area fraction range
  cfg.ratio = (3 / 4, 4 / 3)  # random resized crop: aspect ratio range
  cfg.flip_prob = 0.5  # horizontal flip probability
  # Jitter strengths (brightness, contrast, saturation, hue), each multiplied by `strength`.
  cfg.jitter = (0.4, 0.4, 0.2, 0.1)
  cfg.strength = 1.0  # colour jitter strength (SimCLR's s)
  cfg.jitter_prob = 0.8  # probability of applying colour jitter
  cfg.grayscale_prob = 0.2  # probability of converting to grayscale
  cfg.num_views = 2  # global views per image
  cfg.blur_prob = (0.5, 0.5)  # one per global view
  cfg.blur_sigma = (0.1, 2.0)  # Gaussian blur sigma range, in pixels
  cfg.blur_kernel_size = _odd_kernel(size)  # blur kernel side (~10% of the view)
  cfg.solarize_prob = (0.0, 0.0)  # one per global view
  cfg.solarize_threshold = 0.5  # pixels above it are inverted
  # Local (multi-crop) views; none unless num_local > 0.
  cfg.num_local = 0
  cfg.local_size = max(1, round(size * 96 / 224))  # side of the local views
  cfg.local_scale = (0.05, 0.14)  # local views' crop area range
  cfg.local_blur_prob = 0.5  # blur probability of local views
  cfg.local_solarize_prob = 0.0  # solarize probability of local views
  cfg.local_blur_kernel_size = _odd_kernel(cfg.local_size)  # blur kernel side of local views

  if recipe == "simclr":
    cfg.jitter = (0.8, 0.8, 0.8, 0.2)
  elif recipe == "byol":
    cfg.blur_prob = (1.0, 0.1)
    cfg.solarize_prob = (0.0, 0.2)
  elif recipe == "moco_v2":
    cfg.scale = (0.2, 1.0)
    cfg.jitter = (0.4, 0.4, 0.4, 0.1)
  elif recipe == "multicrop":
    cfg.scale = (0.14, 1.0)
    cfg.blur_prob = (1.0, 0.1)
    cfg.solarize_prob = (0.0, 0.2)
    cfg.num_local = 6
  if small:
    cfg.blur_prob = (0.0,) * cfg.num_views
    cfg.local_blur_prob = 0.0
  return cfg


def _check_prob(name: str, p: float) -> float:
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"augment.{name} must be in [0, 1], got {p}")
  return float(p)


def _view_fn(cfg: ml_collections.ConfigDict, *, size: int, scale, blur_prob: float,
             blur_kernel_size: int, solarize_prob: float) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """One view's pipeline as a single-image function ``(key, image) -> view``."""
  b, c, s, h = (cfg.strength * j for j in cfg.jitter)
  jitter = functools.partial(color.color_jitter, brightness=b, contrast=c, saturation=s, hue=h)
  blur = functools.partial(ops.gaussian_blur, sigma=tuple(cfg.blur_sigma), kernel_size=blur_kernel_size)
  solar = functools.partial(ops.solarize, threshold=cfg.solarize_threshold)
  jitter_prob = _check_prob("jitter_prob", cfg.jitter_prob)
  gray_prob = _check_prob("grayscale_prob", cfg.grayscale_prob)
  flip_prob = _check_prob("flip_prob", cfg.flip_prob)

  def view(key, image):
    k_crop, k_flip, k_jit, k_gray, k_blur, k_sol = jax.random.split(key, 6)
    x = crop.random_resized_crop(k_crop, image, size=size, scale=scale, ratio=tuple(cfg.ratio))
    x = ops.random_flip(k_flip, x, p=flip_prob)
    x = ops.random_apply(k_jit, x, fn=jitter, p=jitter_prob)
    x = color.random_grayscale(k_gray, x, p=gray_prob)
    x = ops.random_apply(k_blur, x, fn=blur, p=blur_prob)
    return ops.random_apply(k_sol, x, fn=solar, p=solarize_prob)

  return view


def _validate(cfg: ml_collections.ConfigDict) -> None:
  if cfg.recipe not in NAMES:
    raise ValueError(f"unknown augment.recipe {cfg.recipe!r}; valid names: {', '.join(NAMES)}")
  if cfg.num_views < 1:
    raise ValueError(f"augment.num_views must be >= 1, got {cfg.num_views}")
  for name in ("blur_prob", "solarize_prob"):
    if len(cfg[name]) != cfg.num_views:
      raise ValueError(f"augment.{name} needs one probability per global view "
                       f"(num_views={cfg.num_views}), got {tuple(cfg[name])}")
  if len(cfg.jitter) != 4:
    raise ValueError(f"augment.jitter must be (brightness, contrast, saturation, hue), got {cfg.jitter}")
  if cfg.num_local < 0:
    raise ValueError(f"augment.num_local must be >= 0, got {cfg.num_local}")


def make_recipe(cfg: ml_collections.ConfigDict) -> Recipe:
  """Builds ``recipe(keys [B], images [B, H, W, C]) -> (view_1, ..., view_n)`` from a config.

  Views come in order: the ``num_views`` global views, then the ``num_local`` local views. The
  function is pure and jit-able; per-example work is vmapped over the keys.

  Args:
    cfg: a config from ``default_config`` (possibly overridden).

  Returns:
    The recipe function.
  """
  _validate(cfg)
  views = [
      _view_fn(cfg, size=cfg.size, scale=tuple(cfg.scale), blur_prob=_check_prob("blur_prob", p),
               blur_kernel_size=cfg.blur_kernel_size,
               solarize_prob=_check_prob("solarize_prob", q))
      for p, q in zip(cfg.blur_prob, cfg.solarize_prob)
  ]
  local = _view_fn(cfg, size=cfg.local_size, scale=tuple(cfg.local_scale),
                   blur_prob=_check_prob("local_blur_prob", cfg.local_blur_prob),
                   blur_kernel_size=cfg.local_blur_kernel_size,
                   solarize_prob=_check_prob("local_solarize_prob", cfg.local_solarize_prob))
  views += [local] * cfg.num_local

  def per_example(key, image):
    keys = jax.random.split(key, len(views))
    return tuple(view(k, image) for view, k in zip(views, keys))

  def recipe(keys: jax.Array, images: jax.Array) -> tuple[jax.Array, ...]:
    if images.ndim != 4:
      raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    if keys.shape[0] != images.shape[0]:
      raise ValueError(f"need one key per image: {keys.shape[0]} keys for {images.shape[0]} images")
    if jnp.issubdtype(images.dtype, jnp.integer):
      images = images.astype(jnp.float32) / 255.0
    return jax.vmap(per_example)(keys, images.astype(jnp.float32))

  return recipe


@dataclasses.dataclass(frozen=True)
class ViewRecipe:
  """A recipe with the facts a method needs about it: the global views' side and the local views.

  Called as the recipe is: ``recipe(keys [B], images [B, H, W, C]) -> (view_1, ..., view_n)``.
  """

  views: Recipe
  size: int  # side of the global views (the encoder's training resolution)
  num_local: int = 0  # multi-crop's small views, after the global ones

  def __call__(self, keys: jax.Array, images: jax.Array) -> tuple[jax.Array, ...]:
    return self.views(keys, images)


def view_recipe(cfg: ml_collections.ConfigDict) -> ViewRecipe:
  """``make_recipe(cfg)`` with its global view size and number of local views (an ``augment`` config)."""
  return ViewRecipe(make_recipe(cfg), size=int(cfg.size), num_local=int(cfg.get("num_local", 0)))
