"""Optimizers and learning-rate schedules (optax) for contrastive pretraining.

* LARS (You et al. 2017), as SimCLR and BYOL use it; LAMB (You et al. 2019); AdamW (Loshchilov & Hutter
  2019); SGD with momentum.
* Linear warmup, then cosine decay (Loshchilov & Hutter 2017) to ``end_lr_factor`` times the peak.
* Peak learning rate scaled by the global batch: ``linear`` (lr * B / base_batch, Goyal et al. 2017) or
  ``sqrt`` (lr * sqrt(B / base_batch), SimCLR appendix B.1).
* Weight decay and LARS trust-ratio adaptation apply only to weights with 2 or more dimensions (kernels,
  embeddings): biases, BatchNorm/LayerNorm scales and scalar parameters (CLIP's temperature) are
  excluded, as in SimCLR and BYOL.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("lars", "lamb", "adamw", "sgd")
LR_SCALINGS = ("linear", "sqrt", "none")


def default_config() -> ml_collections.ConfigDict:
  """The ``optim`` sub-config: optimizer, learning rate and its schedule, weight decay."""
  c = ml_collections.ConfigDict()
  c.name = "lars"              # one of OPTIMIZERS
  c.lr = 0.3                   # base learning rate, before batch scaling
  c.lr_scaling = "linear"      # one of LR_SCALINGS
  c.base_batch_size = 256      # batch size at which `lr` is the peak learning rate
  c.warmup_steps = 0           # or warmup_fraction of total steps, whichever is given (> 0)
  c.warmup_fraction = 0.0
  c.end_lr_factor = 0.0        # final lr = peak * end_lr_factor
  c.decay = "cosine"           # after warmup: "cosine" | "linear" (Hugging Face / sentence-transformers)
  c.weight_decay = 1e-6
  # "cosine": weight decay follows a cosine from weight_decay to weight_decay_end over the run (DINO:
  # 0.04 -> 0.4); "constant": weight_decay throughout.
  c.weight_decay_schedule = "constant"
  c.weight_decay_end = 0.0     # with weight_decay_schedule="cosine": the weight decay at the last step
  c.momentum = 0.9             # lars / sgd
  c.nesterov = False
  c.b1 = 0.9                   # adamw / lamb
  c.b2 = 0.999
  c.eps = 1e-8
  c.trust_coefficient = 0.001  # lars
  c.grad_clip_norm = 0.0       # 0 disables global-norm clipping
  return c


def peak_learning_rate(cfg: ml_collections.ConfigDict, global_batch_size: int) -> float:
  """Peak learning rate after the batch-size rule.

  Args:
    cfg: the ``optim`` config.
    global_batch_size: images per optimizer step over all devices.

  Returns:
    ``lr * B / base`` (linear), ``lr * sqrt(B / base)`` (sqrt) or ``lr`` (none).
  """
  ratio = global_batch_size / cfg.base_batch_size
  if cfg.lr_scaling == "linear":
    return cfg.lr * ratio
  if cfg.lr_scaling == "sqrt":
    return cfg.lr * math.sqrt(ratio)
  if cfg.lr_scaling == "none":
    return cfg.lr
  raise ValueError(f"optim.lr_scaling={cfg.lr_scaling!r} is unknown; use one of {LR_SCALINGS}.")


def warmup_steps(cfg: ml_collections.ConfigDict, total_steps: int) -> int:
  if cfg.warmup_steps:
    return int(cfg.warmup_steps)
  return int(round(cfg.warmup_fraction * total_steps))


def make_schedule(cfg: ml_collections.ConfigDict, *, total_steps: int,
                  global_batch_size: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine (or, ``decay="linear"``, linear) decay to
  ``peak * end_lr_factor`` at ``total_steps``.

  Args:
    cfg: the ``optim`` config.
    total_steps: optimizer steps of the whole run.
    global_batch_size: images per step (for the batch-size rule).

  Returns:
    An optax schedule ``step -> lr``.
  """
  peak = peak_learning_rate(cfg, global_batch_size)
  warmup = min(warmup_steps(cfg, total_steps), total_steps)
  decay_steps = max(total_steps, warmup + 1)
  decay = cfg.get("decay", "cosine")
  if decay == "linear":  # transformers' get_linear_schedule_with_warmup
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup),
         optax.linear_schedule(peak, peak * cfg.end_lr_factor, decay_steps - warmup)], [warmup])
  if decay != "cosine":
    raise ValueError(f"optim.decay={decay!r}: use 'cosine' or 'linear'.")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=decay_steps,
      end_value=peak * cfg.end_lr_factor)


def make_weight_decay(cfg: ml_collections.ConfigDict, *, total_steps: int) -> float | optax.Schedule:
  """``weight_decay``, or with ``weight_decay_schedule="cosine"`` a cosine from it to
  ``weight_decay_end`` over ``total_steps`` (DINO, Caron et al. 2021: 0.04 -> 0.4)."""
  if cfg.get("weight_decay_schedule", "constant") == "constant":
    return cfg.weight_decay
  if cfg.weight_decay_schedule != "cosine":
    raise ValueError(f"optim.weight_decay_schedule={cfg.weight_decay_schedule!r} is unknown; use "
                     "'constant' or 'cosine'.")
  start, end, steps = float(cfg.weight_decay), float(cfg.weight_decay_end), max(total_steps, 1)

  def schedule(count):
    frac = jnp.minimum(jnp.asarray(count, jnp.float32), steps) / steps
    return end + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

  return schedule


def decay_mask(params: Any) -> Any:
  """True for weights that get weight decay and LARS adaptation: arrays with ndim >= 2.

  Biases, norm scales/offsets and scalars (1-D or 0-D) are excluded, as in SimCLR/BYOL's LARS.
  """
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: ml_collections.ConfigDict, *, total_steps: int,
                   global_batch_size: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimizer named by ``cfg.name`` with the warmup + cosine schedule.

  Args:
    cfg: the ``optim`` config (see ``default_config``).
    total_steps: optimizer steps of the whole run.
    global_batch_size: images per step.

  Returns:
    ``(tx, schedule)``.
  """
  schedule = make_schedule(cfg, total_steps=total_steps, global_batch_size=global_batch_size)
  wd = make_weight_decay(cfg, total_steps=total_steps)
  if cfg.name == "lars":
    tx = optax.lars(schedule, weight_decay=wd, weight_decay_mask=decay_mask,
                    trust_coefficient=cfg.trust_coefficient, eps=0.0, trust_ratio_mask=decay_mask,
                    momentum=cfg.momentum, nesterov=cfg.nesterov)
  elif cfg.name == "lamb":
    # optax.lamb adapts every parameter; mask the trust ratio off biases and norms too.
    tx = optax.chain(
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(wd, mask=decay_mask),
        optax.masked(optax.scale_by_trust_ratio(), decay_mask),
        optax.scale_by_learning_rate(schedule))
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd,
                     mask=decay_mask)
  elif cfg.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                     optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  else:
    raise ValueError(f"optim.name={cfg.name!r} is unknown; use one of {OPTIMIZERS}.")
  if cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
