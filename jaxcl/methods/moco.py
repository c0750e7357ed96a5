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
changes nothing. The queue's FIFO push and shuffle-BN's permutation across devices live here too.

MoCo v3: no queue; online encoder + projector + predictor, momentum encoder + projector with the cosine
schedule from m = 0.99, symmetric InfoNCE over the global batch scaled by 2t as in the paper's code.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods.base import Facts, Queue, Stash
from jaxcl.methods.image import two_views, view_metrics
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


# ---------------------------------------------------------------------------------------------------
# Shuffle-BN and the queue.


def shared_key(keys: jax.Array, axis_name: str | None, salt: int) -> jax.Array:
  """One key, equal on every device, from the per-example ``batch['key']`` (the global batch's first)."""
  first = jax.random.key_data(keys[:1])
  if axis_name is not None:
    first = jax.lax.all_gather(first, axis_name, axis=0, tiled=True)
  return jax.random.fold_in(jax.random.wrap_key_data(first[0]), salt)


def shuffle_across_devices(x: jax.Array, key: jax.Array,
                           axis_name: str | None) -> tuple[jax.Array, jax.Array | None]:
  """Shuffle-BN's first half (He et al. 2020, Sec. 3.3): this device's rows of a random permutation of
  the global batch.

  Args:
    x: this device's rows [b, ...].
    key: the permutation's key, equal on every device (``shared_key``).
    axis_name: the data axis (inside ``shard_map``); None: no shuffle.

  Returns:
    ``(rows, perm)``: ``rows = global_x[perm[offset : offset + b]]`` and the global permutation, to
    pass to ``unshuffle_across_devices``.
  """
  if axis_name is None:
    return x, None
  everything = losses.collective.gather(x, axis_name)
  perm = jax.random.permutation(key, everything.shape[0])
  mine = jax.lax.dynamic_slice_in_dim(perm, losses.collective.row_offset(x.shape[0], axis_name),
                                      x.shape[0])
  return everything[mine], perm


def unshuffle_across_devices(y: jax.Array, perm: jax.Array | None, axis_name: str | None) -> jax.Array:
  """Shuffle-BN's second half: the outputs of ``shuffle_across_devices``'s rows back in this device's
  original rows (``y`` row j belongs to global row ``perm[offset + j]``)."""
  if axis_name is None or perm is None:
    return y
  everything = losses.collective.gather(y, axis_name)  # global order of the permutation
  inverse = jnp.argsort(perm)  # where each original row went
  mine = jax.lax.dynamic_slice_in_dim(inverse, losses.collective.row_offset(y.shape[0], axis_name),
                                      y.shape[0])
  return everything[mine]


def _dim0_shards(x: jax.Array) -> int:
  """Number of shards of ``x`` along dim 0 under an explicit-sharding mesh (1 when not sharded)."""
  try:
    sharding = jax.typeof(x).sharding
    spec = sharding.spec
  except (AttributeError, TypeError):
    return 1
  if not spec or spec[0] is None:
    return 1
  axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
  return math.prod(sharding.mesh.shape[a] for a in axes)


def queue_push(queue: jax.Array, keys: jax.Array) -> jax.Array:
  """Pushes ``keys`` into a FIFO ``queue``: the newest first, the oldest ``len(keys)`` rows dropped.

  When the queue and the keys are sharded over n devices on dim 0, each device's shard is its own FIFO
  and takes that device's keys, without communication. Once pushes have filled the queue (after
  ``K / N`` steps) it holds the same rows as one global FIFO: the keys of the last ``K / N`` steps.
  Unsharded, it is the plain FIFO ``concat([keys, queue[:-len(keys)]])``.

  Args:
    queue: [K, D] queue (shard-major when sharded).
    keys: [N, D] new keys, N <= K.

  Returns:
    The new [K, D] queue.
  """
  k, d = queue.shape
  n = keys.shape[0]
  shards = _dim0_shards(queue)
  if shards > 1 and (k % shards or n % shards):
    shards = 1
  qs = queue.reshape(shards, k // shards, d)
  ks = keys.astype(queue.dtype).reshape(shards, n // shards, d)
  return jnp.concatenate([ks, qs[:, :k // shards - n // shards]], axis=1).reshape(k, d)


SHUFFLE_BN_FIX = ("method.shuffle_bn=True needs per-device BatchNorm (method.sync_bn=False): "
                  "synchronised statistics already cover the whole batch; turn one of them off.")


class MoCoV2(MomentumMethod):
  """Momentum encoder + queue of negatives (see module docstring)."""

  needs_queue = True
  use_predictor = False

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    """As every image method; ``facts.global_batch_size`` sizes the key stash (the keys of one step)."""
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    mcfg = method_config
    batch = int(facts.global_batch_size)
    if batch <= 0:
      raise ValueError("moco_v2 sizes its key stash by the global batch size: build it with "
                       "facts.global_batch_size > 0 (the experiment's batch_size)")
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
      raise ValueError(SHUFFLE_BN_FIX)

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    super().check_config(method_config, model=model, augment=augment)
    if method_config.get("shuffle_bn", False) and method_config.get("sync_bn", False):
      raise ValueError(SHUFFLE_BN_FIX)

  def keys_of(self, images: jax.Array, example_keys: jax.Array, *,
              axis_name: str | None) -> jax.Array:
    """Normalised key projections of ``images`` (this device's rows), with shuffle-BN if enabled."""
    if not (self.shuffle_bn and axis_name is not None):
      return losses.l2_normalize(self.target(images, axis_name=axis_name))
    key = shared_key(example_keys, axis_name, salt=1)
    shuffled, perm = shuffle_across_devices(images, key, axis_name)
    k = losses.l2_normalize(self.target(shuffled, axis_name=axis_name))
    return unshuffle_across_devices(k, perm, axis_name)

  def loss(self, batch, *, axis_name=None):
    v1, v2 = two_views(self.recipe, batch)
    q, _ = self.online(v1, axis_name=axis_name)
    k = self.keys_of(v2, batch["key"], axis_name=axis_name)
    queue = jax.lax.stop_gradient(self.queue[...])
    loss = losses.moco_infonce(q, k, queue, temperature=self.temperature, axis_name=axis_name)
    self.keys[...] = k
    return loss, view_metrics(q, k, axis_name)

  def after_step(self, *, step, total_steps):
    super().after_step(step=step, total_steps=total_steps)
    self.queue[...] = queue_push(self.queue[...], self.keys[...])


class MoCoV3(MomentumMethod):
  """Online encoder/projector/predictor contrasted with a momentum target, no queue."""

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    self.temperature = float(method_config.temperature)

  def loss(self, batch, *, axis_name=None):
    v1, v2 = two_views(self.recipe, batch)
    x = jnp.concatenate([v1, v2])
    _, q = self.online(x, axis_name=axis_name)
    k1, k2 = jnp.split(self.target(x, axis_name=axis_name), 2)
    q1, q2 = jnp.split(q, 2)
    t = self.temperature
    # The official code scales each direction's cross-entropy by 2t.
    loss = 2 * t * (losses.info_nce(q1, k2, temperature=t, axis_name=axis_name)
                    + losses.info_nce(q2, k1, temperature=t, axis_name=axis_name))
    return loss, view_metrics(q1, k2, axis_name)
