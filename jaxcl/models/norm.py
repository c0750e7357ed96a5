"""BatchNorm whose batch statistics can be synchronised over a named device axis.

SimCLR (Chen et al. 2020, Sec. 2.3 "Global BN") and BYOL compute BatchNorm statistics over the whole
global batch: with data parallelism each device's local statistics would let the model cheat the
contrastive task through intra-device information leakage. Here the axis is a *call* argument, not a
constructor argument (unlike ``nnx.BatchNorm``'s ``axis_name``), so the same module runs inside
``jax.shard_map`` with synchronised statistics during training and outside it (``features``, tests,
single device) without rebuilding the model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class BatchNorm(nnx.Module):
  """Batch normalisation over all axes but the last (Ioffe & Szegedy 2015).

  Statistics are computed in float32 whatever the compute dtype; the running averages follow
  ``running = momentum * running + (1 - momentum) * batch`` with the biased batch variance.
  """

  def __init__(
      self,
      num_features: int,
      *,
      momentum: float = 0.9,
      epsilon: float = 1e-5,
      use_scale: bool = True,
      use_bias: bool = True,
      scale_init: float = 1.0,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
  ):
    """Builds the layer.

    Args:
      num_features: width of the last axis.
      momentum: decay of the running statistics.
      epsilon: added to the variance before the square root.
      use_scale: learn a per-feature scale (gamma).
      use_bias: learn a per-feature bias (beta).
      scale_init: initial gamma (0 zero-initialises residual branches, Goyal et al. 2017).
      dtype: compute dtype of the output (None keeps the input's).
      param_dtype: dtype of gamma and beta.
    """
    self.num_features = num_features
    self.momentum = momentum
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale = (
        nnx.Param(jnp.full((num_features,), scale_init, param_dtype)) if use_scale else None
    )
    self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype)) if use_bias else None
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

  def __call__(self, x: jax.Array, *, train: bool, axis_name: str | None = None) -> jax.Array:
    """Normalises ``x``.

    Args:
      x: [..., num_features].
      train: use (and update the running averages with) batch statistics; else running averages.
      axis_name: when set (inside ``jax.shard_map``), batch statistics are averaged over this axis, so
        they equal those of the global batch (every device holds the same number of rows).

    Returns:
      The normalised array, in ``dtype`` (or ``x.dtype``).
    """
    out_dtype = self.dtype or x.dtype
    if train:
      xf = x.astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(xf, axes)
      mean_sq = jnp.mean(jnp.square(xf), axes)
      if axis_name is not None:
        mean, mean_sq = jax.lax.pmean((mean, mean_sq), axis_name)
      var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
      m = self.momentum
      self.mean[...] = m * self.mean[...] + (1 - m) * jax.lax.stop_gradient(mean)
      self.var[...] = m * self.var[...] + (1 - m) * jax.lax.stop_gradient(var)
    else:
      mean, var = self.mean[...], self.var[...]
    mul = jax.lax.rsqrt(var + self.epsilon)
    if self.scale is not None:
      mul = mul * self.scale[...].astype(jnp.float32)
    shift = -mean * mul
    if self.bias is not None:
      shift = shift + self.bias[...].astype(jnp.float32)
    # Folding into one multiply-add keeps the bf16 path to a single rounding.
    return (x.astype(jnp.float32) * mul + shift).astype(out_dtype)
