"""The two hooks gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup") needs from a method: ``embed`` and ``loss_from_embeddings``.

A method opts in by defining both::

  embed(batch, *, axis_name) -> embeddings pytree, one row per example of ``batch``
  loss_from_embeddings(embeddings, batch, *, axis_name) -> (loss, metrics)

with ``loss(batch) == loss_from_embeddings(embed(batch), batch)`` (SimCLR and SupCon do). The trainer
embeds the batch in chunks (``train.grad_cache_chunks``), so ``embed`` must give each example's
embedding from that example alone: BatchNorm sees chunk statistics, so with BatchNorm the cached
gradient is close to, not equal to, the plain one (as in the paper, which uses LayerNorm towers).
"""

from __future__ import annotations

from typing import Any, Callable


def hooks(method_or_cls: Any) -> tuple[Callable, Callable] | None:
  """``(embed(model, batch, axis_name=), loss_from_embeddings(model, emb, batch, axis_name=))`` or None.

  Args:
    method_or_cls: a method instance or class.

  Returns:
    Functions taking the model first, or None if the method cannot be gradient-cached.
  """
  cls = method_or_cls if isinstance(method_or_cls, type) else type(method_or_cls)
  if callable(getattr(cls, "embed", None)) and callable(getattr(cls, "loss_from_embeddings", None)):
    return (lambda m, b, **kw: m.embed(b, **kw),
            lambda m, e, b, **kw: m.loss_from_embeddings(e, b, **kw))
  return None


def supports(method_or_cls: Any) -> bool:
  """Whether the method defines both gradient-caching hooks."""
  return hooks(method_or_cls) is not None
