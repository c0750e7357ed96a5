"""Sequence augmentations: ``(key, x [T, C]) -> x'`` with static output shapes, batched with ``vmap``.

* ``random_window``: a random crop of ``length`` consecutive steps (CPC trains on random windows of
  longer recordings);
* ``random_gain``: the whole signal scaled by a random factor in [low, high] (the same sensor at
  another gain).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_window(key: jax.Array, x: jax.Array, length: int) -> jax.Array:
  """``length`` consecutive steps of ``x`` [T, C] starting at a uniform offset in [0, T - length]."""
  if not 0 < length <= x.shape[0]:
    raise ValueError(f"a window of {length} steps does not fit a sequence of {x.shape[0]}; lower "
                     "method.crop_length.")
  start = jax.random.randint(key, (), 0, x.shape[0] - length + 1)
  return jax.lax.dynamic_slice_in_dim(x, start, length, axis=0)


def random_gain(key: jax.Array, x: jax.Array, low: float, high: float) -> jax.Array:
  """``x`` times a factor drawn uniformly from [low, high]."""
  return x * jax.random.uniform(key, (), minval=low, maxval=high)
