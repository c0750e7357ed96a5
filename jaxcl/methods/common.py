"""Wiring shared by the methods: encoder/head construction, views, EMA targets, the MoCo queue, metrics.

Every image method is "augment -> encoder -> projector (-> predictor)"; the pieces that differ between
methods (which networks, which loss, what happens after a step) live in their own modules.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods.base import PROBE_FEATURES, Method, Target


# ---------------------------------------------------------------------------------------------------
# Construction helpers.


def model_dtypes(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``dtype`` / ``param_dtype`` keyword arguments for heads, from ``config.model``."""
  return models.dtypes(config.model)


def projector(in_dim: int, mcfg: ml_collections.ConfigDict, dt: dict[str, Any],
              rngs: nnx.Rngs) -> models.ProjectionHead:
  """The projection MLP that ``mcfg`` (the method config) describes."""
  return models.ProjectionHead(
      in_dim, hidden_dim=mcfg.proj_hidden_dim, out_dim=mcfg.proj_out_dim, num_layers=mcfg.proj_layers,
      use_bn=mcfg.proj_bn, last_bn=mcfg.proj_last_bn, last_bn_affine=mcfg.proj_last_bn_affine,
      rngs=rngs, **dt)


def predictor(in_dim: int, mcfg: ml_collections.ConfigDict, dt: dict[str, Any],
              rngs: nnx.Rngs) -> models.PredictionHead:
  """The prediction MLP (BYOL / SimSiam / MoCo v3) that ``mcfg`` describes."""
  return models.PredictionHead(in_dim, hidden_dim=mcfg.pred_hidden_dim, out_dim=mcfg.proj_out_dim,
                               rngs=rngs, **dt)


def global_batch_size(config: ml_collections.ConfigDict) -> int:
  """The global batch size of the experiment (needed to size MoCo's key stash)."""
  for path in (("batch_size",), ("train", "batch_size"), ("train", "global_batch_size")):
    node = config
    for name in path:
      node = node.get(name) if hasattr(node, "get") else None
      if node is None:
        break
    if isinstance(node, int):
      return node
  raise ValueError("moco_v2 needs the global batch size to size its key stash: set config.batch_size"
                   " (or config.train.batch_size)")


# ---------------------------------------------------------------------------------------------------
# Views and images.


