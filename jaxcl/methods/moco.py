"""MoCo v2 (Chen, Fan, Girshick and He 2020, "Improved Baselines with Momentum Contrastive Learning")
and MoCo v3 (Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers").

MoCo v2: queries from the online encoder + MLP head, keys from its momentum copy (m = 0.999), InfoNCE
against a queue of 65536 past keys (He et al. 2020, eq. 1; temperature 0.2). The queue is a ``Queue``
variable sharded over devices on dim 0; each step's keys are ``Stash``-ed in ``loss`` and pushed
(FIFO, oldest dropped) in ``after_step``. BatchNorm is per device, as in the paper; with
``shuffle_bn`` (on by default, as in the paper's code) the key encoder sees a random permutation of
the global batch spread over the devices and its outputs are put back in order (shuffle-BN, Sec. 3.3),
so a device's BN statistics cannot tell which key belongs to which of its queries. On one device it
changes nothing.

MoCo v3: no queue; online encoder + projector + predictor, momentum encoder + projector with the cosine
schedule from m = 0.99, symmetric InfoNCE over the global batch scaled by 2t as in the paper's code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import losses
from jaxcl.methods import common
from jaxcl.methods.base import Queue, Stash
from jaxcl.methods.momentum import MomentumMethod


def v2_default_config() -> ml_collections.ConfigDict:
  """MoCo v2's hyperparameters (queue 65536, m 0.999, t 0.2, MLP head 2048-128 without BN)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "moco_v2"
  cfg.temperature = 0.2
  cfg.queue_size = 65536
  cfg.momentum = 0.999
  cfg.momentum_schedule = "constant"
  cfg.proj_hidden_dim = 2048
  cfg.proj_out_dim = 128
  cfg.proj_layers = 2
  cfg.proj_bn = False
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.sync_bn = False
  cfg.shuffle_bn = True  # the key encoder's batch permuted across devices (per-device BN only)
  return cfg


def v3_default_config() -> ml_collections.ConfigDict:
  """MoCo v3's hyperparameters (t 0.2, m 0.99 cosine; projector 4096x3 -> 256, predictor 4096 -> 256)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "moco_v3"
  cfg.temperature = 0.2
  cfg.momentum = 0.99
  cfg.momentum_schedule = "cosine"
  cfg.proj_hidden_dim = 4096
  cfg.proj_out_dim = 256
  cfg.proj_layers = 3
  cfg.proj_bn = True
  cfg.proj_last_bn = True
  cfg.proj_last_bn_affine = False
  cfg.pred_hidden_dim = 4096
  cfg.sync_bn = True
  return cfg


class MoCoV2(MomentumMethod):
  """Momentum encoder + queue of negatives (see module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs, batch_size: int | None = None):
    super().__init__(config, image_shape=image_shape, rngs=rngs, use_predictor=False)
    mcfg = config.method
    batch = batch_size if batch_size is not None else common.global_batch_size(config)
    if mcfg.queue_size < batch:
      raise ValueError(f"method.queue_size ({mcfg.queue_size}) must be at least the global batch size"
                       f" ({batch})")
    self.temperature = float(mcfg.temperature)
    dim = int(mcfg.proj_out_dim)
    # The queue starts as random unit vectors (He et al. 2020's code).
    init = jax.random.normal(rngs.params(), (int(mcfg.queue_size), dim), jnp.float32)
    self.queue = Queue(losses.l2_normalize(init))
    self.keys = Stash(jnp.zeros((batch, dim), jnp.float32))
    self.shuffle_bn = bool(mcfg.get("shuffle_bn", False))
    if self.shuffle_bn and self.sync_bn:
      raise ValueError("method.shuffle_bn=True needs per-device BatchNorm (method.sync_bn=False): "
                       "synchronised statistics already cover the whole batch; turn one of them off.")

  def keys_of(self, images: jax.Array, example_keys: jax.Array, *,
              axis_name: str | None) -> jax.Array:
    """Normalised key projections of ``images`` (this device's rows), with shuffle-BN if enabled."""
    if not (self.shuffle_bn and axis_name is not None):
      return losses.l2_normalize(self.target(images, axis_name=axis_name))
    key = common.shared_key(example_keys, axis_name, salt=1)
    shuffled, perm = common.shuffle_across_devices(images, key, axis_name)
    k = losses.l2_normalize(self.target(shuffled, axis_name=axis_name))
    return common.unshuffle_across_devices(k, perm, axis_name)

  def loss(self, batch, *, axis_name=None):
    v1, v2 = common.two_views(self.recipe, batch)
    q, _ = self.online(v1, axis_name=axis_name)
    k = self.keys_of(v2, batch["key"], axis_name=axis_name)
    queue = jax.lax.stop_gradient(self.queue[...])
    loss = losses.moco_infonce(q, k, queue, temperature=self.temperature, axis_name=axis_name)
    self.keys[...] = k
    return loss, common.view_metrics(q, k, axis_name)

  def after_step(self, *, step, total_steps):
    super().after_step(step=step, total_steps=total_steps)
    self.queue[...] = common.queue_push(self.queue[...], self.keys[...])


class MoCoV3(MomentumMethod):
  """Online encoder/projector/predictor contrasted with a momentum target, no queue."""

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs):
    super().__init__(config, image_shape=image_shape, rngs=rngs, use_predictor=True)
    self.temperature = float(config.method.temperature)

  def loss(self, batch, *, axis_name=None):
    v1, v2 = common.two_views(self.recipe, batch)
    x = jnp.concatenate([v1, v2])
    _, q = self.online(x, axis_name=axis_name)
    k1, k2 = jnp.split(self.target(x, axis_name=axis_name), 2)
    q1, q2 = jnp.split(q, 2)
    t = self.temperature
    # The official code scales each direction's cross-entropy by 2t.
    loss = 2 * t * (losses.info_nce(q1, k2, temperature=t, axis_name=axis_name)
                    + losses.info_nce(q2, k1, temperature=t, axis_name=axis_name))
    return loss, common.view_metrics(q1, k2, axis_name)
