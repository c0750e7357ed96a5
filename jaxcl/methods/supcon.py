"""Supervised contrastive learning (Khosla et al. 2020, "Supervised Contrastive Learning").

SimCLR's two-view pipeline, but every view of the same class is a positive (L_out, eq. 2): the 2N
projections of the global batch are stacked with their labels repeated.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import losses
from jaxcl.methods import common


def default_config() -> ml_collections.ConfigDict:
  """SupCon's hyperparameters (temperature 0.1; projector Linear-ReLU-Linear 2048-128, no BN)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "supcon"
  cfg.temperature = 0.1
  cfg.proj_hidden_dim = 2048
  cfg.proj_out_dim = 128
  cfg.proj_layers = 2
  cfg.proj_bn = False
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.sync_bn = True
  return cfg


class SupCon(common.ImageMethod):
  """Encoder + projector trained with the supervised contrastive loss; reads ``batch['label']``."""

  uses_labels = True

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs):
    super().__init__(config, image_shape=image_shape, rngs=rngs)
    mcfg = config.method
    self.temperature = float(mcfg.temperature)
    self.projector = common.projector(self.encoder.out_dim, mcfg, common.model_dtypes(config), rngs)

  def embed(self, batch, *, axis_name=None):
    """``{"z1": [b, D], "z2": [b, D], "features": [b, 2, F]}`` of the two views (gradient-caching hook)."""
    v = self.project_two_views(batch, axis_name)
    return {"z1": v.z1, "z2": v.z2, "features": v.features}

  def loss_from_embeddings(self, emb, batch, *, axis_name=None):
    """SupCon of ``embed``'s output with ``batch['label']`` (gradient-caching hook)."""
    z1, z2 = emb["z1"], emb["z2"]
    labels = batch["label"]
    # Row order (this device's view 1 rows, then its view 2 rows) does not matter: L_out is a mean over
    # anchors and each anchor's positives are found by label.
    loss = losses.supcon(jnp.concatenate([z1, z2]), jnp.concatenate([labels, labels]),
                         temperature=self.temperature, axis_name=axis_name)
    return loss, common.view_metrics(z1, z2, axis_name, features=emb.get("features"))

  def loss(self, batch, *, axis_name=None):
    return self.loss_from_embeddings(self.embed(batch, axis_name=axis_name), batch,
                                     axis_name=axis_name)
