"""Contrastive Predictive Coding (van den Oord, Li and Vinyals 2018) on raw signals.

A strided 1-D convolutional encoder turns a random window of each sequence into latents z_t, a context
network summarises them into contexts c_t, and a linear map W_k per horizon predicts z_{t+k} from c_t for
k = 1..K; ``jaxcl.losses.cpc_infonce`` scores each prediction against every latent of the global
batch (other steps of the same sequence and every step of every other sequence, on every device).

The batch's ``image`` is the float32 signal [b, T, C] (``data.name='plaid'``). Signals pass through
``sign(x) log(1 + |x|)`` first (``method.input_transform='symlog'``): appliance currents span three
orders of magnitude, and the amplitude is information the encoder should keep, not normalise away.
The representation for evaluation (``features``) is the context averaged over every step of the whole
stored sequence.

The context network is the paper's "GRU, or causal transformer", chosen by ``method.context``:

* ``"gru"`` (default): a GRU of width ``method.context_dim``.
* ``"transformer"``: ``jaxcl.models.sequence.CausalTransformerContext``, ``method.context_depth``
  pre-LN blocks of width ``method.context_dim`` with ``method.context_heads`` heads, causal attention
  (c_t sees z_1 .. z_t only) and fixed sinusoidal positions, so it runs on the training window and on
  the whole stored sequence alike (positions past the window's last step are never seen in training).
  Switch a run with ``--config.method.context=transformer`` (e.g. on ``configs/cpc_plaid.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods.base import Facts, Method, bad_field
from jaxcl.models.sequence import CausalTransformerContext, GRUContext

INPUT_TRANSFORMS = ("symlog", "none")
CONTEXTS = ("gru", "transformer")


def default_config() -> ml_collections.ConfigDict:
  """CPC's hyperparameters (K = 12 in the paper's audio model; 4 on the short windows here)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "cpc"
  cfg.crop_length = 256          # samples per training window
  cfg.prediction_steps = 4       # K: horizons predicted from each context
  cfg.context = "gru"            # context network: "gru" | "transformer" (causal)
  cfg.context_dim = 128          # context width (the paper's GRU: 256)
  cfg.context_depth = 2          # transformer blocks (context="transformer" only)
  cfg.context_heads = 4          # attention heads; must divide context_dim (context="transformer" only)
  cfg.gain = (0.8, 1.25)         # random amplitude scaling of each window ((1, 1): none)
  cfg.input_transform = "symlog"  # "symlog": sign(x) log(1+|x|) | "none"
  return cfg


def sequence_model_config() -> ml_collections.ConfigDict:
  """The ``model`` section of a CPC config: the 1-D convolutional encoder's layers."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "conv1d"
  cfg.widths = (64, 64, 128, 128)
  cfg.kernels = (8, 4, 4, 4)
  cfg.strides = (4, 2, 2, 1)     # 16 samples per latent
  return cfg


class CPC(Method):
  """Encoder + context network (GRU or causal transformer) + K linear predictors, trained with CPC's
  InfoNCE."""

  data_kind = "sequence"

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: None = None, facts: Facts, rngs: nnx.Rngs):
    """Builds the networks.

    Args:
      method_config: CPC's section (``default_config``).
      encoder: builds the 1-D convolutional encoder (``encoder.sequence_encoder``).
      recipe: unused: CPC crops its own windows.
      facts: ``image_shape`` is (T, C) of the stored sequences.
      rngs: initialisation keys.
    """
    del recipe
    image_shape = tuple(facts.image_shape)
    if len(image_shape) != 2:
      raise ValueError(f"method.name='cpc' trains on sequences [T, C]; the dataset holds images "
                       f"{image_shape}. Use a sequence dataset (data.name='plaid').")
    m = method_config
    self.check_config(m)
    context = m.get("context", "gru")
    self.crop_length, self.horizons = int(m.crop_length), int(m.prediction_steps)
    self.gain = tuple(float(g) for g in m.gain)
    self.input_transform = str(m.input_transform)
    self.encoder = encoder.sequence_encoder(in_channels=int(image_shape[1]), rngs=rngs)
    steps = self.encoder.steps(self.crop_length)
    if not 0 < self.horizons < steps:
      raise ValueError(f"method.prediction_steps={self.horizons}: a window of {self.crop_length} "
                       f"samples gives {steps} latent steps; predict 1 to {steps - 1} steps ahead, or "
                       "raise method.crop_length.")
    if self.crop_length > image_shape[0]:
      raise ValueError(f"method.crop_length={self.crop_length} exceeds the stored sequences "
                       f"({image_shape[0]} steps); lower it.")
    if context == "gru":
      self.context = GRUContext(self.encoder.out_dim, int(m.context_dim), rngs=rngs)
    else:
      self.context = CausalTransformerContext(self.encoder.out_dim, int(m.context_dim),
                                              depth=int(m.context_depth), heads=int(m.context_heads),
                                              rngs=rngs)
    self.predictors = nnx.Linear(int(m.context_dim), self.horizons * self.encoder.out_dim, rngs=rngs)

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    super().check_config(method_config, model=model, augment=augment)
    m = method_config
    if m.input_transform not in INPUT_TRANSFORMS:
      raise ValueError(f"method.input_transform={m.input_transform!r}: use one of {INPUT_TRANSFORMS}.")
    context = m.get("context", "gru")
    if context not in CONTEXTS:
      raise ValueError(f"method.context={context!r}: use one of {CONTEXTS}.")
    if context == "transformer" and (m.context_dim % 2 or m.context_dim % m.context_heads):
      raise ValueError(f"method.context_dim={m.context_dim} must be even and divisible by "
                       f"method.context_heads={m.context_heads}; change one of them.")
    if model is not None and model.get("name") != "conv1d":
      bad_field("model.name", model.get("name"), "cpc encodes signals with a 1-D convolution: set "
                "model = jaxcl.methods.cpc.sequence_model_config().")

  def _prepare(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return jnp.sign(x) * jnp.log1p(jnp.abs(x)) if self.input_transform == "symlog" else x

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Latents z [B, S, D] and contexts c [B, S, H] of signals [B, T, C]."""
    z = self.encoder(self._prepare(x))
    return z, self.context(z)

  def loss(self, batch, *, axis_name=None):
    keys = jax.vmap(lambda k: jax.random.split(k))(batch["key"])
    x = jax.vmap(augment.random_window, in_axes=(0, 0, None))(keys[:, 0], batch["image"],
                                                               self.crop_length)
    if self.gain != (1.0, 1.0):
      x = jax.vmap(augment.random_gain, in_axes=(0, 0, None, None))(keys[:, 1], x, *self.gain)
    z, c = self.encode(x)
    b, s, d = z.shape
    predictions = self.predictors(c).reshape(b, s, self.horizons, d)
    loss, accuracy = losses.cpc.cpc_infonce_and_accuracy(predictions, z, axis_name=axis_name)
    return loss, {"cpc_accuracy": accuracy,
                  "embedding_std": losses.embedding_std(z.reshape(b * s, d), axis_name=axis_name)}

  def features(self, signals: jax.Array) -> jax.Array:
    """The context averaged over every step of the whole signal [B, T, C] -> [B, H]."""
    return jnp.mean(self.encode(signals)[1], axis=1)
