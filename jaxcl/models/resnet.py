"""ResNet-18/34/50 encoders (He et al. 2016) without the classifier.

Two stems: the ImageNet stem (7x7 conv stride 2, then 3x3 max-pool stride 2) and the CIFAR stem used by
SimCLR for 32 px images (3x3 conv stride 1, no max-pool; Chen et al. 2020, Appendix B.9). Convolutions
have no bias and are followed by BatchNorm, as in torchvision, so the parameter counts match the
published ones (ResNet-50: 23,508,032 without the 2048x1000 classifier).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.conv import conv_general_dilated
from jaxcl.models.norm import BatchNorm

_he_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(cin, cout, k, stride, *, dtype, param_dtype, rngs):
  pad = k // 2
  return nnx.Conv(
      cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)), use_bias=False,
      kernel_init=_he_fan_out, conv_general_dilated=conv_general_dilated, dtype=dtype,
      param_dtype=param_dtype, rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut: ResNet-18/34."""

  expansion = 1

  def __init__(self, cin, width, stride, *, zero_init_residual, dtype, param_dtype, rngs):
    cout = width * self.expansion
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.conv1 = _conv(cin, width, 3, stride, rngs=rngs, **kw)
    self.bn1 = BatchNorm(width, **kw)
    self.conv2 = _conv(width, cout, 3, 1, rngs=rngs, **kw)
    self.bn2 = BatchNorm(cout, scale_init=0.0 if zero_init_residual else 1.0, **kw)
    if stride != 1 or cin != cout:
      self.proj = _conv(cin, cout, 1, stride, rngs=rngs, **kw)
      self.proj_bn = BatchNorm(cout, **kw)
    else:
      self.proj = None
      self.proj_bn = None

  def __call__(self, x, *, train, axis_name=None):
    y = jax.nn.relu(self.bn1(self.conv1(x), train=train, axis_name=axis_name))
    y = self.bn2(self.conv2(y), train=train, axis_name=axis_name)
    if self.proj is not None:
      x = self.proj_bn(self.proj(x), train=train, axis_name=axis_name)
    return jax.nn.relu(x + y)


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (strided, as torchvision "ResNet v1.5") -> 1x1 x4 with a shortcut: ResNet-50."""

  expansion = 4

  def __init__(self, cin, width, stride, *, zero_init_residual, dtype, param_dtype, rngs):
    cout = width * self.expansion
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.conv1 = _conv(cin, width, 1, 1, rngs=rngs, **kw)
    self.bn1 = BatchNorm(width, **kw)
    self.conv2 = _conv(width, width, 3, stride, rngs=rngs, **kw)
    self.bn2 = BatchNorm(width, **kw)
    self.conv3 = _conv(width, cout, 1, 1, rngs=rngs, **kw)
    self.bn3 = BatchNorm(cout, scale_init=0.0 if zero_init_residual else 1.0, **kw)
    if stride != 1 or cin != cout:
      self.proj = _conv(cin, cout, 1, stride, rngs=rngs, **kw)
      self.proj_bn = BatchNorm(cout, **kw)
    else:
      self.proj = None
      self.proj_bn = None

  def __call__(self, x, *, train, axis_name=None):
    y = jax.nn.relu(self.bn1(self.conv1(x), train=train, axis_name=axis_name))
    y = jax.nn.relu(self.bn2(self.conv2(y), train=train, axis_name=axis_name))
    y = self.bn3(self.conv3(y), train=train, axis_name=axis_name)
    if self.proj is not None:
      x = self.proj_bn(self.proj(x), train=train, axis_name=axis_name)
    return jax.nn.relu(x + y)


_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


class ResNet(nnx.Module):
  """A ResNet trunk ending in global average pooling: images [B,H,W,C] -> features [B, out_dim]."""

  def __init__(
      self,
      depth: int = 18,
      *,
      in_channels: int = 3,
      stem: str = "imagenet",
      width_multiplier: float = 1.0,
      zero_init_residual: bool = False,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      depth: 18, 34 or 50.
      in_channels: channels of the input images.
      stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3/1 conv, no pool).
      width_multiplier: scales every layer's width (SimCLR's ResNet-50 (2x), (4x)).
      zero_init_residual: start each residual branch's last BN scale at 0 (Goyal et al. 2017).
      dtype: compute dtype (e.g. jnp.bfloat16); parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    if depth not in _DEPTHS:
      raise ValueError(f"model.depth must be one of {sorted(_DEPTHS)}, got {depth}")
    if stem not in ("imagenet", "cifar"):
      raise ValueError(f"model.stem must be 'imagenet' or 'cifar', got {stem!r}")
    if width_multiplier <= 0:
      raise ValueError(f"model.width_multiplier must be positive, got {width_multiplier}")
    block, counts = _DEPTHS[depth]
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.stem = stem
    base = max(1, int(round(64 * width_multiplier)))
    self.conv1 = _conv(in_channels, base, 7 if stem == "imagenet" else 3,
                       2 if stem == "imagenet" else 1, rngs=rngs, **kw)
    self.bn1 = BatchNorm(base, **kw)
    blocks = []
    cin = base
    for stage, count in enumerate(counts):
      width = base * 2**stage
      for i in range(count):
        stride = 2 if (stage > 0 and i == 0) else 1
        blocks.append(block(cin, width, stride, zero_init_residual=zero_init_residual, rngs=rngs, **kw))
        cin = width * block.expansion
    self.blocks = nnx.List(blocks)
    self.out_dim = cin

  def __call__(self, x: jax.Array, *, train: bool = False, axis_name: str | None = None) -> jax.Array:
    """Encodes images.

    Args:
      x: [B, H, W, C] float images.
      train: BatchNorm uses batch statistics (and updates its running averages).
      axis_name: synchronise BatchNorm statistics over this ``shard_map`` axis.

    Returns:
      [B, out_dim] float32 features.
    """
    x = jax.nn.relu(self.bn1(self.conv1(x), train=train, axis_name=axis_name))
    if self.stem == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for blk in self.blocks:
      x = blk(x, train=train, axis_name=axis_name)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def resnet18(**kwargs) -> ResNet:
  """ResNet-18 (basic blocks 2-2-2-2, 512-d features)."""
  return ResNet(18, **kwargs)


def resnet34(**kwargs) -> ResNet:
  """ResNet-34 (basic blocks 3-4-6-3, 512-d features)."""
  return ResNet(34, **kwargs)


def resnet50(**kwargs) -> ResNet:
  """ResNet-50 (bottleneck blocks 3-4-6-3, 2048-d features)."""
  return ResNet(50, **kwargs)


__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50"]