def two_views(recipe, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """The first two (global) views of ``batch['image']`` made with the per-example ``batch['key']``."""
  views = recipe(batch["key"], batch["image"])
  if len(views) < 2:
    raise ValueError(f"this method needs 2 views; augment.num_views gives {len(views)}")
  return views[0], views[1]


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


def resize_images(images: jax.Array, size: int) -> jax.Array:
  """Float images [B, H, W, C] resized (bilinear, antialiased) to [B, size, size, C] if needed."""
  images = jnp.asarray(images)
  if jnp.issubdtype(images.dtype, jnp.integer):
    images = images.astype(jnp.float32) / 255.0
  b, h, w, c = images.shape
  if (h, w) == (size, size):
    return images.astype(jnp.float32)
  return jax.image.resize(images.astype(jnp.float32), (b, size, size, c), "bilinear")


def global_mean(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Mean of a per-device scalar over devices (exact global mean when every device has equal rows)."""
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


class TwoViews(NamedTuple):
  """Projections of two views and the encoder features they came from."""
  z1: jax.Array        # [b, D]
  z2: jax.Array        # [b, D]
  features: jax.Array | None  # [b, 2, F]: example i's two views' encoder features (detached), when
                              # the trainer asks for them (``hand_over_features``)


def view_metrics(z1: jax.Array, z2: jax.Array, axis_name: str | None, *,
                 pairwise: bool = True, features: jax.Array | None = None) -> dict[str, jax.Array]:
  """Cheap monitors on two views' embeddings: embedding_std, alignment, and (``pairwise``) the
  positive_top1 and uniformity that compare every local row with every global row.

  Memory-linear (blockwise) losses pass ``pairwise=False``: those two need a [b, B] matrix.
  ``features`` (the encoder's, [b, views, F]) are passed on under ``PROBE_FEATURES`` for the online
  probe, which then reuses the training pass instead of running the encoder again.
  """
  z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
  out = dict(
      embedding_std=losses.embedding_std(z1, axis_name=axis_name),
      alignment=losses.alignment(z1, z2, axis_name=axis_name),
  )
  if pairwise:
    out["positive_top1"] = losses.positive_top1(z1, z2, axis_name=axis_name)
    out["uniformity"] = losses.uniformity(z1, axis_name=axis_name)
  if features is not None:
    out[PROBE_FEATURES] = jax.lax.stop_gradient(features)
  return out


# ---------------------------------------------------------------------------------------------------
# Targets and EMA.


def make_target(module: nnx.Module) -> nnx.Module:
  """A deep copy of ``module`` whose ``nnx.Param`` variables are ``Target`` variables.

  The copy starts equal to the online network (BYOL, MoCo). As its weights are not ``nnx.Param`` the
  optimizer never sees them; they change only through ``ema_update``.
  """
  target = nnx.clone(module)
  for _, node in list(nnx.iter_graph(target)):
    if isinstance(node, nnx.Module):
      for name, value in list(vars(node).items()):
        if isinstance(value, nnx.Param):
          setattr(node, name, Target(value[...]))
  return target


def _variables(module: nnx.Module, kind: type) -> dict[tuple, nnx.Variable]:
  return {path: node for path, node in nnx.iter_graph(module) if isinstance(node, kind)}


def ema_update(target: nnx.Module, online: nnx.Module, tau: jax.Array | float) -> None:
  """In place: ``target <- tau * target + (1 - tau) * online`` for every weight (BYOL eq. 1).

  Args:
    target: a module made by ``make_target(online)``.
    online: the online module (same structure, ``nnx.Param`` weights).
    tau: the target decay rate in [0, 1].
  """
  online_vars = _variables(online, nnx.Param)
  target_vars = _variables(target, Target)
  if online_vars.keys() != target_vars.keys():
    raise ValueError("target and online networks differ in structure; build the target with make_target")
  for path, t in target_vars.items():
    o = online_vars[path][...]
    t[...] = (tau * t[...].astype(jnp.float32)
               + (1.0 - tau) * o.astype(jnp.float32)).astype(t[...].dtype)


def cosine_momentum(step: jax.Array, total_steps: int, base: float) -> jax.Array:
  """BYOL's target decay schedule: ``tau = 1 - (1 - base) (cos(pi k / K) + 1) / 2`` (Grill et al. 2020).

  Args:
    step: k, the optimizer step just taken.
    total_steps: K, the number of training steps.
    base: tau at k = 0 (0.996 in BYOL, 0.99 in MoCo v3); tau reaches 1 at k = K.

  Returns:
    Scalar float32 tau.
  """
  k = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, float(max(total_steps, 1)))
  return 1.0 - (1.0 - base) * (jnp.cos(math.pi * k / max(total_steps, 1)) + 1.0) / 2.0


MOMENTUM_SCHEDULES = ("cosine", "constant", "linear")


def momentum_at(step: jax.Array, total_steps: int, base: float, schedule: str) -> jax.Array:
  """The target decay rate after optimizer step ``step``: BYOL's ``cosine`` from ``base`` to 1,
  ``constant`` (MoCo v2), or ``linear`` from ``base`` to 1 (I-JEPA)."""
  if schedule == "constant":
    return jnp.asarray(base, jnp.float32)
  if schedule == "cosine":
    return cosine_momentum(step, total_steps, base)
  if schedule == "linear":
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
    return base + (1.0 - base) * frac
  raise ValueError(f"method.momentum_schedule must be one of {MOMENTUM_SCHEDULES}, got {schedule!r}")


def target_momentum(mcfg: ml_collections.ConfigDict):
  """``tau(step, total_steps)``: the target decay rate that ``mcfg.momentum`` (the base, in [0, 1]) and
  ``mcfg.momentum_schedule`` (one of ``MOMENTUM_SCHEDULES``) describe; raises naming a bad field."""
  base = float(mcfg.momentum)
  if not 0.0 <= base <= 1.0:
    raise ValueError(f"method.momentum must be in [0, 1], got {base}")
  schedule = str(mcfg.momentum_schedule)
  if schedule not in MOMENTUM_SCHEDULES:
    raise ValueError(f"method.momentum_schedule must be one of {MOMENTUM_SCHEDULES}, got {schedule!r}")
  return functools.partial(momentum_at, base=base, schedule=schedule)


# ---------------------------------------------------------------------------------------------------
# The MoCo queue.


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


# ---------------------------------------------------------------------------------------------------
# Base class for the image methods.


class ImageMethod(Method):
  """An encoder trained on two augmented views; ``features`` is the encoder output in eval mode."""

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs):
    mcfg = config.method
    if len(image_shape) != 3:
      raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
    self.recipe = augment.make_recipe(config.augment)
    self.view_size = int(config.augment.size)
    self.num_local = int(config.augment.get("num_local", 0))  # multi-crop's small views
    self.sync_bn = bool(mcfg.get("sync_bn", False))
    self.encoder = models.create_encoder(config.model, in_channels=int(image_shape[2]), rngs=rngs,
                                         image_size=self.view_size)

  def bn_axis(self, axis_name: str | None) -> str | None:
    """The axis BatchNorm synchronises over: the data axis with ``sync_bn``, else none (local BN)."""
    return axis_name if self.sync_bn else None

  def multi_crop(self, views: tuple[jax.Array, ...], forward, axis_name: str | None):
    """Multi-crop (Caron et al. 2020) of the recipe's ``views`` (2 global, then the local ones):
    ``(global outputs [2 x b], local outputs [num_local x b], global encoder features [b, 2, F] or
    None)``; ``forward(h, bn_axis)`` maps encoder features to the method's outputs. With no local
    views the local outputs are an empty list.

    One encoder pass per resolution (the 2 global views together, then the local views together), not
    padding, so BatchNorm sees each resolution as its own batch, as in SwAV's and DINO's code.
    """
    bn = self.bn_axis(axis_name)
    h = self.encoder(jnp.concatenate(views[:2]), train=True, axis_name=bn)
    local = []
    if len(views) > 2:
      small = self.encoder(jnp.concatenate(views[2:]), train=True, axis_name=bn)
      local = jnp.split(forward(small, bn), len(views) - 2)
    features = None
    if self.hand_over_features:
      features = jnp.stack(jnp.split(jax.lax.stop_gradient(h), 2), axis=1)
    return jnp.split(forward(h, bn), 2), local, features

  def project_two_views(self, batch: dict[str, jax.Array], axis_name: str | None) -> TwoViews:
    """``TwoViews(z1, z2, features)``: both views through the encoder and ``self.projector`` in one pass.

    One pass rather than two so that, with global BN, the statistics cover all 2N views (as in SimCLR's
    code). Subclasses that call this define ``self.projector``.
    """
    v1, v2 = two_views(self.recipe, batch)
    bn = self.bn_axis(axis_name)
    h = self.encoder(jnp.concatenate([v1, v2]), train=True, axis_name=bn)
    z1, z2 = jnp.split(self.projector(h, train=True, axis_name=bn), 2)
    features = None
    if self.hand_over_features:  # for the trainer's online probe (see jaxcl.methods.base)
      features = jnp.stack(jnp.split(jax.lax.stop_gradient(h), 2), axis=1)
    return TwoViews(z1, z2, features)

  def features(self, images: jax.Array) -> jax.Array:
    """Encoder features [B, out_dim] of float images in [0, 1] (resized to the view size), eval mode."""
    return self.encoder(resize_images(images, self.view_size), train=False)


def two_view_objective(mcfg: ml_collections.ConfigDict) -> losses.registry.Resolved:
  """The loss ``mcfg`` (a method config) names: ``method.loss`` with ``loss_kwargs``, the method's
  ``temperature`` for losses that take one, and ``loss_block_size``. Raises ``LossSpecError``."""
  return losses.two_view_loss(mcfg.loss, mcfg.get("loss_kwargs"),
                              defaults={"temperature": mcfg.get("temperature")},
                              block_size=int(mcfg.get("loss_block_size", 0)) or None)


class TwoViewMethod(ImageMethod):
  """Two views -> encoder -> projector -> the two-view loss ``method.loss`` names (SimCLR, SupCon).

  The loss is resolved once, here, by ``jaxcl.losses.two_view_loss`` from ``method.loss``,
  ``method.loss_kwargs`` and ``method.loss_block_size``; ``method.temperature`` goes to the losses
  that take one. A loss that reads labels makes the method read ``batch['label']``.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, image_shape: tuple[int, int, int],
               rngs: nnx.Rngs):
    super().__init__(config, image_shape=image_shape, rngs=rngs)
    mcfg = config.method
    self.block_size = int(mcfg.get("loss_block_size", 0)) or None
    objective = two_view_objective(mcfg)
    self.objective, self.uses_labels = objective.fn, objective.needs_labels
    self.projector = projector(self.encoder.out_dim, mcfg, model_dtypes(config), rngs)

  def embed(self, batch, *, axis_name=None):
    """``{"z1": [b, D], "z2": [b, D], "features": [b, 2, F]}`` of the two views (gradient-caching hook)."""
    v = self.project_two_views(batch, axis_name)
    return {"z1": v.z1, "z2": v.z2, "features": v.features}

  def loss_from_embeddings(self, emb, batch, *, axis_name=None):
    """The loss of ``embed``'s output (gradient-caching hook); ``loss`` is the composition."""
    z1, z2 = emb["z1"], emb["z2"]
    loss = self.objective(z1, z2, batch.get("label"), axis_name=axis_name)
    return loss, view_metrics(z1, z2, axis_name, pairwise=self.block_size is None,
                              features=emb.get("features"))

  def loss(self, batch, *, axis_name=None):
    if self.num_local:
      return self.multi_crop_loss(batch, axis_name=axis_name)
    return self.loss_from_embeddings(self.embed(batch, axis_name=axis_name), batch,
                                     axis_name=axis_name)

  def multi_crop_loss(self, batch, *, axis_name=None):
    """The two-view loss averaged over the pair of global views and every (global, local) pair."""
    (z1, z2), local, features = self.multi_crop(
        self.recipe(batch["key"], batch["image"]),
        lambda h, bn: self.projector(h, train=True, axis_name=bn), axis_name)
    pairs = [(z1, z2)] + [(g, z) for z in local for g in (z1, z2)]
    labels = batch.get("label")
    loss = sum(self.objective(a, b, labels, axis_name=axis_name) for a, b in pairs) / len(pairs)
    return loss, view_metrics(z1, z2, axis_name, pairwise=self.block_size is None, features=features)
