"""MLP heads on top of an encoder: the projector and the predictor.

ProjectionHead is SimCLR v2's MLP (Chen et al. 2020b): ``num_layers`` linear layers, each hidden one
followed by BatchNorm and ReLU, the last optionally by BatchNorm (SimCLR v2, SimSiam, Barlow Twins; MoCo v3
without the affine part). PredictionHead is the BYOL (Grill et al. 2020) / SimSiam (Chen & He 2021) /
MoCo v3 (Chen et al. 2021) predictor: Linear-BN-ReLU-Linear. Linear layers drop their bias where a BN
follows (the BN's beta plays its role).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.norm import BatchNorm


class ProjectionHead(nnx.Module):
  """SimCLR v2-style MLP projector: [B, in_dim] -> [B, out_dim]."""

  def __init__(
      self,
      in_dim: int,
      *,
      hidden_dim: int = 2048,
      out_dim: int = 128,
      num_layers: int = 2,
      use_bn: bool = True,
      last_bn: bool = False,
      last_bn_affine: bool = True,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the head.

    Args:
      in_dim: input width (the encoder's ``out_dim``).
      hidden_dim: width of every hidden layer.
      out_dim: output width.
      num_layers: number of linear layers (1 = a linear projection).
      use_bn: BatchNorm after every hidden linear layer.
      last_bn: BatchNorm after the last linear layer too.
      last_bn_affine: whether that last BN learns scale and bias (MoCo v3 uses none).
      dtype: compute dtype; parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    if num_layers < 1:
      raise ValueError(f"projector num_layers must be >= 1, got {num_layers}")
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    linears, norms = [], []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i in range(num_layers):
      last = i == num_layers - 1
      bn = last_bn if last else use_bn
      linears.append(nnx.Linear(dims[i], dims[i + 1], use_bias=not bn, rngs=rngs, **kw))
      if bn:
        affine = last_bn_affine if last else True
        norms.append(BatchNorm(dims[i + 1], use_scale=affine, use_bias=affine, **kw))
      else:
        norms.append(None)
    self.linears = nnx.List(linears)
    self.norms = nnx.List(norms)
    self.out_dim = out_dim

  def __call__(self, x: jax.Array, *, train: bool = False, axis_name: str | None = None) -> jax.Array:
    """Projects features [B, in_dim] to float32 [B, out_dim]; ``axis_name`` synchronises BN."""
    n = len(self.linears)
    for i, (lin, norm) in enumerate(zip(self.linears, self.norms)):
      x = lin(x)
      if norm is not None:
        x = norm(x, train=train, axis_name=axis_name)
      if i < n - 1:
        x = jax.nn.relu(x)
    return x.astype(jnp.float32)


class PredictionHead(ProjectionHead):
  """BYOL/SimSiam/MoCo v3 predictor: Linear-BN-ReLU-Linear (``num_layers`` = 2 by default)."""

  def __init__(
      self,
      in_dim: int,
      *,
      hidden_dim: int = 4096,
      out_dim: int = 256,
      num_layers: int = 2,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the predictor (see ``ProjectionHead`` for the arguments); the last layer has no BN."""
    super().__init__(in_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers,
                     use_bn=True, last_bn=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class DINOHead(nnx.Module):
  """DINO's head (Caron et al. 2021, Sec. 3 and its code): an MLP (GELU, optional BN) to a bottleneck,
  L2 normalisation, then a weight-normalised linear layer without bias to ``out_dim`` prototypes.

  The last layer is ``W = g * V / ||V||`` per output column (Salimans & Kingma 2016); with
  ``norm_last_layer`` (DINO's default) ``g`` is fixed to 1, so only directions are learned, which the
  paper found stabilises training. ``freeze_last_layer`` stops the last layer's gradient (DINO freezes
  it during the first epoch).
  """

  def __init__(
      self,
      in_dim: int,
      *,
      hidden_dim: int = 2048,
      bottleneck_dim: int = 256,
      out_dim: int = 65536,
      num_layers: int = 3,
      use_bn: bool = False,
      norm_last_layer: bool = True,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the head.

    Args:
      in_dim: input width (the encoder's ``out_dim``).
      hidden_dim: width of the MLP's hidden layers.
      bottleneck_dim: the MLP's output width, before L2 normalisation.
      out_dim: number of prototypes K (65,536 in the paper).
      num_layers: linear layers of the MLP (>= 1; 3 in the paper).
      use_bn: BatchNorm after each hidden layer (DINO uses it with ResNets only).
      norm_last_layer: fix the weight norm's gain ``g`` to 1.
      dtype: compute dtype; parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    if num_layers < 1:
      raise ValueError(f"DINO head num_layers must be >= 1, got {num_layers}")
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    init = nnx.initializers.truncated_normal(0.02)
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
    self.linears = nnx.List([nnx.Linear(dims[i], dims[i + 1], kernel_init=init, rngs=rngs, **kw)
                             for i in range(num_layers)])
    self.norms = nnx.List([BatchNorm(dims[i + 1], **kw) if use_bn else None
                           for i in range(num_layers - 1)])
    self.last_direction = nnx.Param(init(rngs.params(), (bottleneck_dim, out_dim), param_dtype))
    self.last_gain = None if norm_last_layer else nnx.Param(jnp.ones((out_dim,), param_dtype))
    self.dtype = dtype
    self.out_dim = out_dim

  def __call__(self, x: jax.Array, *, train: bool = False, axis_name: str | None = None,
               freeze_last_layer: jax.Array | bool = False) -> jax.Array:
    """Logits [B, out_dim] (float32) of features [B, in_dim]; ``axis_name`` synchronises BN."""
    for i, lin in enumerate(self.linears):
      x = lin(x)
      if i < len(self.linears) - 1:
        if self.norms[i] is not None:
          x = self.norms[i](x, train=train, axis_name=axis_name)
        x = jax.nn.gelu(x, approximate=False)
    x = x.astype(jnp.float32)
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    v = self.last_direction[...].astype(jnp.float32)
    v = jnp.where(freeze_last_layer, jax.lax.stop_gradient(v), v)
    w = v / jnp.maximum(jnp.linalg.norm(v, axis=0, keepdims=True), 1e-12)
    if self.last_gain is not None:
      w = w * jnp.where(freeze_last_layer, jax.lax.stop_gradient(self.last_gain[...]),
                        self.last_gain[...]).astype(jnp.float32)
    return x @ w
