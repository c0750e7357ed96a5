"""The online/target pair shared by BYOL, MoCo v2 and MoCo v3.

The online network (encoder + projector, + predictor for BYOL / MoCo v3) is trained; the target network
is a ``Target``-variable copy of the encoder and projector that follows the online weights by EMA after
each optimizer step, with a constant decay (MoCo v2, m = 0.999) or BYOL's cosine schedule from ``base``
to 1 (BYOL, MoCo v3).
"""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from jaxcl.methods import common


class MomentumMethod(common.ImageMethod):
  """Online encoder/projector(/predictor) and their EMA target; subclasses define ``loss``."""

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs, use_predictor: bool):
    super().__init__(config, image_shape=image_shape, rngs=rngs)
    mcfg = config.method
    self.tau = common.target_momentum(mcfg)  # tau(step, total_steps): the target decay rate
    dt = common.model_dtypes(config)
    self.projector = common.projector(self.encoder.out_dim, mcfg, dt, rngs)
    self.predictor = common.predictor(mcfg.proj_out_dim, mcfg, dt, rngs) if use_predictor else None
    self.target_encoder = common.make_target(self.encoder)
    self.target_projector = common.make_target(self.projector)

  def online(self, x: jax.Array, *, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
    """Online projections z and predictions p (p = z without a predictor), training mode."""
    bn = self.bn_axis(axis_name)
    z = self.projector(self.encoder(x, train=True, axis_name=bn), train=True, axis_name=bn)
    p = z if self.predictor is None else self.predictor(z, train=True, axis_name=bn)
    return z, p

  def target(self, x: jax.Array, *, axis_name: str | None) -> jax.Array:
    """Target projections, gradient stopped (BN in training mode, as the papers' target networks)."""
    bn = self.bn_axis(axis_name)
    z = self.target_projector(self.target_encoder(x, train=True, axis_name=bn), train=True,
                              axis_name=bn)
    return jax.lax.stop_gradient(z)

  def after_step(self, *, step, total_steps):
    tau = self.tau(step, total_steps)
    common.ema_update(self.target_encoder, self.encoder, tau)
    common.ema_update(self.target_projector, self.projector, tau)
