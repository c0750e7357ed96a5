"""Dense retrieval: query and document towers trained with InfoNCE over the global batch and mined hard
negatives (Karpukhin et al. 2020, DPR; Xiong et al. 2021, ANCE; Wang et al. 2022, E5).

The batch is a text dataset's tokenized pairs (``jaxcl.data.text.pairs_iterator``): ``query_ids``,
``positive_ids`` ([b, L] token ids) with their keys, and, with ``method.num_negatives = H > 0``,
``negative_ids`` [b, H, L] with ``negative_valid``. Each query is scored against every positive and
every hard negative of the global batch on every device (``jaxcl.losses.retrieval_infonce``); rows
whose positives are one document are not each other's negatives. The towers are
``jaxcl.models.TextTransformer`` (bidirectional) or a pretrained ``jaxcl.models.BertEncoder``
(``model.name='bert'``, ``model.pretrained=DIR``: MiniLM, BGE, E5; its weights are loaded after init by
``jaxcl.models.pretrained.load_into``), shared or separate, with mean or [CLS] pooling and an optional
linear projection; the tower is the ``model`` section (``jaxcl.models.default_config``); embeddings
are compared by cosine similarity / temperature, the temperature fixed or learned (MNRL's scale 20 is
temperature 0.05). ``method.matryoshka_dims`` sums the loss over renormalised embedding prefixes
(Kusupati et al. 2022; ``jaxcl.losses.matryoshka``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import losses, models
from jaxcl.losses.matryoshka import check_dims
from jaxcl.methods.base import Facts, Method, bad_field

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
  cfg.matryoshka_dims = ()  # e.g. (384, 128, 64): the loss summed over these embedding prefixes
  return cfg


class Retrieval(Method):
  """Query/document towers and the retrieval InfoNCE (module docstring)."""

  data_kind = "text"

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: None = None, facts: Facts, rngs: nnx.Rngs):
    """Builds the towers.

    Args:
      method_config: the method's section (``default_config``).
      encoder: builds the towers (``encoder.text_tower``: the ``model`` section's text transformer or pretrained BERT tower).
      recipe: unused: text has no views.
      facts: the tokenizer's ``vocab_size`` and ``pad_id``, and ``max_length`` tokens per text.
      rngs: initialisation keys.
    """
    del recipe
    m = method_config
    if m.temperature <= 0:
      raise ValueError(f"method.temperature={m.temperature}: must be > 0.")
    if m.num_negatives < 0:
      raise ValueError(f"method.num_negatives={m.num_negatives}: must be >= 0.")
    dt = encoder.dtypes
    tower = lambda: encoder.text_tower(  # noqa: E731
        vocab_size=facts.vocab_size, max_len=int(facts.max_length), pad_id=facts.pad_id, rngs=rngs)
    self.query_tower = tower()
    self.doc_tower = self.query_tower if m.shared_towers else tower()
    self.proj = (nnx.Linear(self.query_tower.out_dim, m.projection_dim, use_bias=False, rngs=rngs,
                            **dt)
                 if m.projection_dim else None)
    self.log_scale = nnx.Param(jnp.asarray(math.log(1.0 / m.temperature), jnp.float32))
    self.learn_temperature = bool(m.learn_temperature)
    self.symmetric = bool(m.symmetric)
    self.num_negatives = int(m.num_negatives)
    self.mask_shared = bool(m.mask_shared_positives) and not m.loss_block_size
    self.block_size = int(m.loss_block_size) or None
    dims = tuple(m.get("matryoshka_dims", ()))
    self.matryoshka_dims = check_dims(dims, self.out_dim) if dims else ()

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    """The towers must be text towers; temperature, negatives, projection, block size, Matryoshka
    prefixes. (A pretrained BERT folder against the data is the experiment's check.)"""
    del augment
    m = method_config
    if model is not None and model.get("name") not in models.TEXT_ENCODERS:
      bad_field("model.name", model.get("name"), "method 'retrieval' trains text towers; set "
                "model = jaxcl.models.default_config('text_transformer') (from scratch) or "
                "default_config('bert') with model.pretrained (a pretrained folder).")
    if (model is not None and model.get("name") == "text_transformer"
        and model.get("pool") not in POOLS):
      bad_field("model.pool", model.get("pool"), "a text tower pools with 'mean' or 'cls'.")
    if not m.temperature > 0:
      bad_field("method.temperature", m.temperature, "must be > 0 (0.05 is usual for retrievers).")
    if m.num_negatives < 0:
      bad_field("method.num_negatives", m.num_negatives, "must be >= 0 (0: in-batch negatives only).")
    if m.projection_dim < 0:
      bad_field("method.projection_dim", m.projection_dim, "must be >= 0 (0: no projection).")
    if m.loss_block_size < 0:
      bad_field("method.loss_block_size", m.loss_block_size, "must be >= 0 (0: the exact dense loss).")
    dims = tuple(m.get("matryoshka_dims", ()))
    if dims and (len(set(dims)) != len(dims) or min(dims) < 1):
      bad_field("method.matryoshka_dims", dims, "give distinct positive prefix sizes, e.g. "
                "(384, 128, 64), or () for none.")

  @property
  def out_dim(self) -> int:
    return self.proj.out_features if self.proj is not None else self.query_tower.out_dim

  def _embed(self, tower, ids: jax.Array, keys: jax.Array | None = None) -> jax.Array:
    x = tower(ids) if keys is None else tower(ids, keys=keys)
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
    # A BERT tower drops out in training, each text's masks from its row's key (so they do not depend
    # on the device count or on gradient-caching chunks).
    keys = batch.get("key") if isinstance(self.query_tower, models.BertEncoder) else None
    text_keys = lambda i: None if keys is None else jax.vmap(  # noqa: E731
        lambda k: jax.random.fold_in(k, i))(keys)
    out = {"query": self._embed(self.query_tower, batch["query_ids"], text_keys(0)),
           "positive": self._embed(self.doc_tower, batch["positive_ids"], text_keys(1))}
    if self.num_negatives:
      ids = batch["negative_ids"]
      b, h, length = ids.shape
      neg_keys = None if keys is None else jnp.stack([text_keys(2 + j) for j in range(h)], 1)
      out["negatives"] = self._embed(self.doc_tower, ids.reshape(b * h, length),
                                     None if neg_keys is None else neg_keys.reshape(b * h)
                                     ).reshape(b, h, -1)
    return out

  def loss_from_embeddings(self, emb, batch, *, axis_name=None):
    """The retrieval InfoNCE of ``embed``'s output (gradient-caching hook)."""
    masks = {}
    if self.block_size is None:
      masks["positive_keys"] = batch["positive_key"] if self.mask_shared else None
      if self.num_negatives:
        masks["negatives_valid"] = batch["negative_valid"]
    t = self.temperature()
    loss_fn = losses.retrieval_infonce
    if self.matryoshka_dims:
      loss_fn = losses.matryoshka(loss_fn, self.matryoshka_dims)
    loss = loss_fn(emb["query"], emb["positive"], emb.get("negatives"), temperature=t,
                   symmetric=self.symmetric, axis_name=axis_name, block_size=self.block_size,
                   **masks)
    q, p = (jax.lax.stop_gradient(emb[k]) for k in ("query", "positive"))
    return loss, {"in_batch_top1": losses.positive_top1(q, p, axis_name=axis_name),
                  "temperature": t, "embedding_std": losses.embedding_std(q, axis_name=axis_name)}

  def loss(self, batch, *, axis_name=None):
    return self.loss_from_embeddings(self.embed(batch), batch, axis_name=axis_name)
