"""Pictures of what a model is trained on: a grid of real images and several views of each."""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxcl.augment.recipes import Recipe


def example_images(kind: str = "photos") -> np.ndarray:
  """Real images shipped with scikit-learn (no download), as uint8 [N, H, W, C].

  Args:
    kind: ``"photos"`` (the two 427x640 colour photographs of ``load_sample_images``) or ``"digits"``
      (the first ten 8x8 UCI handwritten digits, one channel, scaled from 0-16 to 0-255).

  Returns:
    uint8 array [N, H, W, C].
  """
  import sklearn.datasets

  if kind == "photos":
    return np.stack(sklearn.datasets.load_sample_images().images).astype(np.uint8)
  if kind == "digits":
    digits = sklearn.datasets.load_digits().images[:10]
    return np.round(digits * (255.0 / 16.0)).astype(np.uint8)[..., None]
  raise ValueError(f"unknown example image kind {kind!r}; valid kinds: photos, digits")


def save_view_grid(
    recipe: Recipe,
    images_uint8: np.ndarray,
    path: str,
    *,
    num_views: int = 6,
    seed: int = 0,
) -> str:
  """Writes a PNG grid: one row per image, the original first, then ``num_views`` views of it.

  The recipe is called as many times as needed (fresh keys each call) to collect ``num_views`` views;
  for multi-crop, global and local views alternate as the recipe returns them.

  Args:
    recipe: a function from ``make_recipe``.
    images_uint8: uint8 images [N, H, W, C] (or [N, H, W] gray).
    path: output PNG path; parent folders are created.
    num_views: views per image.
    seed: seed of the view keys.

  Returns:
    ``path``.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  images = np.asarray(images_uint8)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images_uint8 must be [N, H, W, C] with C = 1 or 3, got shape {images.shape}")
  if num_views < 1:
    raise ValueError(f"num_views must be >= 1, got {num_views}")
  n = images.shape[0]
  fn = jax.jit(recipe)
  views: list[np.ndarray] = []  # each [N, h, w, C]
  key = jax.random.key(seed)
  call = 0
  while len(views) < num_views:
    keys = jax.random.split(jax.random.fold_in(key, call), n)
    views.extend(np.asarray(v) for v in fn(keys, images))
    call += 1
  views = views[:num_views]

  cols = num_views + 1
  fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
  for i in range(n):
    row = [images[i].astype(np.float32) / 255.0] + [v[i] for v in views]
    for j, img in enumerate(row):
      ax = axes[i, j]
      if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
      else:
        ax.imshow(np.clip(img, 0.0, 1.0), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title("original" if j == 0 else f"view {j} ({img.shape[0]}px)", fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
