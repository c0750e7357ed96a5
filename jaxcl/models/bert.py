"""The BERT-family text encoder (Devlin et al. 2019) that BERT, MiniLM, BGE and E5 checkpoints share,
with sentence-transformers' pooling (Reimers & Gurevych 2019).

For token ids x [B, T] with attention mask m = (x != pad_id):

  h_0 = LN(E_word[x] + E_pos[0..T-1] + E_type[0])                        (embeddings)
  a   = softmax(Q K^T / sqrt(d_head) + log m) V,  Q, K, V = h W_q, h W_k, h W_v   (per head)
  h'  = LN(h + a W_o)                                                   (post-LN blocks)
  h   = LN(h' + gelu(h' W_i) W_out)

with biases on every projection, GELU exact (erf, Hugging Face's ``"gelu"``) or tanh-approximated
(``"gelu_new"``), and LayerNorm's epsilon from the checkpoint's config. The sentence vector pools the
last hidden states as sentence-transformers' ``Pooling`` does: ``mean`` over the real tokens, ``cls``
the first token, ``max`` over the real tokens; ``normalize=True`` divides it by its L2 norm
(``Normalize``). Token-type ids are all 0 (one text per sequence).

Called with one PRNG key per text (``keys``), the tower drops out as BERT does in training (after the
embeddings and after each block's two output projections at ``hidden_dropout_prob``, on the attention
probabilities at ``attention_probs_dropout_prob``): each text's masks come from its own key, so they
do not depend on how the batch is split over devices or into gradient-caching chunks.

Parameter names follow Hugging Face's BertModel (``jaxcl.models.pretrained`` maps them one to one);
the pooler of a checkpoint (unused by the sentence vector) is carried as ``Carried`` variables so that
an export keeps it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.text import _lookup

POOLS = ("mean", "cls", "max")
ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}  # name -> tanh approx.


def _dropout(x: jax.Array, keys: jax.Array | None, rate: float, site: int) -> jax.Array:
  """Inverted dropout of ``x`` [B, ...] with text b's mask drawn from ``fold_in(keys[b], site)``."""
  if keys is None or rate <= 0:
    return x
  keep = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, site), 1.0 - rate,
                                                 x.shape[1:]))(keys)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class Carried(nnx.Variable):
  """Weights a checkpoint holds that the sentence vector does not use (BERT's pooler): kept with the
  model and exported, never trained."""


