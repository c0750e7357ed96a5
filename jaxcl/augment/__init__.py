"""On-device image augmentation: single-image pure ops and the view recipes of contrastive methods.

Ops take ``(key, image [H, W, C] float32 in [0, 1], *, params)`` and return an image of a static
shape; batch them with ``jax.vmap`` over per-example keys. Recipes (``make_recipe(default_config(...))``)
map ``(keys [B], images [B, H, W, C])`` to a tuple of views. ``jaxcl.augment.preview`` draws them
(imported on demand, since it needs matplotlib). Sequences: ``random_window`` and ``random_gain``
(``(key, x [T, C]) -> x'``). Masks: I-JEPA's context and target blocks over a patch grid
(``jepa_masks``, ``block_mask``).
"""

from jaxcl.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    hsv_to_rgb,
    random_grayscale,
    rgb_to_grayscale,
    rgb_to_hsv,
)
from jaxcl.augment.crop import crop_box, random_resized_crop, resized_crop
from jaxcl.augment.masks import block_mask, jepa_masks
from jaxcl.augment.ops import blur, gaussian_blur, random_apply, random_flip, solarize
from jaxcl.augment.recipes import NAMES, Recipe, ViewRecipe, default_config, make_recipe, view_recipe
from jaxcl.augment.sequence import random_gain, random_window

__all__ = [
    "NAMES", "Recipe", "ViewRecipe", "adjust_brightness", "adjust_contrast", "adjust_hue",
    "adjust_saturation",
    "block_mask", "blur", "color_jitter", "crop_box", "default_config", "gaussian_blur",
    "hsv_to_rgb", "jepa_masks", "make_recipe", "random_apply", "random_flip", "random_gain",
    "random_grayscale", "random_resized_crop", "random_window", "resized_crop", "rgb_to_grayscale",
    "rgb_to_hsv", "solarize", "view_recipe",
]
