"""Sequence encoders for Contrastive Predictive Coding (van den Oord, Li and Vinyals 2018).

``Conv1DEncoder``: strided 1-D convolutions from a raw signal [B, T, C] to latents z [B, S, D], one per
``prod(strides)`` samples. The CPC audio encoder is five layers with kernels (10, 8, 4, 4, 4) and
strides (5, 4, 2, 2, 2), 160 samples (10 ms at 16 kHz) per latent, 512 channels; the default here is
that shape. Each convolution is followed by a per-step LayerNorm over channels (no batch statistics, so
the latents of one sequence never depend on the others) and a ReLU.

``GRUContext``: the autoregressive context network, a GRU over the latents, c_t = GRU(z_<=t) [B, S, H].

``CausalTransformerContext``: the paper's other suggestion for the context network ("a GRU, or a causal
transformer"): a linear projection of the latents plus fixed sinusoidal positions (Vaswani et al. 2017),
pre-LN transformer blocks with causal self-attention and a final LayerNorm, so c_t sees z_1 .. z_t only.
Fixed positions make it length-free: the same weights run on a training window and on a whole stored
sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.vit import TransformerBlock


class Conv1DEncoder(nnx.Module):
  """Strided 1-D convolutions: [B, T, C] -> [B, S, widths[-1]], S = valid output steps."""

  def __init__(self, in_channels: int, *, widths: Sequence[int] = (512,) * 5,
               kernels: Sequence[int] = (10, 8, 4, 4, 4), strides: Sequence[int] = (5, 4, 2, 2, 2),
               rngs: nnx.Rngs):
    if not len(widths) == len(kernels) == len(strides):
      raise ValueError(f"model.widths {tuple(widths)}, kernels {tuple(kernels)} and strides "
                       f"{tuple(strides)} must have one entry per layer.")
    chans = (in_channels, *widths)
    self.convs = nnx.List([nnx.Conv(chans[i], chans[i + 1], kernel_size=(k,), strides=(s,),
                                    padding="VALID", rngs=rngs)
                           for i, (k, s) in enumerate(zip(kernels, strides))])
    self.norms = nnx.List([nnx.LayerNorm(w, rngs=rngs) for w in widths])
    self.kernels, self.strides = tuple(kernels), tuple(strides)
    self.out_dim = int(widths[-1])

  def steps(self, length: int) -> int:
    """Latent steps S of a signal of ``length`` samples."""
    for k, s in zip(self.kernels, self.strides):
      length = (length - k) // s + 1
    return length

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    return x


class GRUContext(nnx.Module):
  """c_t = GRU(z_1 .. z_t): [B, S, D] -> [B, S, hidden]."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.rnn = nnx.RNN(nnx.GRUCell(in_dim, hidden, rngs=rngs), rngs=False)  # no RNG state to carry
    self.out_dim = int(hidden)

  def __call__(self, z: jax.Array) -> jax.Array:
    z = z.astype(jnp.float32)
    # A zero state derived from z, so that inside shard_map it varies over devices as z does.
    start = jnp.zeros((z.shape[0], self.out_dim), jnp.float32) + 0.0 * z[:, 0, :1]
    return self.rnn(z, initial_carry=start)


def sincos_pos_embed_1d(dim: int, length: int) -> jax.Array:
  """Fixed sinusoidal positions [length, dim] (Vaswani et al. 2017, sec. 3.5): for frequency
  w_i = 10000^(-2i/dim), sin(p w_i) in the first half of the channels and cos(p w_i) in the second."""
  if dim % 2:
    raise ValueError(f"sinusoidal positions need an even width, got {dim}")
  freqs = 1.0 / 10000.0 ** (jnp.arange(dim // 2, dtype=jnp.float32) / (dim // 2))
  angles = jnp.arange(length, dtype=jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)


class CausalTransformerContext(nnx.Module):
  """c_t = Transformer(z_1 .. z_t) with causal attention: [B, S, D] -> [B, S, width], any S."""

  def __init__(self, in_dim: int, width: int, *, depth: int = 2, heads: int = 4,
               mlp_ratio: float = 4.0, rngs: nnx.Rngs):
    """Builds the network.

    Args:
      in_dim: latent width D.
      width: context width H (the model width of every block).
      depth: number of transformer blocks.
      heads: attention heads; must divide ``width``.
      mlp_ratio: hidden width of each block's MLP, as a multiple of ``width``.
      rngs: initialisation keys.
    """
    if width % 2 or width % heads:
      raise ValueError(f"causal transformer width {width} must be even and divisible by heads={heads}.")
    self.proj = nnx.Linear(in_dim, width, rngs=rngs)
    self.blocks = nnx.List([TransformerBlock(width, heads, mlp_ratio=mlp_ratio, rngs=rngs)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
    self.out_dim = int(width)

  def __call__(self, z: jax.Array) -> jax.Array:
    """Contexts [B, S, width] of latents ``z`` [B, S, D], float32; c_t depends on z_1 .. z_t only."""
    x = self.proj(z.astype(jnp.float32))
    # Positions count from the first step given: a training window's and a whole signal's step t
    # share an embedding.
    x = x + sincos_pos_embed_1d(self.out_dim, x.shape[1])[None]
    for blk in self.blocks:
      x = blk(x, is_causal=True)
    return self.norm(x)
