"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent") and SimSiam (Chen and He 2021, "Exploring
Simple Siamese Representation Learning").

BYOL: the online network's prediction of one view regresses the EMA target's projection of the other
view (``2 - 2 cos``, eq. 2), symmetrised over the views; the target follows the online weights with
``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``. SimSiam drops the target network: the same
network's projection of the other view, gradient stopped, is the target (eq. 1-2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods import heads
from jaxcl.methods.base import Facts
from jaxcl.methods.image import ImageMethod, global_mean, two_views, view_metrics
from jaxcl.methods.momentum import MomentumMethod


def default_config() -> ml_collections.ConfigDict:
  """BYOL's hyperparameters (projector and predictor 4096-256, tau_base 0.996, cosine schedule)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "byol"
  cfg.momentum = 0.996
  cfg.momentum_schedule = "cosine"
  cfg.proj_hidden_dim = 4096
  cfg.proj_out_dim = 256
  cfg.proj_layers = 2
  cfg.proj_bn = True
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.pred_hidden_dim = 4096
  cfg.sync_bn = True
  return cfg


def simsiam_default_config() -> ml_collections.ConfigDict:
  """SimSiam's hyperparameters (projector 2048x3 with BN on the output, predictor 512 bottleneck)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "simsiam"
  cfg.proj_hidden_dim = 2048
  cfg.proj_out_dim = 2048
  cfg.proj_layers = 3
  cfg.proj_bn = True
  cfg.proj_last_bn = True
  cfg.proj_last_bn_affine = True
  cfg.pred_hidden_dim = 512
  cfg.sync_bn = True
  return cfg


def symmetric_regression(loss_fn, p1, p2, z1, z2, axis_name):
  """``(loss_fn(p1, sg(z2)) + loss_fn(p2, sg(z1)))`` as the global mean over devices.

  ``loss_fn`` is a per-row mean (``byol_loss`` / ``negative_cosine``); every device holds as many rows,
  so the mean over devices of the local means is the global mean.
  """
  sg = jax.lax.stop_gradient
  local = loss_fn(p1, sg(z2)) + loss_fn(p2, sg(z1))
  return global_mean(local, axis_name)


class BYOL(MomentumMethod):
  """Online encoder/projector/predictor regressing an EMA target (see module docstring)."""

  multi_crop = True

  def loss(self, batch, *, axis_name=None):
    if self.num_local:
      return self.multi_crop_loss(batch, axis_name=axis_name)
    v1, v2 = two_views(self.recipe, batch)
    x = jnp.concatenate([v1, v2])
    _, p = self.online(x, axis_name=axis_name)
    t1, t2 = jnp.split(self.target(x, axis_name=axis_name), 2)
    p1, p2 = jnp.split(p, 2)
    # BYOL's total loss is L + L~ (the two directions summed), eq. 2.
    loss = symmetric_regression(losses.byol_loss, p1, p2, t1, t2, axis_name)
    return loss, view_metrics(p1, t2, axis_name)

  def multi_crop_loss(self, batch, *, axis_name=None):
    """Multi-crop BYOL: the target sees the global views only; every view's prediction regresses the
    target of each global view other than itself. Scaled so that with no local views it is eq. 2."""
    def online(h, bn):
      z = self.projector(h, train=True, axis_name=bn)
      return self.predictor(z, train=True, axis_name=bn)

    views = self.recipe(batch["key"], batch["image"])
    (p1, p2), local, _ = self.multi_crop_pass(views, online, axis_name)
    t1, t2 = jnp.split(self.target(jnp.concatenate(views[:2]), axis_name=axis_name), 2)
    sg = jax.lax.stop_gradient
    pairs = [(p1, t2), (p2, t1)] + [(p, t) for p in local for t in (t1, t2)]
    local_loss = sum(losses.byol_loss(p, sg(t)) for p, t in pairs) * 2 / len(pairs)
    return global_mean(local_loss, axis_name), view_metrics(p1, t2, axis_name)


class SimSiam(ImageMethod):
  """Encoder/projector/predictor with stop-gradient, no target network (see module docstring)."""

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    mcfg = method_config
    dt = encoder.dtypes
    self.projector = heads.projector(self.encoder.out_dim, mcfg, dt, rngs)
    self.predictor = heads.predictor(mcfg.proj_out_dim, mcfg, dt, rngs)

  def loss(self, batch, *, axis_name=None):
    v1, v2 = two_views(self.recipe, batch)
    bn = self.bn_axis(axis_name)
    z = self.projector(self.encoder(jnp.concatenate([v1, v2]), train=True, axis_name=bn),
                       train=True, axis_name=bn)
    p = self.predictor(z, train=True, axis_name=bn)
    z1, z2 = jnp.split(z, 2)
    p1, p2 = jnp.split(p, 2)
    # SimSiam's L = D(p1, sg z2) / 2 + D(p2, sg z1) / 2.
    loss = 0.5 * symmetric_regression(losses.negative_cosine, p1, p2, z1, z2, axis_name)
    return loss, view_metrics(z1, z2, axis_name)
