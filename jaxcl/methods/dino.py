"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

A student (encoder + DINO head) matches the output distribution of an EMA teacher of itself: the
teacher sees the two global views, the student every view (multi-crop), and the loss is the
cross-entropy between the teacher's centred, sharpened softmax and the student's softmax over every
pair of different views (``jaxcl.losses.dino_loss``). Collapse is avoided by centring (C, an EMA of the
teacher's batch mean over every device, momentum ``center_momentum``) and sharpening (a low teacher
temperature, warmed up linearly from ``warmup_teacher_temp`` over ``teacher_temp_warmup_steps``). The
teacher follows the student with BYOL's cosine schedule from ``momentum`` to 1; the head's last layer
is frozen for ``freeze_last_layer_steps``. Evaluation uses the teacher's encoder, as the paper does.

Logged collapse monitors (Sec. 5.3 and Fig. 7 of the paper): ``teacher_entropy`` (mean entropy of P_t:
near log K when the output collapses to uniform), ``teacher_batch_entropy`` (entropy of the batch mean
of P_t: near 0 when one dimension dominates), ``kl_teacher_student`` (0 at either collapse) and
``rankme`` (Garrido et al. 2023) of the teacher's encoder features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods.base import PROBE_FEATURES, Facts, bad_field
from jaxcl.methods.image import ImageMethod, resize_images
from jaxcl.methods.momentum import check_momentum, ema_update, make_target, target_momentum


def default_config() -> ml_collections.ConfigDict:
  """DINO's hyperparameters for ViT-S/16 (the paper's Sec. 4 and Appendix, and its code's defaults)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "dino"
  cfg.out_dim = 65536               # K, prototypes of the last layer
  cfg.head_hidden_dim = 2048
  cfg.head_bottleneck_dim = 256
  cfg.head_layers = 3
  cfg.head_bn = False               # BN in the head's MLP: the paper uses it with ResNets (convnets need
                                    # it: their post-ReLU features share one mean direction)
  cfg.norm_last_layer = True        # weight-normalised last layer with its gain fixed to 1
  cfg.student_temp = 0.1
  cfg.teacher_temp = 0.07           # after warm-up
  cfg.warmup_teacher_temp = 0.04    # teacher temperature at step 0, before the warm-up
  cfg.teacher_temp_warmup_steps = 0  # linear warm-up of the teacher temperature (30 epochs in the paper)
  cfg.center_momentum = 0.9
  cfg.momentum = 0.996              # teacher EMA, cosine schedule to 1
  cfg.momentum_schedule = "cosine"
  cfg.freeze_last_layer_steps = 0   # the paper: one epoch
  cfg.sync_bn = True
  return cfg


class Center(nnx.Variable):
  """DINO's centre of the teacher's outputs, an EMA carried between steps (never trained)."""


class Clock(nnx.Variable):
  """Optimizer steps taken, for the schedules that the loss reads (teacher temperature, frozen layer)."""


def teacher_temperature(step: jax.Array, start: float, end: float, warmup_steps: int) -> jax.Array:
  """The teacher temperature at ``step``: linear from ``start`` to ``end`` over ``warmup_steps``."""
  if warmup_steps <= 0:
    return jnp.asarray(end, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / warmup_steps, 0.0, 1.0)
  return start + (end - start) * frac


def _entropy(p: jax.Array) -> jax.Array:
  return -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-12)), axis=-1)


def collapse_monitors(student: jax.Array, teacher: jax.Array, center: jax.Array, *,
                      student_temperature, teacher_temperature,
                      axis_name: str | None) -> dict[str, jax.Array]:
  """Entropies of the teacher's output and KL(teacher || student) of the first pair of global views."""
  sg = jax.lax.stop_gradient
  p_t = jax.nn.softmax((sg(teacher[0]) - center) / teacher_temperature, axis=-1)
  log_p_s = jax.nn.log_softmax(sg(student[1]) / student_temperature, axis=-1)
  kl = jnp.sum(p_t * (jnp.log(jnp.maximum(p_t, 1e-12)) - log_p_s), axis=-1)
  c = losses.collective
  mean_p_t = c.psum(jnp.sum(p_t, axis=0), axis_name) / (p_t.shape[0] * c.axis_size(axis_name))
  return dict(teacher_entropy=c.global_mean(_entropy(p_t), axis_name),
              teacher_batch_entropy=_entropy(mean_p_t),
              kl_teacher_student=c.global_mean(kl, axis_name))


