"""Vision Transformer encoders (Dosovitskiy et al. 2021) and the pre-LN transformer block they share
with the text tower.

ViT-Tiny/Small/Base (widths 192/384/768, 12 layers, 3/6/12 heads; Touvron et al. 2021 for Tiny/Small)
with a configurable patch size, a learned position embedding, and CLS-token or mean pooling. No
classifier: the output is the final-LayerNorm feature of the CLS token (or of the mean over patches).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.conv import conv_general_dilated

_VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


class TransformerBlock(nnx.Module):
  """Pre-LN block: x + MHSA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of ``mlp_ratio`` x width."""

  def __init__(self, width, heads, *, mlp_ratio=4.0, dtype=None, param_dtype=jnp.float32, rngs):
    if width % heads:
      raise ValueError(f"transformer width {width} must be divisible by the number of heads {heads}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.heads = heads
    self.ln1 = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    self.qkv = nnx.Linear(width, 3 * width, **kw)
    self.proj = nnx.Linear(width, width, **kw)
    self.ln2 = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    hidden = int(width * mlp_ratio)
    self.fc1 = nnx.Linear(width, hidden, **kw)
    self.fc2 = nnx.Linear(hidden, width, **kw)

  def __call__(self, x, *, mask=None, is_causal=False):
    b, n, d = x.shape
    qkv = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    y = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
    x = x + self.proj(y.reshape(b, n, d))
    return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class ViT(nnx.Module):
  """Patch embedding + learned position embedding + pre-LN transformer + final LN + pooling."""

  def __init__(
      self,
      *,
      in_channels: int = 3,
      image_size: int = 224,
      patch_size: int = 16,
      width: int = 768,
      depth: int = 12,
      heads: int = 12,
      mlp_ratio: float = 4.0,
      pool: str = "cls",
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      in_channels: channels of the input images.
      image_size: side of the (square) training images; sets the position-embedding grid. Other sizes
        work too: the grid is bilinearly resized at call time.
      patch_size: side of a patch (16 for ImageNet, 4 for 32 px images).
      width, depth, heads, mlp_ratio: transformer size.
      pool: "cls" (prepend a learned CLS token and return it) or "mean" (average the patch tokens).
      dtype: compute dtype; parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    if pool not in ("cls", "mean"):
      raise ValueError(f"model.pool must be 'cls' or 'mean', got {pool!r}")
    if image_size % patch_size:
      raise ValueError(
          f"model.image_size ({image_size}) must be a multiple of model.patch_size ({patch_size})")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.pool = pool
    self.patch_size = patch_size
    self.grid = image_size // patch_size
    self.dtype = dtype
    self.patch_embed = nnx.Conv(in_channels, width, (patch_size, patch_size),
                                strides=(patch_size, patch_size), padding="VALID",
                                conv_general_dilated=conv_general_dilated, **kw)
    init = nnx.initializers.normal(0.02)
    self.cls = nnx.Param(init(rngs.params(), (1, 1, width), param_dtype)) if pool == "cls" else None
    # The CLS token gets its own position slot, as in the original ViT.
    self.num_prefix = 1 if pool == "cls" else 0
    self.pos_embed = nnx.Param(
        init(rngs.params(), (1, self.num_prefix + self.grid * self.grid, width), param_dtype))
    self.blocks = nnx.List([TransformerBlock(width, heads, mlp_ratio=mlp_ratio, **kw)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    self.out_dim = width

  def _pos_embed(self, gh, gw):
    pos = self.pos_embed[...]
    prefix, pos = pos[:, :self.num_prefix], pos[:, self.num_prefix:]
    if (gh, gw) != (self.grid, self.grid):
      grid = pos.reshape(1, self.grid, self.grid, -1)
      pos = jax.image.resize(grid, (1, gh, gw, grid.shape[-1]), "bilinear").reshape(1, gh * gw, -1)
    return prefix, pos

  def __call__(self, x: jax.Array, *, train: bool = False, axis_name: str | None = None) -> jax.Array:
    """Encodes images [B, H, W, C] to float32 features [B, out_dim].

    ``train`` and ``axis_name`` are accepted for a uniform encoder interface; a ViT has no batch norm.
    """
    del train, axis_name
    x = self.patch_embed(x)
    b, gh, gw, d = x.shape
    prefix_pos, patch_pos = self._pos_embed(gh, gw)
    x = x.reshape(b, gh * gw, d) + patch_pos.astype(x.dtype)
    if self.cls is not None:
      cls = (self.cls[...] + prefix_pos).astype(x.dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)
    for blk in self.blocks:
      x = blk(x)
    x = self.norm(x)
    out = x[:, 0] if self.pool == "cls" else jnp.mean(x, axis=1)
    return out.astype(jnp.float32)


def _vit(size, **kwargs):
  width, depth, heads = _VIT_SIZES[size]
  return ViT(width=width, depth=depth, heads=heads, **kwargs)


def vit_tiny(**kwargs) -> ViT:
  """ViT-Tiny: width 192, depth 12, 3 heads (DeiT-Ti)."""
  return _vit("tiny", **kwargs)


def vit_small(**kwargs) -> ViT:
  """ViT-Small: width 384, depth 12, 6 heads (DeiT-S)."""
  return _vit("small", **kwargs)


def vit_base(**kwargs) -> ViT:
  """ViT-Base: width 768, depth 12, 12 heads."""
  return _vit("base", **kwargs)

