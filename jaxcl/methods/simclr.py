"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two views per image through one encoder and a projection MLP, NT-Xent over the 2N views of the global
batch, BatchNorm synchronised over devices ("global BN", Sec. 2.3). SimCLR v2 (Chen et al. 2020b) is the
same with a 3-layer projector (``proj_layers=3``).
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from jaxcl import losses
from jaxcl.methods import common


def default_config() -> ml_collections.ConfigDict:
  """SimCLR's hyperparameters (ImageNet recipe: temperature 0.1, 2048-2048-128 projector)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "simclr"
  cfg.temperature = 0.1
  cfg.proj_hidden_dim = 2048
  cfg.proj_out_dim = 128
  cfg.proj_layers = 2
  cfg.proj_bn = True
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.sync_bn = True
  cfg.loss_block_size = 0  # > 0: memory-linear tiled NT-Xent with this block size
  return cfg


class SimCLR(common.ImageMethod):
  """Encoder + projector trained with NT-Xent (see module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs):
    super().__init__(config, image_shape=image_shape, rngs=rngs)
    mcfg = config.method
    self.temperature = float(mcfg.temperature)
    self.block_size = int(mcfg.loss_block_size) or None
    self.projector = common.projector(self.encoder.out_dim, mcfg, common.model_dtypes(config), rngs)

  def embed(self, batch, *, axis_name=None):
    """``{"z1": [b, D], "z2": [b, D], "features": [b, 2, F]}`` of the two views (gradient-caching hook)."""
    v = self.project_two_views(batch, axis_name)
    return {"z1": v.z1, "z2": v.z2, "features": v.features}

  def loss_from_embeddings(self, emb, batch, *, axis_name=None):
    """NT-Xent of ``embed``'s output (gradient-caching hook); ``loss`` is the composition."""
    del batch
    z1, z2 = emb["z1"], emb["z2"]
    loss = losses.nt_xent(z1, z2, temperature=self.temperature, axis_name=axis_name,
                          block_size=self.block_size)
    return loss, common.view_metrics(z1, z2, axis_name, pairwise=self.block_size is None,
                                     features=emb.get("features"))

  def loss(self, batch, *, axis_name=None):
    return self.loss_from_embeddings(self.embed(batch, axis_name=axis_name), batch,
                                     axis_name=axis_name)
