"""Losses by name: every objective of this package as a two-view loss a method can be given by config.

A two-view method (SimCLR, SupCon) makes two views of each of its ``b`` rows and projects them to
``z1, z2`` ([b, D] each, this device's rows inside ``jax.shard_map``). ``two_view_loss(spec, kwargs)``
returns ``fn(z1, z2, labels, *, axis_name) -> float32 scalar``, the loss of the global batch, for

* a name in ``NAMES`` (how each loss sees the two views is in ``_ADAPTERS``; the margin losses get
  L2-normalised embeddings, as FaceNet's, so that their margin is a distance on the unit sphere); or
* ``"package.module:function"``, a user's loss with the library's signature:
  ``function(z1, z2, *, axis_name=None, **hyperparameters) -> scalar``, plus a ``labels`` keyword
  if it wants ``batch['label']``. It returns the global batch's loss under ``axis_name`` (gather what
  it compares across devices, as ``jaxcl.losses.collective`` does).

Everything a config can get wrong (an unknown name, an unimportable path, a keyword the loss does not
take, a ``block_size`` for a loss without a memory-linear form) is a ``LossSpecError`` (a
``ValueError`` naming the config field) raised by ``two_view_loss`` itself, before anything is traced.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxcl.losses import collective, ops
from jaxcl.losses.contrastive import clip_loss, info_nce, nt_xent
from jaxcl.losses.debiased import dcl, hard_negative_nt_xent
from jaxcl.losses.metric_learning import (
    batch_hard_triplet,
    batch_semi_hard_triplet,
    contrastive_margin,
    triplet_margin,
)
from jaxcl.losses.sigmoid import sigmoid_loss
from jaxcl.losses.ssl import barlow_twins, vicreg
from jaxcl.losses.supervised import supcon

TwoViewLoss = Callable[..., jax.Array]  # (z1, z2, labels, *, axis_name) -> scalar


class LossSpecError(ValueError):
  """A loss that cannot be built as asked; ``field`` says which argument of ``two_view_loss`` (and so
  which ``method.loss*`` config field) is wrong: ``"loss"``, ``"loss_kwargs"`` or ``"loss_block_size"``."""

  def __init__(self, field: str, message: str):
    super().__init__(message)
    self.field = field


def _stack(z1, z2, labels):
  """Both views as one [2b, D] batch with the labels repeated (SupCon's and the miners' layout)."""
  return jnp.concatenate([z1, z2]), jnp.concatenate([labels, labels])


def _partner(labels: jax.Array, axis_name: str | None, *, different: bool) -> jax.Array:
  """For each local row, the global index of the next row (cyclically) of the global batch; with
  ``different``, the next one whose label differs (the row itself when every label is the same)."""
  all_labels = collective.gather(labels, axis_name)
  n, b = all_labels.shape[0], labels.shape[0]
  rows = jnp.arange(b) + collective.row_offset(b, axis_name)
  if not different:
    return (rows + 1) % n
  ahead = (rows[:, None] + jnp.arange(1, n)[None, :]) % n  # [b, n - 1] candidates in order
  differs = all_labels[ahead] != labels[:, None]
  first = jnp.argmax(differs, axis=-1)
  return jnp.where(jnp.any(differs, axis=-1), ahead[jnp.arange(b), first], rows)


def _triplet(z1, z2, labels, *, axis_name, **kw):
  # Anchor z1_i, positive its other view z2_i, negative the other view of the next example of
  # another class in the global batch.
  z1, z2 = ops.l2_normalize(z1), ops.l2_normalize(z2)
  negatives = collective.gather(z2, axis_name)[_partner(labels, axis_name, different=True)]
  return collective.pmean(triplet_margin(z1, z2, negatives, **kw), axis_name)


def _pairs(z1, z2, labels, *, axis_name, **kw):
  # 2b pairs per device: (z1_i, z2_i) similar, and (z1_i, z2_j) with j the next example of the global
  # batch, similar iff the labels agree.
  z1, z2 = ops.l2_normalize(z1), ops.l2_normalize(z2)
  j = _partner(labels, axis_name, different=False)
  partners = collective.gather(z2, axis_name)[j]
  similar = jnp.concatenate([jnp.ones_like(labels, bool),
                             collective.gather(labels, axis_name)[j] == labels])
  loss = contrastive_margin(jnp.concatenate([z1, z1]), jnp.concatenate([z2, partners]), similar, **kw)
  return collective.pmean(loss, axis_name)


def _mined(loss):
  def fn(z1, z2, labels, *, axis_name, **kw):
    z, y = _stack(ops.l2_normalize(z1), ops.l2_normalize(z2), labels)
    return loss(z, y, axis_name=axis_name, **kw)
  return fn


@dataclasses.dataclass(frozen=True)
class _Adapter:
  loss: Callable            # the function of this package whose keywords the config may set
  apply: Callable           # (z1, z2, labels, *, axis_name, **kw) -> scalar
  labels: bool = False      # reads batch['label']
  blockwise: bool = False   # takes block_size (the memory-linear form)
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


_ADAPTERS: dict[str, _Adapter] = {
    "nt_xent": _Adapter(nt_xent, lambda z1, z2, y, **kw: nt_xent(z1, z2, **kw), blockwise=True),
    # Symmetrised: the mean of view 1 -> view 2 and view 2 -> view 1.
    "info_nce": _Adapter(info_nce, lambda z1, z2, y, **kw: (info_nce(z1, z2, **kw)
                                                            + info_nce(z2, z1, **kw)) / 2,
                         blockwise=True),
    "clip_loss": _Adapter(clip_loss, lambda z1, z2, y, **kw: clip_loss(z1, z2, **kw),
                          blockwise=True, defaults={"logit_scale": 10.0}),
    # SigLIP's initial scale and bias (t = 10, b = -10) held fixed.
    "sigmoid_loss": _Adapter(sigmoid_loss, lambda z1, z2, y, **kw: sigmoid_loss(z1, z2, **kw),
                             blockwise=True, defaults={"logit_scale": 10.0, "logit_bias": -10.0}),
    "dcl": _Adapter(dcl, lambda z1, z2, y, **kw: dcl(z1, z2, **kw)),
    "hard_negative_nt_xent": _Adapter(
        hard_negative_nt_xent, lambda z1, z2, y, **kw: hard_negative_nt_xent(z1, z2, **kw)),
    "barlow_twins": _Adapter(barlow_twins, lambda z1, z2, y, **kw: barlow_twins(z1, z2, **kw)),
    "vicreg": _Adapter(vicreg, lambda z1, z2, y, **kw: vicreg(z1, z2, **kw)),
    "supcon": _Adapter(supcon, lambda z1, z2, y, **kw: supcon(*_stack(z1, z2, y), **kw), labels=True),
    "triplet_margin": _Adapter(triplet_margin, _triplet, labels=True),
    "contrastive_margin": _Adapter(contrastive_margin, _pairs, labels=True),
    "batch_hard_triplet": _Adapter(batch_hard_triplet, _mined(batch_hard_triplet), labels=True),
    "batch_semi_hard_triplet": _Adapter(batch_semi_hard_triplet, _mined(batch_semi_hard_triplet),
                                        labels=True),
}
#: The losses a two-view method accepts by name.
NAMES = tuple(_ADAPTERS)
#: Keywords the method passes itself (never set through ``loss_kwargs``).
_RESERVED = ("axis_name", "block_size", "labels")


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A two-view loss ready to call: ``fn(z1, z2, labels, axis_name=...)``."""
  name: str
  fn: TwoViewLoss
  needs_labels: bool
  hyperparameters: tuple[str, ...]  # the keywords the loss takes (what ``loss_kwargs`` may set)


