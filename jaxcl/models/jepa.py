"""I-JEPA's predictor (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
Predictive Architecture", Sec. 3 and its code's ``VisionTransformerPredictor``) and the fixed 2-D
sine-cosine position embedding it uses.

The predictor is a narrow transformer: the context encoder's tokens are mapped to its width, mask
tokens (one learned vector) stand at the positions of a target block, every token gets the fixed
position embedding of its patch, and the output is mapped back to the encoder's width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcl.models.vit import TransformerBlock


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> np.ndarray:
  """Fixed 2-D sine-cosine position embeddings [gh * gw, dim] of a patch grid, row-major (MAE, He et al.
  2022; I-JEPA's code uses MAE's).

  The first ``dim / 2`` features encode the row, the rest the column, each as ``[sin(p w_k),
  cos(p w_k)]`` with frequencies ``w_k = 10000^(-k / (dim / 4))``, k = 0 .. dim / 4 - 1 (Vaswani et al.
  2017).

  Args:
    dim: embedding width, a multiple of 4.
    grid: (gh, gw) patches.

  Returns:
    float32 NumPy array [gh * gw, dim] (a constant: no parameters).
  """
  if dim % 4:
    raise ValueError(f"a 2-D sine-cosine position embedding needs a width divisible by 4, got {dim}")
  gh, gw = grid
  freqs = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))

  def axis(pos):
    angles = pos.astype(np.float64)[:, None] * freqs[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
  return np.concatenate([axis(rows.reshape(-1)), axis(cols.reshape(-1))], axis=1).astype(np.float32)


class JEPAPredictor(nnx.Module):
  """Linear in -> (+ mask token at target positions) + 2-D sin-cos positions -> ``depth`` pre-LN
  transformer blocks -> LayerNorm -> linear out."""

  def __init__(
      self,
      in_dim: int,
      *,
      width: int = 384,
      depth: int = 12,
      heads: int = 16,
      mlp_ratio: float = 4.0,
      init_std: float = 0.02,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the predictor.

    Args:
      in_dim: the encoder's token width (input and output width).
      width: the predictor's width (384 in the paper, narrower than the encoder).
      depth: transformer blocks (12 in the paper for ViT-H/14).
      heads: attention heads (the paper's code uses the encoder's count).
      mlp_ratio: MLP hidden width / width.
      init_std: std of the truncated-normal init of the linear kernels and the mask token (0.02, as
        the paper's code).
      dtype: compute dtype; parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    if width % 4:
      raise ValueError(f"method.predictor_width must be a multiple of 4 (2-D sin-cos positions), "
                       f"got {width}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.width = width
    init = nnx.initializers.truncated_normal(init_std)
    self.embed = nnx.Linear(in_dim, width, kernel_init=init, **kw)
    self.mask_token = nnx.Param(init(rngs.params(), (width,), param_dtype))
    self.blocks = nnx.List([
        TransformerBlock(width, heads, mlp_ratio=mlp_ratio, init_std=init_std, **kw)
        for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    self.proj = nnx.Linear(width, in_dim, kernel_init=init, **kw)

  def __call__(self, tokens: jax.Array, context: jax.Array, targets: jax.Array, *,
               grid: tuple[int, int]) -> jax.Array:
    """Predicts the tokens of each target block from the context.

    For each of the M target blocks separately (the batch is repeated M times, as in the paper's code):
    the context tokens and the block's mask tokens, each with its position embedding, attend to each
    other; no other token is seen.

    Args:
      tokens: [B, N, in_dim] the context encoder's tokens (only those at ``context`` are read).
      context: bool [B, N] the context positions.
      targets: bool [B, M, N] the target blocks' positions (disjoint from ``context``).
      grid: (gh, gw) with gh * gw = N.

    Returns:
      float32 [B, M, N, in_dim]: predictions at every position; only those at ``targets[:, m]`` mean
      anything (the loss reads those).
    """
    b, n, _ = tokens.shape
    m = targets.shape[1]
    if grid[0] * grid[1] != n or context.shape != (b, n) or targets.shape != (b, m, n):
      raise ValueError(f"predictor inputs must be tokens [B, N, D], context [B, N] and targets "
                       f"[B, M, N] with N = {grid[0]} x {grid[1]}; got {tuple(tokens.shape)}, "
                       f"{tuple(context.shape)}, {tuple(targets.shape)}")
    pos = jnp.asarray(sincos_pos_embed_2d(self.width, grid))
    x = self.embed(tokens)
    x = x + pos.astype(x.dtype)
    mask_token = (self.mask_token[...] + pos).astype(x.dtype)  # [N, width]
    x = jnp.where(targets[..., None], mask_token, x[:, None])  # [B, M, N, width]
    x = x.reshape(b * m, n, self.width)
    keep = (context[:, None, :] | targets).reshape(b * m, 1, 1, n)  # key mask
    for blk in self.blocks:
      x = blk(x, mask=keep)
    x = self.proj(self.norm(x))
    return x.reshape(b, m, n, -1).astype(jnp.float32)