class DINO(ImageMethod):
  """Student and EMA teacher with the DINO head, centring and sharpening (see module docstring)."""

  multi_crop = True

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    m = method_config
    self.head = models.DINOHead(
        self.encoder.out_dim, hidden_dim=m.head_hidden_dim, bottleneck_dim=m.head_bottleneck_dim,
        out_dim=m.out_dim, num_layers=m.head_layers, use_bn=m.head_bn,
        norm_last_layer=m.norm_last_layer, rngs=rngs, **encoder.dtypes)
    self.target_encoder = make_target(self.encoder)
    self.target_head = make_target(self.head)
    self.center = Center(jnp.zeros((m.out_dim,), jnp.float32))
    self.clock = Clock(jnp.zeros((), jnp.int32))
    self.student_temp = float(m.student_temp)
    self.teacher_temps = (float(m.warmup_teacher_temp), float(m.teacher_temp),
                          int(m.teacher_temp_warmup_steps))  # (start, end, warm-up steps)
    self.center_momentum = float(m.center_momentum)
    self.tau = target_momentum(m)
    self.freeze_last_layer_steps = int(m.freeze_last_layer_steps)

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    super().check_config(method_config, model=model, augment=augment)
    m = method_config
    check_momentum(m)
    for field in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
      if not m[field] > 0:
        bad_field(f"method.{field}", m[field], "must be > 0 (DINO: student 0.1, teacher 0.04-0.07).")
    if not 0 <= m.center_momentum < 1:
      bad_field("method.center_momentum", m.center_momentum, "the centre's EMA decay must be in "
                "[0, 1) (DINO: 0.9).")
    for field in ("teacher_temp_warmup_steps", "freeze_last_layer_steps"):
      if not isinstance(m[field], int) or m[field] < 0:
        bad_field(f"method.{field}", m[field], "must be an integer >= 0 (0: off).")

  def loss(self, batch, *, axis_name=None):
    step = self.clock[...]
    frozen = step < self.freeze_last_layer_steps
    views = self.recipe(batch["key"], batch["image"])
    (s1, s2), local, _ = self.multi_crop_pass(
        views, lambda h, bn: self.head(h, train=True, axis_name=bn, freeze_last_layer=frozen),
        axis_name)
    bn = self.bn_axis(axis_name)
    h_t = self.target_encoder(jnp.concatenate(views[:2]), train=True, axis_name=bn)
    teacher = jnp.stack(jnp.split(self.target_head(h_t, train=True, axis_name=bn), 2))
    teacher = jax.lax.stop_gradient(teacher)
    student = jnp.stack([s1, s2, *local])
    temps = dict(student_temperature=self.student_temp,
                 teacher_temperature=teacher_temperature(step, *self.teacher_temps))
    center = self.center[...]
    loss = losses.dino_loss(student, teacher, center, axis_name=axis_name, **temps)
    # C <- m C + (1 - m) mean(teacher), the same on every device (dino_center averages over them).
    m = self.center_momentum
    self.center[...] = m * center + (1 - m) * losses.dino_center(teacher, axis_name=axis_name)
    metrics = collapse_monitors(student, teacher, center, axis_name=axis_name, **temps)
    metrics.update(rankme=losses.rankme(jax.lax.stop_gradient(h_t), axis_name=axis_name),
                   embedding_std=losses.embedding_std(jax.lax.stop_gradient(h_t), axis_name=axis_name),
                   teacher_temperature=temps["teacher_temperature"])
    if self.hand_over_features:  # the teacher's, which evaluation uses (see jaxcl.methods.base)
      metrics[PROBE_FEATURES] = jnp.stack(jnp.split(jax.lax.stop_gradient(h_t), 2), axis=1)
    return loss, metrics

  def after_step(self, *, step, total_steps):
    tau = self.tau(step, total_steps)
    ema_update(self.target_encoder, self.encoder, tau)
    ema_update(self.target_head, self.head, tau)
    self.clock[...] = jnp.asarray(step, jnp.int32) + 1

  def evaluated_encoder(self) -> nnx.Module:
    return self.target_encoder

  def features(self, images: jax.Array) -> jax.Array:
    """The teacher's encoder features [B, out_dim] in eval mode (the paper evaluates the teacher)."""
    return self.target_encoder(resize_images(images, self.view_size), train=False)
