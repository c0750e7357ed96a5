"""I-JEPA's multi-block masks (Assran et al. 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", Sec. 3 and its code's ``MaskCollator``), per example from a key.

A mask is a boolean over the ``grid = (gh, gw)`` patches of one image, row-major when flattened to
``N = gh * gw``. ``jepa_masks`` draws ``num_targets`` target blocks (area 15-20% of the image, aspect
ratio 0.75-1.5) and one large context block (85-100%, square), and removes every target token from the
context, so the context never shows what the predictor must predict.

Static shapes: the masks are booleans over all N tokens, not index lists of the kept tokens. The
networks that read them (``jaxcl.models.ViT.tokens``, ``jaxcl.models.JEPAPredictor``) hide the other
tokens with an attention mask, so they compute over all N tokens where the paper's code gathers only
the kept ones (fewer FLOPs). In exchange every example keeps its own block sizes and the step compiles
once: the paper's gather needs equal lengths across the batch, so its collator draws one block size
per batch and truncates every mask to the smallest one in the batch (``min_keep``).

Pure JAX and jit-able; ``jax.vmap`` them over per-example keys, as the view recipes do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _range(name: str, value: Sequence[float], *, high: float | None) -> tuple[float, float]:
  """A checked (min, max) pair with 0 < min <= max (<= high)."""
  if len(value) != 2 or not 0 < value[0] <= value[1] or (high is not None and value[1] > high):
    bound = f" <= {high}" if high is not None else ""
    raise ValueError(f"{name} must be a pair (min, max) with 0 < min <= max{bound}, got {value!r}")
  return float(value[0]), float(value[1])


def _grid(grid: Sequence[int]) -> tuple[int, int]:
  if len(grid) != 2 or min(grid) < 1:
    raise ValueError(f"grid must be (rows, columns) of patches, both >= 1, got {grid!r}")
  return int(grid[0]), int(grid[1])


def _block(u: jax.Array, grid: tuple[int, int], scale: tuple[float, float],
           aspect_ratio: tuple[float, float]) -> jax.Array:
  """The block that 4 uniform numbers in [0, 1) choose: area fraction, aspect ratio, top, left."""
  gh, gw = grid
  s = scale[0] + (scale[1] - scale[0]) * u[0]
  log_lo, log_hi = math.log(aspect_ratio[0]), math.log(aspect_ratio[1])
  r = jnp.exp(log_lo + (log_hi - log_lo) * u[1])
  n = gh * gw
  h = jnp.clip(jnp.round(jnp.sqrt(s * n * r)), 1, gh).astype(jnp.int32)
  w = jnp.clip(jnp.round(jnp.sqrt(s * n / r)), 1, gw).astype(jnp.int32)
  # Uniform over the gh - h + 1 rows (gw - w + 1 columns) where the block fits.
  top = jnp.minimum(jnp.floor(u[2] * (gh - h + 1)).astype(jnp.int32), gh - h)
  left = jnp.minimum(jnp.floor(u[3] * (gw - w + 1)).astype(jnp.int32), gw - w)
  rows, cols = jnp.arange(gh), jnp.arange(gw)
  return (((rows >= top) & (rows < top + h))[:, None]
          & ((cols >= left) & (cols < left + w))[None, :])


def block_mask(key: jax.Array, grid: Sequence[int], *, scale: Sequence[float],
               aspect_ratio: Sequence[float]) -> jax.Array:
  """One rectangular block of patches, I-JEPA's ``_sample_block_size`` then a uniform position.

  The area fraction ``s ~ U(scale)`` and the aspect ratio (height / width) ``r = exp(U(log
  aspect_ratio))``; ``h = round(sqrt(s N r))`` and ``w = round(sqrt(s N / r))`` patches, clipped to
  ``[1, gh]`` and ``[1, gw]``; the top-left corner is uniform over the positions where the block fits.
  (The paper's code draws one uniform number for both ``s`` and a linear-uniform ``r``, and keeps blocks
  one patch short of the grid; here they are independent, ``r`` is log-uniform like the random resized
  crop's, and a block may span the grid.)

  Args:
    key: PRNG key.
    grid: (gh, gw) patches.
    scale: (min, max) area fraction of the block, in (0, 1].
    aspect_ratio: (min, max) of the block's height / width, > 0.

  Returns:
    bool [gh, gw], True inside the block.
  """
  grid = _grid(grid)
  scale = _range("scale", scale, high=1.0)
  aspect_ratio = _range("aspect_ratio", aspect_ratio, high=None)
  return _block(jax.random.uniform(key, (4,)), grid, scale, aspect_ratio)


def jepa_masks(
    key: jax.Array,
    grid: Sequence[int],
    *,
    num_targets: int = 4,
    target_scale: Sequence[float] = (0.15, 0.2),
    target_aspect_ratio: Sequence[float] = (0.75, 1.5),
    context_scale: Sequence[float] = (0.85, 1.0),
    context_aspect_ratio: Sequence[float] = (1.0, 1.0),
) -> tuple[jax.Array, jax.Array]:
  """I-JEPA's context and target masks of one image (the paper's defaults; Sec. 3 and Table 6-8).

  Target blocks may overlap each other. The context is the context block minus every target block. If
  that leaves nothing (a small grid), the context is every token outside the targets; if the targets
  cover the whole grid, the context block's first token moves from the targets to the context. So the
  context is never empty and never overlaps a target.

  Args:
    key: PRNG key of the example.
    grid: (gh, gw) patches.
    num_targets: M, target blocks (4).
    target_scale: area fraction range of a target block ((0.15, 0.2)).
    target_aspect_ratio: height / width range of a target block ((0.75, 1.5)).
    context_scale: area fraction range of the context block ((0.85, 1.0)).
    context_aspect_ratio: height / width range of the context block ((1, 1): square, as the paper's).

  Returns:
    ``(context, targets)``: bool [N] and bool [M, N] over the N = gh * gw patches, row-major.
  """
  gh, gw = grid = _grid(grid)
  if not isinstance(num_targets, int) or num_targets < 1:
    raise ValueError(f"num_targets must be a positive integer, got {num_targets!r}")
  target_scale = _range("target_scale", target_scale, high=1.0)
  target_aspect_ratio = _range("target_aspect_ratio", target_aspect_ratio, high=None)
  context_scale = _range("context_scale", context_scale, high=1.0)
  context_aspect_ratio = _range("context_aspect_ratio", context_aspect_ratio, high=None)
  n = gh * gw
  # One draw for every block (4 numbers each): one random-bits kernel to compile, not one per number.
  u = jax.random.uniform(key, (num_targets + 1, 4))
  targets = jax.vmap(lambda v: _block(v, grid, target_scale, target_aspect_ratio))(u[:num_targets])
  targets = targets.reshape(num_targets, n)
  block = _block(u[num_targets], grid, context_scale, context_aspect_ratio).reshape(n)
  covered = jnp.any(targets, axis=0)
  context = block & ~covered
  context = jnp.where(jnp.any(context), context, ~covered)
  first = jnp.arange(n) == jnp.argmax(block)
  context = jnp.where(jnp.any(context), context, first)
  return context, targets & ~context
