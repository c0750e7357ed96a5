"""Supervised contrastive learning (Khosla et al. 2020, "Supervised Contrastive Learning").

SimCLR's two-view pipeline, but every view of the same class is a positive (L_out, eq. 2): the 2N
projections of the global batch are stacked with their labels repeated.
"""

from __future__ import annotations

import ml_collections

from jaxcl.methods.image import TwoViewMethod


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
  cfg.loss = "supcon"  # or another of jaxcl.losses.TWO_VIEW_LOSSES (the triplet miners, say)
  cfg.loss_kwargs = ml_collections.ConfigDict()
  cfg.loss_block_size = 0
  return cfg


class SupCon(TwoViewMethod):
  """Encoder + projector trained with the supervised contrastive loss; reads ``batch['label']``.

  The 2N projections are stacked with their labels repeated; row order (this device's view-1 rows, then
  its view-2 rows) does not matter, as L_out is a mean over anchors whose positives are found by label.
  """
