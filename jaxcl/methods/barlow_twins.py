"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

Two views through one encoder and a 3-layer projector (8192 wide in the paper); the cross-correlation
matrix of the batch-standardised projections is pushed to the identity (eq. 1, lambda = 5e-3). Batch
statistics span the global batch.
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods import heads
from jaxcl.methods.base import Facts
from jaxcl.methods.image import ImageMethod, view_metrics


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


class BarlowTwins(ImageMethod):
  """Encoder + projector trained with the Barlow Twins redundancy-reduction loss."""

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    mcfg = method_config
    self.lambda_offdiag = float(mcfg.lambda_offdiag)
    self.projector = heads.projector(self.encoder.out_dim, mcfg, encoder.dtypes, rngs)

  def loss(self, batch, *, axis_name=None):
    z1, z2, features = self.project_two_views(batch, axis_name)
    loss = losses.barlow_twins(z1, z2, lambda_offdiag=self.lambda_offdiag, axis_name=axis_name)
    return loss, view_metrics(z1, z2, axis_name, features=features)
