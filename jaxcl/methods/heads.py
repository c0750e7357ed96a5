"""The heads an image method puts on its encoder, built from the method's own config section.

``projector`` (SimCLR, MoCo, BYOL, Barlow Twins, VICReg, ...) and ``predictor`` (BYOL, SimSiam, MoCo v3)
read the ``proj_*`` / ``pred_hidden_dim`` fields every such method's ``default_config`` has.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from flax import nnx

from jaxcl import models


def projector(in_dim: int, mcfg: ml_collections.ConfigDict, dt: dict[str, Any],
              rngs: nnx.Rngs) -> models.ProjectionHead:
  """The projection MLP that ``mcfg`` (the method config) describes; ``dt``: the encoder's dtypes."""
  return models.ProjectionHead(
      in_dim, hidden_dim=mcfg.proj_hidden_dim, out_dim=mcfg.proj_out_dim, num_layers=mcfg.proj_layers,
      use_bn=mcfg.proj_bn, last_bn=mcfg.proj_last_bn, last_bn_affine=mcfg.proj_last_bn_affine,
      rngs=rngs, **dt)


def predictor(in_dim: int, mcfg: ml_collections.ConfigDict, dt: dict[str, Any],
              rngs: nnx.Rngs) -> models.PredictionHead:
  """The prediction MLP (BYOL / SimSiam / MoCo v3) that ``mcfg`` describes."""
  return models.PredictionHead(in_dim, hidden_dim=mcfg.pred_hidden_dim, out_dim=mcfg.proj_out_dim,
                               rngs=rngs, **dt)