class BertLayer(nnx.Module):
  """One post-LN block: self-attention -> output dense -> residual -> LN; GELU MLP -> residual -> LN."""

  def __init__(self, hidden: int, heads: int, intermediate: int, *, eps: float, approximate: bool,
               hidden_dropout: float = 0.0, attention_dropout: float = 0.0, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    if hidden % heads:
      raise ValueError(f"BERT hidden_size {hidden} must be divisible by num_attention_heads {heads}")
    init = nnx.initializers.normal(0.02)  # BERT's initializer_range (only without pretrained weights)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    lin = dict(kw, kernel_init=init)
    self.heads, self.approximate = heads, approximate
    self.hidden_dropout, self.attention_dropout = hidden_dropout, attention_dropout
    self.query = nnx.Linear(hidden, hidden, **lin)
    self.key = nnx.Linear(hidden, hidden, **lin)
    self.value = nnx.Linear(hidden, hidden, **lin)
    self.attention_output = nnx.Linear(hidden, hidden, **lin)
    self.attention_norm = nnx.LayerNorm(hidden, epsilon=eps, **kw)
    self.intermediate = nnx.Linear(hidden, intermediate, **lin)
    self.output = nnx.Linear(intermediate, hidden, **lin)
    self.output_norm = nnx.LayerNorm(hidden, epsilon=eps, **kw)

  def __call__(self, x: jax.Array, mask: jax.Array, keys: jax.Array | None = None,
               site: int = 0) -> jax.Array:
    """``x`` [B, T, hidden]; ``mask`` bool [B, 1, T, T] (True: may attend); ``keys`` [B] (training:
    dropout, sites ``site``..``site + 2``) or None."""
    b, t, d = x.shape
    split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    if keys is None or self.attention_dropout <= 0:
      y = jax.nn.dot_product_attention(q, k, v, mask=mask)
    else:  # the probabilities themselves are dropped, so they are spelt out
      s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // self.heads).astype(q.dtype)
      s = jnp.where(mask, s, jnp.finfo(s.dtype).min)
      p = _dropout(jax.nn.softmax(s.astype(jnp.float32), axis=-1).astype(q.dtype), keys,
                   self.attention_dropout, site)
      y = jnp.einsum("bhqk,bkhd->bqhd", p, v)
    y = _dropout(self.attention_output(y.reshape(b, t, d)), keys, self.hidden_dropout, site + 1)
    x = self.attention_norm(x + y)
    h = jax.nn.gelu(self.intermediate(x), approximate=self.approximate)
    return self.output_norm(x + _dropout(self.output(h), keys, self.hidden_dropout, site + 2))


class BertEncoder(nnx.Module):
  """Embeddings + post-LN BERT blocks + sentence-transformers pooling (module docstring)."""

  def __init__(
      self,
      *,
      vocab_size: int,
      hidden_size: int = 384,
      num_hidden_layers: int = 6,
      num_attention_heads: int = 12,
      intermediate_size: int = 1536,
      max_position_embeddings: int = 512,
      type_vocab_size: int = 2,
      layer_norm_eps: float = 1e-12,
      hidden_act: str = "gelu",
      hidden_dropout_prob: float = 0.0,
      attention_probs_dropout_prob: float = 0.0,
      pool: str = "mean",
      normalize: bool = False,
      pad_id: int = 0,
      pooler: bool = False,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the encoder (random weights; ``jaxcl.models.pretrained`` loads a checkpoint's).

    Args:
      vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
        max_position_embeddings, type_vocab_size, layer_norm_eps, hidden_act, hidden_dropout_prob,
        attention_probs_dropout_prob: the fields of a Hugging Face ``BertConfig`` (``config.json``)
        of the same names (dropout applies only when the call passes keys).
      pool: "mean" | "cls" | "max" (sentence-transformers' pooling modes).
      normalize: L2-normalise the pooled vector (sentence-transformers' ``Normalize`` module).
      pad_id: the tokenizer's padding id; those tokens are masked out of attention and pooling.
      pooler: carry BERT's pooler dense layer (a checkpoint that has one keeps it on export).
      dtype: compute dtype; parameters stay in ``param_dtype``.
      param_dtype: parameter dtype.
      rngs: initialisation keys.
    """
    if pool not in POOLS:
      raise ValueError(f"BERT pooling must be one of {POOLS}, got {pool!r}")
    if hidden_act not in ACTIVATIONS:
      raise ValueError(f"BERT hidden_act must be one of {tuple(ACTIVATIONS)}, got {hidden_act!r}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    emb = dict(kw, embedding_init=nnx.initializers.normal(0.02))
    self.pool, self.normalize, self.pad_id = pool, bool(normalize), int(pad_id)
    self.max_len = max_position_embeddings
    self.hidden_dropout = hidden_dropout_prob
    self.word_embeddings = nnx.Embed(vocab_size, hidden_size, **emb)
    self.position_embeddings = nnx.Embed(max_position_embeddings, hidden_size, **emb)
    self.token_type_embeddings = nnx.Embed(type_vocab_size, hidden_size, **emb)
    self.embeddings_norm = nnx.LayerNorm(hidden_size, epsilon=layer_norm_eps, **kw)
    self.layers = nnx.List([
        BertLayer(hidden_size, num_attention_heads, intermediate_size, eps=layer_norm_eps,
                  approximate=ACTIVATIONS[hidden_act], hidden_dropout=hidden_dropout_prob,
                  attention_dropout=attention_probs_dropout_prob, **kw)
        for _ in range(num_hidden_layers)])
    if pooler:
      self.pooler_weight = Carried(jnp.zeros((hidden_size, hidden_size), param_dtype))
      self.pooler_bias = Carried(jnp.zeros((hidden_size,), param_dtype))
    else:
      self.pooler_weight = self.pooler_bias = None
    self.out_dim = hidden_size

  def hidden_states(self, tokens: jax.Array, keys: jax.Array | None = None) -> jax.Array:
    """The last layer's token vectors [B, T, hidden] (compute dtype) of token ids [B, T]; with one
    PRNG key per text (``keys`` [B]), dropout as in training."""
    b, t = tokens.shape
    if t > self.max_len:
      raise ValueError(f"{t} tokens per text but the BERT checkpoint has {self.max_len} positions; "
                       f"set config.data.max_length <= {self.max_len}.")
    dtype = self.word_embeddings.dtype or self.word_embeddings.param_dtype
    x = _lookup(self.word_embeddings.embedding[...], tokens).astype(dtype)
    x = x + self.position_embeddings.embedding[...][:t].astype(dtype)
    x = x + self.token_type_embeddings.embedding[...][0].astype(dtype)
    x = _dropout(self.embeddings_norm(x), keys, self.hidden_dropout, 0)
    valid = tokens != self.pad_id
    mask = jnp.broadcast_to(valid[:, None, None, :], (b, 1, t, t))
    for i, layer in enumerate(self.layers):
      x = layer(x, mask, keys, site=1 + 3 * i)
    return x

  def __call__(self, tokens: jax.Array, *, keys: jax.Array | None = None) -> jax.Array:
    """Encodes token ids [B, T] (int, padded with ``pad_id``) to float32 sentence vectors [B, hidden];
    ``keys`` [B] (one PRNG key per text) turns dropout on (training)."""
    x = self.hidden_states(tokens, keys).astype(jnp.float32)
    valid = (tokens != self.pad_id)[..., None]
    if self.pool == "cls":
      out = x[:, 0]
    elif self.pool == "max":
      out = jnp.max(jnp.where(valid, x, -1e9), axis=1)  # sentence-transformers' fill value
    else:
      w = valid.astype(jnp.float32)
      out = jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-9)
    if self.normalize:  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
      out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out
