"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture").

From one view (a random resized crop, no other augmentation), a ViT context encoder sees a large
context block of patches; a narrow predictor, given the context tokens and mask tokens with position
embeddings, predicts the patch representations of ``num_targets`` target blocks (removed from the
context) made by a target encoder, an EMA of the context encoder (momentum linear from ``momentum`` to
1) that sees the whole view. The targets are the target encoder's tokens layer-normalised over the
features (no affine), gradient stopped; the loss is their L2 distance to the predictions
(``jaxcl.losses.jepa_loss``). The masks are drawn per example from its key inside the step
(``jaxcl.augment.jepa_masks``); the networks hide the tokens outside them with attention masks.

Evaluation uses the target encoder's mean-pooled patch tokens, as the paper evaluates the target
encoder. Logged collapse monitors: ``rankme`` (Garrido et al. 2023) and ``embedding_std`` of those
pooled features, and ``target_token_std``, the per-feature std of the normalised target tokens over
the batch and positions (0 if every patch gets the same representation, which the loss would
predict trivially).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods.base import PROBE_FEATURES, Facts, bad_field
from jaxcl.methods.image import ImageMethod, resize_images
from jaxcl.methods.momentum import check_momentum, ema_update, make_target, target_momentum

#: Folded into an example's key to draw its masks (its views use the key's splits).
_MASK_SALT = 0x1E9A


