"""A three-layer convolutional encoder for tiny images (8-32 px) and tests.

It is the default encoder of the digits job: on 2 CPU cores a ResNet would take the whole time budget,
while conv-BN-ReLU x3 with stride-2 downsampling and a global average pool learns useful features of
32 px digits within minutes. Digits are 8x8 images upsampled 4x, so a stride-2 first layer loses no
information and costs a quarter of a stride-1 one.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.conv import conv_general_dilated
from jaxcl.models.norm import BatchNorm

POOLS = ("mean", "flatten")


class SmallCNN(nnx.Module):
  """conv3x3-BN-ReLU blocks (default widths 32-64-128, strides 2-2-2) then global average pooling."""

  def __init__(
      self,
      *,
      in_channels: int = 3,
      widths: Sequence[int] = (32, 64, 128),
      strides: Sequence[int] = (2, 2, 2),
      pool: str = "mean",
      image_size: int | None = None,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      in_channels: channels of the input images.
      widths: output channels of each conv layer.
      strides: stride of each conv layer (same length as ``widths``).
      pool: "mean": global average pooling to ``widths[-1]`` features; "flatten": the last feature map
        as it is, ``widths[-1] * side**2`` features that keep where on the image each one fired.
      image_size: the input side, needed by ``pool="flatten"`` to size its output.
      dtype: compute dtype; parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    widths, strides = tuple(widths), tuple(strides)
    if pool not in POOLS:
      raise ValueError(f"model.pool must be one of {POOLS} for small_cnn, got {pool!r}")
    if pool == "flatten" and not image_size:
      raise ValueError("model.pool='flatten' needs the image size to size the encoder's output")
    if not widths or len(widths) != len(strides):
      raise ValueError(
          f"model.widths and model.strides must be non-empty and of equal length, got {widths} and"
          f" {strides}")
    convs, norms = [], []
    cin = in_channels
    for w, s in zip(widths, strides):
      convs.append(nnx.Conv(cin, w, (3, 3), strides=(s, s), padding=((1, 1), (1, 1)), use_bias=False,
                            conv_general_dilated=conv_general_dilated, dtype=dtype,
                            param_dtype=param_dtype, rngs=rngs))
      norms.append(BatchNorm(w, dtype=dtype, param_dtype=param_dtype))
      cin = w
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.pool = pool
    side = image_size or 1
    for s in strides:
      side = -(-side // s)  # "SAME"-padded 3x3 convolutions: ceil(side / stride)
    self.out_dim = cin * side * side if pool == "flatten" else cin

  def __call__(self, x: jax.Array, *, train: bool = False, axis_name: str | None = None) -> jax.Array:
    """Encodes images [B, H, W, C] to float32 features [B, out_dim] (see ``ResNet.__call__``)."""
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x), train=train, axis_name=axis_name))
    x = x.astype(jnp.float32)
    return x.reshape(x.shape[0], -1) if self.pool == "flatten" else jnp.mean(x, axis=(1, 2))
