"""The image methods' base classes: an encoder trained on augmented views of images.

``ImageMethod`` builds the encoder from the ``EncoderFactory`` it is given at the view recipe's size
and offers the view helpers (two views through encoder and projector in one pass, multi-crop, eval
features); ``TwoViewMethod`` adds a projector and the two-view loss plug-in (SimCLR, SupCon, metric
learning). Every image method is "augment -> encoder -> projector (-> predictor)"; what differs
between methods (which networks, which loss, what happens after a step) lives in their own modules.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods import heads
from jaxcl.methods.base import PROBE_FEATURES, Facts, Method, bad_field


def two_views(recipe, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """The first two (global) views of ``batch['image']`` made with the per-example ``batch['key']``."""
  views = recipe(batch["key"], batch["image"])
  if len(views) < 2:
    raise ValueError(f"this method needs 2 views; augment.num_views gives {len(views)}")
  return views[0], views[1]


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


class ImageMethod(Method):
  """An encoder trained on two augmented views; ``features`` is the encoder output in eval mode."""

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    """Builds the encoder (first, with ``rngs``: subclasses build their heads after it).

    Args:
      method_config: the method's own config section (``sync_bn`` is read here).
      encoder: builds the encoder (``jaxcl.models.EncoderFactory``).
      recipe: the view recipe; its ``size`` is the encoder's training resolution.
      facts: ``facts.image_shape`` is (H, W, C) of the stored images.
      rngs: initialisation keys.
    """
    image_shape = tuple(facts.image_shape)
    if len(image_shape) != 3:
      raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
    self.recipe = recipe
    self.view_size = int(recipe.size)
    self.num_local = int(recipe.num_local)  # multi-crop's small views
    self.sync_bn = bool(method_config.get("sync_bn", False))
    self.encoder = encoder(in_channels=int(image_shape[2]), rngs=rngs, image_size=self.view_size)

  def bn_axis(self, axis_name: str | None) -> str | None:
    """The axis BatchNorm synchronises over: the data axis with ``sync_bn``, else none (local BN)."""
    return axis_name if self.sync_bn else None

  def multi_crop_pass(self, views: tuple[jax.Array, ...], forward, axis_name: str | None):
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


def check_objective(m: ml_collections.ConfigDict) -> None:
  """Raises the one-line error of a bad ``method.loss`` / ``loss_kwargs`` / ``temperature``."""
  try:
    resolved = two_view_objective(m)  # exactly as the method will build it
  except losses.registry.LossSpecError as err:
    bad_field(f"method.{err.field}", m.get(err.field), str(err))
  z = np.linspace(-1.0, 1.0, 32, dtype=np.float32).reshape(4, 8)
  try:
    resolved.fn(z, z[::-1] + 0.5, np.array([0, 0, 1, 1], np.int32))
  except ValueError as err:
    kwargs = m.get("loss_kwargs") or {}
    field = "temperature" if "temperature" in str(err) and "temperature" not in kwargs \
        else "loss_kwargs"
    bad_field(f"method.{field}", m.get(field), f"loss {m.loss!r}: {err}")


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

  multi_crop = True

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    mcfg = method_config
    self.block_size = int(mcfg.get("loss_block_size", 0)) or None
    objective = two_view_objective(mcfg)
    self.objective, self.uses_labels = objective.fn, objective.needs_labels
    self.projector = heads.projector(self.encoder.out_dim, mcfg, encoder.dtypes, rngs)

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    """The shared fields, and the loss plug-in built as the method will build it, then called once
    on 4 tiny rows (milliseconds) so a bad hyperparameter is reported now, not after compiling."""
    super().check_config(method_config, model=model, augment=augment)
    check_objective(method_config)

  @classmethod
  def reads_labels(cls, method_config):
    return two_view_objective(method_config).needs_labels

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
    (z1, z2), local, features = self.multi_crop_pass(
        self.recipe(batch["key"], batch["image"]),
        lambda h, bn: self.projector(h, train=True, axis_name=bn), axis_name)
    pairs = [(z1, z2)] + [(g, z) for z in local for g in (z1, z2)]
    labels = batch.get("label")
    loss = sum(self.objective(a, b, labels, axis_name=axis_name) for a, b in pairs) / len(pairs)
    return loss, view_metrics(z1, z2, axis_name, pairwise=self.block_size is None, features=features)
