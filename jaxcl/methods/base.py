"""The contract between a method and the one training loop.

A method is an ``nnx.Module`` that owns every network it trains or tracks (online encoder and heads,
EMA target, text tower) and every piece of state it carries between steps (MoCo's queue). The trainer
knows nothing else about it:

* ``loss(batch, *, axis_name)`` runs **per device** inside ``jax.shard_map`` over the data axis. ``batch``
  holds this device's rows: ``image`` (uint8, [b, H, W, C]), ``label`` (int32, [b]) and ``key`` (one PRNG
  key per example, [b], derived by the trainer from the seed, the step and the *global* example index, so
  views do not depend on the device count). It makes the views with its augmentation recipe, runs the
  networks (BatchNorm synchronised over ``axis_name`` where the method asks for it), and returns
  ``(loss, metrics)``: the loss of the *global* batch (the losses psum their local parts), and a dict of
  scalar metrics that the trainer averages over devices.
* Gradients are taken only for the variables that ``trainable`` selects (default: every ``nnx.Param``);
  anything else (``Target`` copies, ``Queue``, ``nnx.BatchStat``) is carried, not trained.
* ``after_step(*, step, total_steps)`` runs once per optimizer step on the *global* (GSPMD-sharded) state,
  outside ``shard_map``: EMA updates of ``Target`` variables, pushing ``Stash``-ed keys into the ``Queue``.
* ``features(images)`` maps float images in [0, 1] ([B, H, W, C], the config's image size) to the
  representation used for kNN / linear-probe evaluation (the encoder output, before any head), in eval
  mode. Methods with a second tower may add their own helpers (e.g. ``encode_text``).
* The online linear probe (``jaxcl.train.online_probe``) trains on encoder features. When the trainer
  sets ``hand_over_features``, a method that already has them puts them, detached, in ``loss``'s
  metrics under ``PROBE_FEATURES``: [b, F] or
  [b, V, F] (V views of each of the device's b rows); the trainer takes them out before averaging the
  metrics. Otherwise the trainer calls ``probe_features(batch)`` on the global batch outside
  ``shard_map``: by default ``features`` of the un-augmented images, an extra eval-mode forward pass.

Sharding of state inside ``shard_map`` follows the variable type: ``Queue`` and ``Stash`` are split over
the data axis along their first dimension; every other variable is replicated (``BatchStat`` leaves are
averaged over devices after the step, which is exact when BN is synchronised).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx


#: The key of ``loss``'s metrics that carries the features for the online probe (see above).
PROBE_FEATURES = "probe_features"


class Target(nnx.Variable):
  """A copy of online weights updated by EMA (BYOL, MoCo); never receives gradients."""


class Queue(nnx.Variable):
  """A memory of past embeddings used as negatives; sharded over the data axis on dim 0."""


class Stash(nnx.Variable):
  """Per-example outputs of ``loss`` kept for ``after_step`` (e.g. MoCo keys); sharded on dim 0."""


class Method(nnx.Module):
  """Base class: a method's networks, state and loss. See the module docstring for the contract."""

  #: Whether ``loss`` reads ``batch['label']`` (SupCon, CLIP captions); the trainer checks data has labels.
  uses_labels: ClassVar[bool] = False
  #: Which variables the optimizer updates.
  trainable: ClassVar[Any] = nnx.Param
  #: Set on the instance by the trainer when it runs the online probe: ``loss`` then adds the
  #: detached features of its forward pass to its metrics under ``PROBE_FEATURES`` (methods that can).
  #: Off by default, so ``loss``'s metrics are scalars for any other caller.
  hand_over_features: bool = False

  def loss(
      self, batch: dict[str, jax.Array], *, axis_name: str | None = None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError

  def after_step(self, *, step: jax.Array, total_steps: int) -> None:
    """Post-optimizer-step hook on the global state. Default: nothing."""

  def features(self, images: jax.Array) -> jax.Array:
    raise NotImplementedError

  def evaluated_encoder(self) -> nnx.Module:
    """The encoder whose weights ``features`` uses, exported as ``workdir/encoder`` at the end of a run.
    Default: ``self.encoder``; DINO and I-JEPA evaluate their EMA teacher, as their papers do."""
    return self.encoder

  def probe_features(self, batch: dict[str, jax.Array]) -> jax.Array:
    """Features [B, F] of ``batch['image']`` (uint8) for the online linear probe; see module docstring."""
    return self.features(batch["image"].astype(jnp.float32) / 255.0)
