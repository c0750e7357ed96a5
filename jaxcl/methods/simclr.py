"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two views per image through one encoder and a projection MLP, NT-Xent over the 2N views of the global
batch, BatchNorm synchronised over devices ("global BN", Sec. 2.3). SimCLR v2 (Chen et al. 2020b) is the
same with a 3-layer projector (``proj_layers=3``). The loss is a plug-in: ``method.loss`` names any
two-view loss of ``jaxcl.losses.registry`` (or a user's ``"module:function"``) and ``method.loss_kwargs``
its hyperparameters; ``method.temperature`` is passed to losses that take a temperature.
"""

from __future__ import annotations

import ml_collections

from jaxcl.methods.image import TwoViewMethod


def default_config() -> ml_collections.ConfigDict:
  """SimCLR's hyperparameters (ImageNet recipe: temperature 0.1, 2048-2048-128 projector)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "simclr"  # one of jaxcl.methods.NAMES
  cfg.temperature = 0.1  # softmax temperature (passed to every loss that takes one)
  cfg.proj_hidden_dim = 2048  # projector hidden width
  cfg.proj_out_dim = 128  # projection (embedding) width the loss sees
  cfg.proj_layers = 2  # projector depth (3 for SimCLR v2)
  cfg.proj_bn = True  # BatchNorm after hidden projector layers
  cfg.proj_last_bn = False  # BatchNorm on the projector output
  cfg.proj_last_bn_affine = True  # that output BN has scale/bias
  cfg.sync_bn = True  # BatchNorm statistics over all devices (global BN)
  cfg.loss = "nt_xent"  # any of jaxcl.losses.TWO_VIEW_LOSSES, or "package.module:function"
  cfg.loss_kwargs = ml_collections.ConfigDict()  # the loss's hyperparameters (temperature: above)
  cfg.loss_block_size = 0  # > 0: the loss's memory-linear tiled form with this block size
  return cfg


class SimCLR(TwoViewMethod):
  """Encoder + projector trained with NT-Xent or the loss ``method.loss`` names (module docstring)."""