def default_config() -> ml_collections.ConfigDict:
  """I-JEPA's hyperparameters (Sec. 4 and Appendix A of the paper, ViT-H/14 on ImageNet)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "ijepa"
  cfg.num_targets = 4                     # M target blocks per image
  cfg.target_scale = (0.15, 0.2)          # area fraction of a target block
  cfg.target_aspect_ratio = (0.75, 1.5)   # height / width of a target block
  cfg.context_scale = (0.85, 1.0)         # area fraction of the context block (before removing targets)
  cfg.context_aspect_ratio = (1.0, 1.0)   # the context block is square
  cfg.momentum = 0.996                    # target EMA, linear to 1 over training
  cfg.momentum_schedule = "linear"
  cfg.predictor_width = 384
  cfg.predictor_depth = 12
  cfg.predictor_heads = 16                # the paper's code gives the predictor the encoder's heads
  return cfg


def normalize_tokens(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """LayerNorm over the last axis without scale or bias (the paper's ``F.layer_norm`` of the targets)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def token_std(tokens: jax.Array, *, axis_name: str | None) -> jax.Array:
  """Mean over features of the std of each feature over every token [b, N, D] of the global batch."""
  c = losses.collective
  flat = tokens.reshape(-1, tokens.shape[-1])
  rows = flat.shape[0] * c.axis_size(axis_name)
  mean = c.psum(jnp.sum(flat, axis=0), axis_name) / rows
  var = c.psum(jnp.sum((flat - mean) ** 2, axis=0), axis_name) / rows
  return jnp.mean(jnp.sqrt(var))


class IJEPA(ImageMethod):
  """Context encoder, EMA target encoder and predictor (see module docstring)."""

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    m = method_config
    if not isinstance(self.encoder, models.ViT):
      raise ValueError(f"method ijepa predicts patch representations and needs a ViT: set model.name "
                       f"to vit_tiny, vit_small or vit_base (got {encoder.name!r})")
    if self.encoder.pool != "mean":
      raise ValueError("method ijepa evaluates the mean of the target encoder's patch tokens and never "
                       f"trains a CLS token: set model.pool='mean' (got {self.encoder.pool!r})")
    if self.view_size % self.encoder.patch_size:
      raise ValueError(f"augment.size={self.view_size} must be a multiple of model.patch_size="
                       f"{self.encoder.patch_size}")
    side = self.view_size // self.encoder.patch_size
    self.grid = (side, side)
    self.draw_masks = functools.partial(
        augment.jepa_masks, grid=self.grid, num_targets=int(m.num_targets),
        target_scale=tuple(m.target_scale), target_aspect_ratio=tuple(m.target_aspect_ratio),
        context_scale=tuple(m.context_scale), context_aspect_ratio=tuple(m.context_aspect_ratio))
    self.predictor = models.JEPAPredictor(
        self.encoder.out_dim, width=m.predictor_width, depth=m.predictor_depth,
        heads=m.predictor_heads, mlp_ratio=self.encoder.mlp_ratio, rngs=rngs,
        **encoder.dtypes)
    self.target_encoder = make_target(self.encoder)
    self.tau = target_momentum(m)

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    """I-JEPA's needs: a mean-pooled ViT whose patch grid holds its blocks, one view, valid ranges."""
    super().check_config(method_config, model=model, augment=augment)
    m = method_config
    check_momentum(m)
    if augment is not None and augment.get("num_local", 0):
      bad_field("augment.num_local", augment.num_local, "ijepa trains on one view (the crop) and "
                "masks it; set augment.num_local=0.")
    if model is not None:
      name = str(model.get("name", ""))
      if not name.startswith("vit"):
        bad_field("model.name", name, "method ijepa predicts patch representations: use a ViT "
                  "(vit_tiny, vit_small, vit_base).")
      if model.pool != "mean":
        bad_field("model.pool", model.pool, "ijepa evaluates the mean of the target encoder's patch "
                  "tokens and never trains a CLS token; set model.pool='mean'.")
    if model is not None and augment is not None:
      size, patch = augment.size, model.patch_size
      if size % patch:
        bad_field("augment.size", size, f"ijepa cuts the view into model.patch_size={patch} px "
                  f"patches; use a multiple of {patch}.")
      if size // patch < 4:
        bad_field("model.patch_size", patch, f"augment.size={size} gives a {size // patch}x"
                  f"{size // patch} grid of patches; I-JEPA's target and context blocks need at least "
                  f"4x4: use a patch size of at most {size // 4}.")
    for field in ("num_targets", "predictor_width", "predictor_depth", "predictor_heads"):
      if not isinstance(m[field], int) or m[field] <= 0:
        bad_field(f"method.{field}", m[field], "must be a positive integer.")
    if m.predictor_width % 4 or m.predictor_width % m.predictor_heads:
      bad_field("method.predictor_width", m.predictor_width, f"must be a multiple of 4 (2-D sin-cos "
                f"positions) and of method.predictor_heads={m.predictor_heads}.")
    for field, high in (("target_scale", 1.0), ("context_scale", 1.0), ("target_aspect_ratio", None),
                        ("context_aspect_ratio", None)):
      lo_hi = tuple(m[field])
      if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] or (high and lo_hi[1] > high):
        bad_field(f"method.{field}", lo_hi, "must be a pair (min, max) with 0 < min <= max"
                  + (" <= 1 (a fraction of the image)." if high else " (height / width)."))

  def masks(self, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each example's ``(context [b, N], targets [b, M, N])`` from its key ``batch['key']``."""
    return jax.vmap(lambda k: self.draw_masks(jax.random.fold_in(k, _MASK_SALT)))(keys)

  def loss(self, batch, *, axis_name=None):
    x = self.recipe(batch["key"], batch["image"])[0]
    context, targets = self.masks(batch["key"])
    tokens = jax.lax.stop_gradient(self.target_encoder.tokens(x))  # [b, N, D], whole view
    target = normalize_tokens(tokens)
    predictions = self.predictor(self.encoder.tokens(x, keep=context), context, targets,
                                 grid=self.grid)
    loss = losses.jepa_loss(predictions, target, targets, axis_name=axis_name)
    pooled = jnp.mean(tokens, axis=1)  # what ``features`` gives for this view
    c = losses.collective
    metrics = dict(
        rankme=losses.rankme(pooled, axis_name=axis_name),
        embedding_std=losses.embedding_std(pooled, axis_name=axis_name),
        target_token_std=token_std(target, axis_name=axis_name),
        context_fraction=c.global_mean(jnp.mean(context, axis=-1), axis_name),
        target_fraction=c.global_mean(jnp.mean(jnp.any(targets, axis=1), axis=-1), axis_name),
    )
    if self.hand_over_features:  # the target encoder's, which evaluation uses (jaxcl.methods.base)
      metrics[PROBE_FEATURES] = pooled
    return loss, metrics

  def after_step(self, *, step, total_steps):
    tau = self.tau(step, total_steps)
    ema_update(self.target_encoder, self.encoder, tau)

  def evaluated_encoder(self) -> nnx.Module:
    return self.target_encoder

  def features(self, images: jax.Array) -> jax.Array:
    """The target encoder's mean-pooled patch tokens [B, width] at the view size, as the paper
    evaluates the target encoder."""
    return self.target_encoder(resize_images(images, self.view_size), train=False)