def _import_user_loss(spec: str) -> Callable:
  module_name, _, attr = spec.partition(":")
  if not module_name or not attr:
    raise LossSpecError("loss", f"{spec!r} is neither a loss name ({', '.join(NAMES)}) nor a "
                        "'package.module:function' path.")
  try:
    module = importlib.import_module(module_name)
  except ImportError as err:
    raise LossSpecError("loss", f"cannot import module {module_name!r} of loss {spec!r} ({err}); "
                        "put it on PYTHONPATH or install its package.") from err
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise LossSpecError("loss", f"module {module_name!r} has no function {attr!r} "
                        f"(loss {spec!r}).")
  return fn


def _keywords(fn: Callable) -> tuple[tuple[str, ...], bool]:
  """The keyword-only parameters of ``fn`` (its hyperparameters) and whether it takes ``**kwargs``."""
  params = inspect.signature(fn).parameters.values()
  names = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)
  return names, any(p.kind is p.VAR_KEYWORD for p in params)


def two_view_loss(spec: str, kwargs: Mapping[str, Any] | None = None, *,
                  defaults: Mapping[str, Any] | None = None,
                  block_size: int | None = None) -> Resolved:
  """The loss ``spec`` names, bound to its hyperparameters.

  Args:
    spec: a name in ``NAMES`` or ``"package.module:function"``.
    kwargs: the loss's hyperparameters (``config.method.loss_kwargs``); each must be a keyword the
      loss takes.
    defaults: values used for keywords the loss takes and ``kwargs`` does not set (a method's own
      ``temperature``, say); ignored for keywords the loss does not take.
    block_size: > 0 for the memory-linear form (only losses that have one).

  Returns:
    ``Resolved``; its ``fn(z1, z2, labels, *, axis_name)`` returns the global batch's loss.

  Raises:
    LossSpecError (a ValueError): unknown name, unimportable path, a keyword the loss does not take, or a block size
      for a loss without a memory-linear form.
  """
  kwargs = dict(kwargs or {})
  if spec in _ADAPTERS:
    adapter = _ADAPTERS[spec]
    takes, _ = _keywords(adapter.loss)
    takes = tuple(k for k in takes if k not in _RESERVED)
    extra, needs_labels, blockwise = False, adapter.labels, adapter.blockwise
    base = dict(adapter.defaults)
  elif ":" in spec or "." in spec:
    user = _import_user_loss(spec)
    takes, extra = _keywords(user)
    needs_labels, blockwise = "labels" in takes, "block_size" in takes
    takes = tuple(k for k in takes if k not in _RESERVED)
    base = {}
  else:
    raise LossSpecError("loss", f"unknown loss {spec!r}; use one of {', '.join(NAMES)}, or "
                        "'package.module:function' for your own.")
  reserved = sorted(set(kwargs) & set(_RESERVED))
  if reserved:
    raise LossSpecError("loss_kwargs", f"sets {reserved}, which the method passes itself; remove "
                        "them (block_size is method.loss_block_size).")
  unknown = sorted(set(kwargs) - set(takes))
  if unknown and not extra:
    raise LossSpecError("loss_kwargs", f"loss {spec!r} takes no keyword {unknown}; it takes "
                        f"{list(takes)}.")
  if block_size and not blockwise:
    raise LossSpecError("loss_block_size", f"loss {spec!r} has no memory-linear (block_size) "
                        f"form; those that have one: {[n for n, a in _ADAPTERS.items() if a.blockwise]}"
                        ". Set method.loss_block_size=0.")
  base.update({k: v for k, v in (defaults or {}).items() if k in takes})
  base.update(kwargs)
  if block_size:
    base["block_size"] = block_size

  if spec in _ADAPTERS:
    def fn(z1, z2, labels=None, *, axis_name=None):
      return adapter.apply(z1, z2, labels, axis_name=axis_name, **base)
  else:
    def fn(z1, z2, labels=None, *, axis_name=None):
      extra_kw = {"labels": labels} if needs_labels else {}
      return jnp.asarray(user(z1, z2, axis_name=axis_name, **extra_kw, **base), jnp.float32)
  return Resolved(spec, fn, needs_labels, takes)
