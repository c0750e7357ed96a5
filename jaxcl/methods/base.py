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

Construction: ``Method(method_config, *, encoder, recipe, facts, rngs)``. ``method_config`` is the
method's own section of the experiment config (``config.method``), and nothing else of the config
reaches a method; ``encoder`` is a ``jaxcl.models.EncoderFactory`` (the method calls it with its keys),
``recipe`` a ``jaxcl.augment.ViewRecipe`` (None for methods that make no image views) and ``facts`` the
plain ``Facts`` of the data and the run. A method **declares** what it needs as class attributes
(``data_kind``, ``reads_captions``, ``multi_crop``, ``uses_labels``, ``needs_queue``) and checks its
own section in ``check_config``; the experiment reads those instead of knowing methods by name.

Sharding of state inside ``shard_map`` follows the variable type: ``Queue`` and ``Stash`` are split over
the data axis along their first dimension; every other variable is replicated (``BatchStat`` leaves are
averaged over devices after the step, which is exact when BN is synchronised).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx


#: The key of ``loss``'s metrics that carries the features for the online probe (see above).
PROBE_FEATURES = "probe_features"


#: The kinds of data a method can train on (``Method.data_kind``); the experiment runs one task each.
DATA_KINDS = ("image", "sequence", "text")


@dataclasses.dataclass(frozen=True)
class Facts:
  """What the data and the run tell a method: plain values the experiment reads once.

  Attributes:
    image_shape: (H, W, C) of the stored images, or (T, C) of stored sequences; () for text.
    num_classes: number of classes (CLIP/SigLIP caption one per class).
    class_names: the class names (CLIP/SigLIP's prompt captions).
    vocab_size: the tokenizer's vocabulary size, for methods with a text tower (0: no tokenizer; for
      CLIP/SigLIP > 0 means the dataset's own captions).
    pad_id: the tokenizer's padding id.
    max_length: tokens per text (the data's ``max_length``).
    global_batch_size: examples per step over every device (MoCo v2 sizes its key stash by it).
  """

  image_shape: tuple[int, ...] = ()
  num_classes: int = 0
  class_names: Sequence[str] = ()
  vocab_size: int = 0
  pad_id: int = 0
  max_length: int = 0
  global_batch_size: int = 0


def bad_field(field: str, value: Any, fix: str) -> NoReturn:
  """Raises the one-line ``ValueError`` of a bad config value: ``config.<field>=<value>: <fix>``."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  raise ValueError(f"config.{field}={value!r}: {fix}")


#: Names of the hyperparameters several methods share, checked by name in ``Method.check_config``.
_POSITIVE_INTS = ("proj_hidden_dim", "proj_out_dim", "pred_hidden_dim", "embed_dim", "queue_size",
                  "text_width", "text_depth", "text_heads", "proj_layers", "out_dim",
                  "head_hidden_dim", "head_bottleneck_dim", "head_layers")


class Target(nnx.Variable):
  """A copy of online weights updated by EMA (BYOL, MoCo); never receives gradients."""


class Queue(nnx.Variable):
  """A memory of past embeddings used as negatives; sharded over the data axis on dim 0."""


class Stash(nnx.Variable):
  """Per-example outputs of ``loss`` kept for ``after_step`` (e.g. MoCo keys); sharded on dim 0."""


class Method(nnx.Module):
  """Base class: a method's networks, state and loss. See the module docstring for the contract."""

  #: The data it trains on: "image" (uint8 images), "sequence" ([T, C] signals) or "text" (pairs).
  data_kind: ClassVar[str] = "image"
  #: Whether it also trains on an image dataset's own captions (CLIP/SigLIP: the captions task).
  reads_captions: ClassVar[bool] = False
  #: Whether ``loss`` trains on multi-crop's extra local views (``augment.num_local``).
  multi_crop: ClassVar[bool] = False
  #: Whether ``loss`` reads ``batch['label']`` (SupCon, CLIP captions); the trainer checks data has labels.
  uses_labels: ClassVar[bool] = False
  #: Whether it keeps a ``Queue`` of past embeddings (sharded over the data axis with the batch).
  needs_queue: ClassVar[bool] = False
  #: Which variables the optimizer updates.
  trainable: ClassVar[Any] = nnx.Param
  #: Set on the instance by the trainer when it runs the online probe: ``loss`` then adds the
  #: detached features of its forward pass to its metrics under ``PROBE_FEATURES`` (methods that can).
  #: Off by default, so ``loss``'s metrics are scalars for any other caller.
  hand_over_features: bool = False

  @classmethod
  def check_config(cls, method_config: ml_collections.ConfigDict, *,
                   model: ml_collections.ConfigDict | None = None,
                   augment: ml_collections.ConfigDict | None = None) -> None:
    """Raises ValueError naming the field and the fix for the first bad value of ``method_config``.

    Runs before anything is built. The default checks the hyperparameters several methods share, by
    name; subclasses add their own rules (and call this). ``model`` and ``augment`` are given for
    the methods that need something of their encoder or views (I-JEPA's ViT, a retriever's text
    tower); a method reads nothing else of the experiment.
    """
    del model, augment
    m = method_config
    if "temperature" in m and not m.temperature > 0:
      bad_field("method.temperature", m.temperature, "must be > 0 (0.1-0.5 is usual).")
    for field in _POSITIVE_INTS:
      if field in m and (not isinstance(m[field], int) or m[field] <= 0):
        bad_field(f"method.{field}", m[field], "must be a positive integer.")

  @classmethod
  def reads_labels(cls, method_config: ml_collections.ConfigDict) -> bool:
    """Whether the method built from ``method_config`` reads ``batch['label']`` (default:
    ``uses_labels``; a method whose loss is a plug-in asks its loss)."""
    del method_config
    return cls.uses_labels

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
