"""A small transformer text tower for CLIP/SigLIP (Radford et al. 2021; Zhai et al. 2023).

Token ids in, one vector per sequence out. Id 0 is padding; sequences are left-aligned and end with an
end-of-sequence token. With ``causal=True`` (CLIP's text tower) the feature is the last real token's
(the EOS) output; ``pool="mean"`` averages the non-padding tokens instead, ``pool="cls"`` takes the
first token's (a retriever's bidirectional [CLS] pooling).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.vit import TransformerBlock


class TextTransformer(nnx.Module):
  """Token + learned position embedding, pre-LN transformer blocks, final LN, EOS or mean pooling."""

  def __init__(
      self,
      *,
      vocab_size: int,
      max_len: int,
      width: int = 128,
      depth: int = 2,
      heads: int = 4,
      mlp_ratio: float = 4.0,
      causal: bool = True,
      pool: str = "eos",
      pad_id: int = 0,
      position_embedding: bool = True,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the tower.

    Args:
      vocab_size: number of token ids (including padding and EOS).
      max_len: longest sequence.
      width, depth, heads, mlp_ratio: transformer size.
      causal: causal self-attention (each token sees only earlier ones) as in CLIP; else bidirectional.
      pool: "eos" (output at the last non-padding token), "mean" (mean over non-padding tokens) or
        "cls" (output at the first token: BERT's [CLS], with bidirectional attention).
      pad_id: the padding id, masked out of attention and pooling.
      position_embedding: add a learned position embedding; without it (and with depth 0) the tower
        is a bag of tokens: a mean of token vectors, whose random init already scores texts by the
        tokens they share.
      dtype: compute dtype; parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    if pool not in ("eos", "mean", "cls"):
      raise ValueError(f"text pool must be 'eos', 'mean' or 'cls', got {pool!r}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.causal = causal
    self.pool = pool
    self.pad_id = pad_id
    self.max_len = max_len
    self.embed = nnx.Embed(vocab_size, width, embedding_init=nnx.initializers.normal(0.02), **kw)
    self.pos_embed = nnx.Param(nnx.initializers.normal(0.01)(rngs.params(), (1, max_len, width),
                                                             param_dtype)) if position_embedding else None
    self.blocks = nnx.List([TransformerBlock(width, heads, mlp_ratio=mlp_ratio, **kw)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, epsilon=1e-6, **kw)
    self.out_dim = width

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Encodes token ids [B, T] (T <= max_len, int) to float32 features [B, width]."""
    b, t = tokens.shape
    valid = tokens != self.pad_id  # [B, T]
    x = _lookup(self.embed.embedding[...], tokens).astype(self.embed.dtype or self.embed.param_dtype)
    if self.pos_embed is not None:
      x = x + self.pos_embed[...][:, :t].astype(x.dtype)
    # Keys that are padding are never attended to; with causal attention this is implied for the
    # tokens we pool, but bidirectional attention needs it.
    mask = jnp.broadcast_to(valid[:, None, None, :], (b, 1, t, t))
    for blk in self.blocks:
      x = blk(x, mask=mask, is_causal=self.causal)
    x = self.norm(x).astype(jnp.float32)
    if self.pool == "cls":
      return x[:, 0]
    if self.pool == "eos":
      last = jnp.maximum(jnp.sum(valid, axis=1) - 1, 0)
      return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    w = valid.astype(jnp.float32)[..., None]
    return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def _lookup(table: jax.Array, tokens: jax.Array) -> jax.Array:
  """Rows of ``table`` for each token id; with ids sharded over an Explicit mesh axis (sharded
  evaluation), the rows come out sharded the same way."""
  spec = getattr(getattr(jax.typeof(tokens), "sharding", None), "spec", None)
  if spec is None or all(s is None for s in spec):
    return jnp.take(table, tokens, axis=0)
  return table.at[tokens].get(out_sharding=jax.P(*spec, None))
