"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

Two views through one encoder and a 3-layer projector (8192 wide in the paper); the cross-correlation
matrix of the batch-standardised projections is pushed to the identity (eq. 1, lambda = 5e-3). Batch
statistics span the global batch.
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from jaxcl import losses
from jaxcl.methods import common


def default_config() -> ml_collections.ConfigDict:
  """Barlow Twins' hyperparameters (projector 8192-8192-8192, lambda 5e-3)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "barlow_twins"
  cfg.lambda_offdiag = 5e-3
  cfg.proj_hidden_dim = 8192
  cfg.proj_out_dim = 8192
  cfg.proj_layers = 3
  cfg.proj_bn = True
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.sync_bn = True
  return cfg


class BarlowTwins(common.ImageMethod):
  """Encoder + projector trained with the Barlow Twins redundancy-reduction loss."""

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs):
    super().__init__(config, image_shape=image_shape, rngs=rngs)
    mcfg = config.method
    self.lambda_offdiag = float(mcfg.lambda_offdiag)
    self.projector = common.projector(self.encoder.out_dim, mcfg, common.model_dtypes(config), rngs)

  def loss(self, batch, *, axis_name=None):
    z1, z2, features = self.project_two_views(batch, axis_name)
    loss = losses.barlow_twins(z1, z2, lambda_offdiag=self.lambda_offdiag, axis_name=axis_name)
    return loss, common.view_metrics(z1, z2, axis_name, features=features)
