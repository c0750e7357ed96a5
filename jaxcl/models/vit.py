"""Vision Transformer encoders (Dosovitskiy et al. 2021) and the pre-LN transformer block they share
with the text tower.

ViT-Tiny/Small/Base (widths 192/384/768, 12 layers, 3/6/12 heads; Touvron et al. 2021 for Tiny/Small)
with a configurable patch size, a learned position embedding, and CLS-token or mean pooling. No
classifier: the output is the final-LayerNorm feature of the CLS token (or of the mean over patches).
``ViT.tokens`` gives the final-LayerNorm patch tokens instead, optionally with a key mask that hides
tokens from attention (I-JEPA's context encoder).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.conv import conv_general_dilated

_VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


class TransformerBlock(nnx.Module):
  """Pre-LN block: x + MHSA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of ``mlp_ratio`` x width."""

  def __init__(self, width, heads, *, mlp_ratio=4.0, init_std=0.0, dtype=None,
               param_dtype=jnp.float32, rngs):
    """``init_std`` > 0: the linear kernels start truncated-normal with that std (I-JEPA's predictor:
    0.02, as timm's ViTs); 0: Flax's default (LeCun normal)."""
    if width % heads:
      raise ValueError(f"transformer width {width} must be divisible by the number of heads {heads}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    lin = dict(kw, kernel_init=nnx.initializers.truncated_normal(init_std)) if init_std > 0 else kw
    self.heads = heads
    self.ln1 = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    self.qkv = nnx.Linear(width, 3 * width, **lin)
    self.proj = nnx.Linear(width, width, **lin)
    self.ln2 = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    hidden = int(width * mlp_ratio)
    self.fc1 = nnx.Linear(width, hidden, **lin)
    self.fc2 = nnx.Linear(hidden, width, **lin)

  def __call__(self, x, *, mask=None, is_causal=False):
    """``x`` [B, T, width]; ``mask``: boolean, broadcastable to [B, heads, T, T] (True: may attend)."""
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
    self.mlp_ratio = mlp_ratio  # I-JEPA's predictor takes the encoder's
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

  def _encode(self, x: jax.Array, keep: jax.Array | None) -> jax.Array:
    """Every token after the final LayerNorm, [B, num_prefix + N, width] (prefix first)."""
    x = self.patch_embed(x)
    b, gh, gw, d = x.shape
    prefix_pos, patch_pos = self._pos_embed(gh, gw)
    x = x.reshape(b, gh * gw, d) + patch_pos.astype(x.dtype)
    if self.cls is not None:
      cls = (self.cls[...] + prefix_pos).astype(x.dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)
    mask = None
    if keep is not None:
      keep = jnp.asarray(keep, bool)
      if keep.shape != (b, gh * gw):
        raise ValueError(f"keep must be a boolean [B, N] = [{b}, {gh * gw}] mask over the patches, got "
                         f"shape {tuple(keep.shape)}")
      if self.num_prefix:  # the CLS token is always seen
        keep = jnp.concatenate([jnp.ones((b, self.num_prefix), bool), keep], axis=1)
      mask = keep[:, None, None, :]  # [B, heads, queries, keys]: a hidden key is hidden from every query
    for blk in self.blocks:
      x = blk(x, mask=mask)
    return self.norm(x)

  def tokens(self, x: jax.Array, *, keep: jax.Array | None = None) -> jax.Array:
    """The final-LayerNorm patch tokens [B, N, width] (float32, no CLS token) of images [B, H, W, C].

    Args:
      x: images [B, H, W, C].
      keep: optional boolean [B, N] key mask over the N = (H / patch) * (W / patch) patches (row-major).
        A token with ``keep=False`` is attended to by no token, so the kept tokens' outputs equal the
        encoder run on the kept tokens alone (with their position embeddings). The hidden tokens'
        own outputs are still computed (static shapes) and mean nothing. Each row needs at least one
        kept token (or a CLS token).

    Returns:
      float32 [B, N, width].
    """
    return self._encode(x, keep)[:, self.num_prefix:].astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool = False, axis_name: str | None = None) -> jax.Array:
    """Encodes images [B, H, W, C] to float32 features [B, out_dim].

    ``train`` and ``axis_name`` are accepted for a uniform encoder interface; a ViT has no batch norm.
    """
    del train, axis_name
    x = self._encode(x, None)
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

