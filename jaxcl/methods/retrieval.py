"""Dense retrieval: query and document towers trained with InfoNCE over the global batch and mined hard
negatives (Karpukhin et al. 2020, DPR; Xiong et al. 2021, ANCE; Wang et al. 2022, E5).

The batch is a text dataset's tokenized pairs (``jaxcl.data.text.pairs_iterator``): ``query_ids``,
``positive_ids`` ([b, L] token ids) with their keys, and, with ``method.num_negatives = H > 0``,
``negative_ids`` [b, H, L] with ``negative_valid``. Each query is scored against every positive and
every hard negative of the global batch on every device (``jaxcl.losses.retrieval_infonce``); rows
whose positives are one document are not each other's negatives. The towers are
``jaxcl.models.TextTransformer`` (bidirectional), shared or separate, with mean or [CLS] pooling and an
optional linear projection; the tower's size and pooling are the ``model`` section
(``jaxcl.models.default_config("text_transformer")``); embeddings are compared by cosine similarity / temperature, the
temperature fixed or learned.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import losses, models
from jaxcl.methods.base import Method

POOLS = ("mean", "cls")


def default_config() -> ml_collections.ConfigDict:
  """A bi-encoder trained as E5 / DPR are (the tower is the ``model`` section)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "retrieval"
  cfg.shared_towers = True  # one tower for queries and documents (False: two, DPR's dual encoder)
  cfg.projection_dim = 0        # > 0: a linear projection to this width after pooling; 0: none
  cfg.temperature = 0.05   # softmax temperature (E5: 0.01; SimCSE / GTE: 0.05)
  cfg.learn_temperature = False  # learn log(1 / temperature), starting at the value above
  cfg.symmetric = False    # also the document -> query direction (each positive vs every query)
  cfg.num_negatives = 0    # hard negatives per query read from the data's `negatives` (0: in-batch only)
  cfg.mask_shared_positives = True  # rows with the same positive document are not negatives of each other
  cfg.loss_block_size = 0  # > 0: the memory-linear ring loss with this block size (no masks)
  return cfg


class Retrieval(Method):
  """Query/document towers and the retrieval InfoNCE (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, *, vocab_size: int, pad_id: int,
               rngs: nnx.Rngs):
    m, mc = config.method, config.model
    if mc.name != "text_transformer":
      raise ValueError(f"method.name='retrieval' needs model.name='text_transformer', got "
                       f"{mc.name!r}.")
    if mc.pool not in POOLS:
      raise ValueError(f"model.pool={mc.pool!r}: use one of {POOLS}.")
    if m.temperature <= 0:
      raise ValueError(f"method.temperature={m.temperature}: must be > 0.")
    if m.num_negatives < 0:
      raise ValueError(f"method.num_negatives={m.num_negatives}: must be >= 0.")
    dt = models.dtypes(mc)
    tower = lambda: models.TextTransformer(  # noqa: E731
        vocab_size=vocab_size, max_len=int(config.data.max_length), width=mc.width, depth=mc.depth,
        heads=mc.heads, mlp_ratio=mc.mlp_ratio, causal=False, pool=mc.pool, pad_id=pad_id,
        position_embedding=mc.get("position_embedding", True), rngs=rngs, **dt)
    self.query_tower = tower()
    self.doc_tower = self.query_tower if m.shared_towers else tower()
    self.proj = (nnx.Linear(mc.width, m.projection_dim, use_bias=False, rngs=rngs, **dt)
                 if m.projection_dim else None)
    self.log_scale = nnx.Param(jnp.asarray(math.log(1.0 / m.temperature), jnp.float32))
    self.learn_temperature = bool(m.learn_temperature)
    self.symmetric = bool(m.symmetric)
    self.num_negatives = int(m.num_negatives)
    self.mask_shared = bool(m.mask_shared_positives) and not m.loss_block_size
    self.block_size = int(m.loss_block_size) or None

  @property
  def out_dim(self) -> int:
    return self.proj.out_features if self.proj is not None else self.query_tower.out_dim

  def _embed(self, tower, ids: jax.Array) -> jax.Array:
    x = tower(ids)
    return (self.proj(x) if self.proj is not None else x).astype(jnp.float32)

  def encode_queries(self, ids: jax.Array) -> jax.Array:
    """Query embeddings [N, D] (not normalised) of token ids [N, L]."""
    return self._embed(self.query_tower, ids)

  def encode_documents(self, ids: jax.Array) -> jax.Array:
    """Document embeddings [N, D] (not normalised) of token ids [N, L]."""
    return self._embed(self.doc_tower, ids)

  def temperature(self) -> jax.Array:
    scale = self.log_scale[...]
    if not self.learn_temperature:
      scale = jax.lax.stop_gradient(scale)
    return jnp.exp(-scale)

  def embed(self, batch, *, axis_name=None):
    """``{"query", "positive"[, "negatives"]}`` embeddings of the batch (gradient-caching hook)."""
    del axis_name
    out = {"query": self.encode_queries(batch["query_ids"]),
           "positive": self.encode_documents(batch["positive_ids"])}
    if self.num_negatives:
      ids = batch["negative_ids"]
      b, h, length = ids.shape
      out["negatives"] = self.encode_documents(ids.reshape(b * h, length)).reshape(b, h, -1)
    return out

  def loss_from_embeddings(self, emb, batch, *, axis_name=None):
    """The retrieval InfoNCE of ``embed``'s output (gradient-caching hook)."""
    masks = {}
    if self.block_size is None:
      masks["positive_keys"] = batch["positive_key"] if self.mask_shared else None
      if self.num_negatives:
        masks["negatives_valid"] = batch["negative_valid"]
    t = self.temperature()
    loss = losses.retrieval_infonce(emb["query"], emb["positive"], emb.get("negatives"),
                                    temperature=t, symmetric=self.symmetric, axis_name=axis_name,
                                    block_size=self.block_size, **masks)
    q, p = (jax.lax.stop_gradient(emb[k]) for k in ("query", "positive"))
    return loss, {"in_batch_top1": losses.positive_top1(q, p, axis_name=axis_name),
                  "temperature": t, "embedding_std": losses.embedding_std(q, axis_name=axis_name)}

  def loss(self, batch, *, axis_name=None):
    return self.loss_from_embeddings(self.embed(batch), batch, axis_name=axis_name)
