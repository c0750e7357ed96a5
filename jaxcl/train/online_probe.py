"""The online linear probe: a linear classifier trained on detached encoder features during pretraining.

As in solo-learn and lightly, a softmax head ``logits = h W + b`` is trained with the labels of each
training batch, with its own optimiser, on detached encoder features: the encoder never sees its
gradient, and its batch accuracy (measured before the update) is logged with the loss every
``log_every`` steps. The features are those of the training pass itself (both augmented views, as in
solo-learn) where the method hands them over (SimCLR, SupCon, Barlow Twins, VICReg: see
``jaxcl.methods.base.PROBE_FEATURES``), so the probe costs one linear layer; other methods pay an extra
eval-mode forward pass of ``probe_features``.

The update runs on the global (GSPMD-sharded) batch outside ``shard_map``, so it is the same on any
number of devices. Its state lives in the train state under ``"probe"`` and is checkpointed with it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class OnlineProbe:
  """A linear head on stop-gradient features, trained alongside the method.

  Args:
    num_classes: number of label values.
    image_shape: (H, W, C) of the batch's uint8 images (to find the feature width abstractly).
    tx: the probe's own optimiser (default Adam, lr 1e-2: Adam is insensitive to the scale of the
      features, which differs between encoders and changes as they train).
  """

  def __init__(self, num_classes: int, *, image_shape: tuple[int, ...],
               tx: optax.GradientTransformation | None = None):
    if num_classes < 2:
      raise ValueError(f"the online probe needs labelled data with >= 2 classes, got {num_classes}.")
    self.num_classes, self.image_shape = int(num_classes), tuple(image_shape)
    self.tx = optax.adam(1e-2) if tx is None else tx

  def feature_dim(self, graphdef: Any, *states: Any) -> int:
    """Width of ``probe_features`` for the method ``nnx.merge(graphdef, *states)`` (no compute)."""
    batch = {"image": jax.ShapeDtypeStruct((2, *self.image_shape), jnp.uint8),
             "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
    out = jax.eval_shape(lambda st, b: nnx.merge(graphdef, *st).probe_features(b), states, batch)
    return int(out.shape[-1])

  def init(self, feature_dim: int) -> dict:
    """Zero weights and the optimiser's state: ``{"params": {"w", "b"}, "opt_state"}``."""
    params = {"w": jnp.zeros((feature_dim, self.num_classes), jnp.float32),
              "b": jnp.zeros((self.num_classes,), jnp.float32)}
    return {"params": params, "opt_state": self.tx.init(params)}

  def update(self, probe: dict, features: jax.Array,
             labels: jax.Array) -> tuple[dict, dict[str, jax.Array]]:
    """One probe step: ``(new probe state, {"online_probe_acc", "online_probe_loss"})``.

    Args:
      probe: the probe's state (``init``).
      features: [B, F] features of the batch's B examples, or [B, V, F] for V views of each.
      labels: [B] their labels.
    """
    feats = jax.lax.stop_gradient(features).astype(jnp.float32)
    if feats.ndim == 3:  # every view of an example carries its label
      labels = jnp.repeat(labels, feats.shape[1])
      feats = feats.reshape(-1, feats.shape[-1])

    def loss_fn(params):
      logits = jnp.matmul(feats, params["w"], precision=jax.lax.Precision.HIGHEST) + params["b"]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(probe["params"])
    updates, opt_state = self.tx.update(grads, probe["opt_state"], probe["params"])
    new = {"params": optax.apply_updates(probe["params"], updates), "opt_state": opt_state}
    return new, {"online_probe_acc": acc, "online_probe_loss": loss}
