"""The two hooks gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup") needs from a method: ``embed`` and ``loss_from_embeddings``.

A method opts in by defining both::

  embed(batch, *, axis_name) -> embeddings pytree, one row per example of ``batch``
  loss_from_embeddings(embeddings, batch, *, axis_name) -> (loss, metrics)

with ``loss(batch) == loss_from_embeddings(embed(batch), batch)``. The trainer embeds the batch in
chunks (``train.grad_cache_chunks``), so ``embed`` must give each example's embedding from that example
alone (no batch statistics shared across chunks; BatchNorm sees chunk statistics).

Methods that do not define them may be adapted here; SimCLR is, until it defines them itself.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp


def _simclr_embed(model, batch, *, axis_name=None):
  from jaxcl.methods import common  # pylint: disable=g-import-not-at-top
  v1, v2 = common.two_views(model.recipe, batch)
  bn = model.bn_axis(axis_name)
  h = model.encoder(jnp.concatenate([v1, v2]), train=True, axis_name=bn)
  z1, z2 = jnp.split(model.projector(h, train=True, axis_name=bn), 2)
  return {"z1": z1, "z2": z2}


def _simclr_loss_from_embeddings(model, emb, batch, *, axis_name=None):
  del batch
  from jaxcl import losses  # pylint: disable=g-import-not-at-top
  from jaxcl.methods import common  # pylint: disable=g-import-not-at-top
  loss = losses.nt_xent(emb["z1"], emb["z2"], temperature=model.temperature, axis_name=axis_name,
                        block_size=model.block_size)
  return loss, common.view_metrics(emb["z1"], emb["z2"], axis_name)


def _adapters() -> dict[type, tuple[Callable, Callable]]:
  from jaxcl.methods import SimCLR  # pylint: disable=g-import-not-at-top
  return {SimCLR: (_simclr_embed, _simclr_loss_from_embeddings)}


def hooks(method_or_cls: Any) -> tuple[Callable, Callable] | None:
  """``(embed(model, batch, axis_name=), loss_from_embeddings(model, emb, batch, axis_name=))`` or None.

  Args:
    method_or_cls: a method instance or class.

  Returns:
    Unbound functions taking the model first, or None if the method cannot be gradient-cached.
  """
  cls = method_or_cls if isinstance(method_or_cls, type) else type(method_or_cls)
  if hasattr(cls, "embed") and hasattr(cls, "loss_from_embeddings"):
    return (lambda m, b, **kw: m.embed(b, **kw),
            lambda m, e, b, **kw: m.loss_from_embeddings(e, b, **kw))
  for base, pair in _adapters().items():
    if cls is base:  # a subclass may change the loss: it must define the hooks itself
      return pair
  return None


def supports(method_or_cls: Any) -> bool:
  return hooks(method_or_cls) is not None
