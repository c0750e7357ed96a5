"""Target networks that follow the online weights by EMA (BYOL, MoCo, DINO, I-JEPA), their decay
schedules, and ``MomentumMethod``, the online/target pair of BYOL, MoCo v2 and MoCo v3.

The online network (encoder + projector, + predictor for BYOL / MoCo v3) is trained; the target network
is a ``Target``-variable copy of the encoder and projector that follows the online weights by EMA after
each optimizer step, with a constant decay (MoCo v2, m = 0.999) or BYOL's cosine schedule from ``base``
to 1 (BYOL, MoCo v3).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import augment, models
from jaxcl.methods import heads
from jaxcl.methods.base import Facts, Target, bad_field
from jaxcl.methods.image import ImageMethod


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


def check_momentum(m: ml_collections.ConfigDict) -> None:
  """Raises the one-line error of a bad ``method.momentum`` / ``method.momentum_schedule``."""
  if not 0 <= m.momentum <= 1:
    bad_field("method.momentum", m.momentum, "the EMA decay must be in [0, 1] (0.99-0.999 is usual).")
  if m.momentum_schedule not in MOMENTUM_SCHEDULES:
    bad_field("method.momentum_schedule", m.momentum_schedule, "use 'cosine' (BYOL), 'constant' "
              "(MoCo v2) or 'linear' (I-JEPA).")


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


class MomentumMethod(ImageMethod):
  """Online encoder/projector(/predictor) and their EMA target; subclasses define ``loss``."""

  #: Whether the online network has a predictor (BYOL, MoCo v3) or not (MoCo v2).
  use_predictor = True

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    mcfg = method_config
    self.tau = target_momentum(mcfg)  # tau(step, total_steps): the target decay rate
    dt = encoder.dtypes
    self.projector = heads.projector(self.encoder.out_dim, mcfg, dt, rngs)
    self.predictor = heads.predictor(mcfg.proj_out_dim, mcfg, dt, rngs) if self.use_predictor else None
    self.target_encoder = make_target(self.encoder)
    self.target_projector = make_target(self.projector)

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    super().check_config(method_config, model=model, augment=augment)
    check_momentum(method_config)

  def online(self, x: jax.Array, *, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
    """Online projections z and predictions p (p = z without a predictor), training mode."""
    bn = self.bn_axis(axis_name)
    z = self.projector(self.encoder(x, train=True, axis_name=bn), train=True, axis_name=bn)
    p = z if self.predictor is None else self.predictor(z, train=True, axis_name=bn)
    return z, p

  def target(self, x: jax.Array, *, axis_name: str | None) -> jax.Array:
    """Target projections, gradient stopped (BN in training mode, as the papers' target networks)."""
    bn = self.bn_axis(axis_name)
    z = self.target_projector(self.target_encoder(x, train=True, axis_name=bn), train=True,
                              axis_name=bn)
    return jax.lax.stop_gradient(z)

  def after_step(self, *, step, total_steps):
    tau = self.tau(step, total_steps)
    ema_update(self.target_encoder, self.encoder, tau)
    ema_update(self.target_projector, self.projector, tau)
