"""VICReg (Bardes, Ponce and LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization").

Two views through one encoder and a 3-layer expander (8192 wide in the paper); the loss is
``sim_weight * invariance + var_weight * variance + cov_weight * covariance`` (eq. 6; 25, 25, 1) with
batch statistics over the global batch.
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods import heads
from jaxcl.methods.base import Facts
from jaxcl.methods.image import ImageMethod, view_metrics


def default_config() -> ml_collections.ConfigDict:
  """VICReg's hyperparameters (expander 8192-8192-8192; weights 25 / 25 / 1)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "vicreg"
  cfg.sim_weight = 25.0
  cfg.var_weight = 25.0
  cfg.cov_weight = 1.0
  cfg.proj_hidden_dim = 8192
  cfg.proj_out_dim = 8192
  cfg.proj_layers = 3
  cfg.proj_bn = True
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.sync_bn = True
  return cfg


class VICReg(ImageMethod):
  """Encoder + expander trained with the VICReg loss."""

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    mcfg = method_config
    self.weights = (float(mcfg.sim_weight), float(mcfg.var_weight), float(mcfg.cov_weight))
    self.projector = heads.projector(self.encoder.out_dim, mcfg, encoder.dtypes, rngs)

  def loss(self, batch, *, axis_name=None):
    z1, z2, features = self.project_two_views(batch, axis_name)
    sim, var, cov = self.weights
    loss = losses.vicreg(z1, z2, sim_weight=sim, var_weight=var, cov_weight=cov, axis_name=axis_name)
    return loss, view_metrics(z1, z2, axis_name, features=features)
