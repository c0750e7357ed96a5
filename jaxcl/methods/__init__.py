"""Contrastive and self-supervised methods behind one interface (see ``jaxcl.methods.base``).

``default_config(name)`` gives the ``method`` sub-config of an experiment; ``create(config, ...)`` builds
the method (an ``nnx.Module``) from the whole experiment config (``config.method``, ``config.model``,
``config.augment``).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
from flax import nnx

from jaxcl.methods import (barlow_twins, byol, clip, cpc, dino, ijepa, metric_learning, moco, retrieval,
                           simclr, supcon, vicreg)
from jaxcl.methods.barlow_twins import BarlowTwins
from jaxcl.methods.base import Method, Queue, Stash, Target
from jaxcl.methods.byol import BYOL, SimSiam
from jaxcl.methods.clip import CLIP, SigLIP
from jaxcl.methods.cpc import CPC
from jaxcl.methods.dino import DINO
from jaxcl.methods.ijepa import IJEPA
from jaxcl.methods.metric_learning import MetricLearning
from jaxcl.methods.moco import MoCoV2, MoCoV3
from jaxcl.methods.retrieval import Retrieval
from jaxcl.methods.simclr import SimCLR
from jaxcl.methods.supcon import SupCon
from jaxcl.methods.vicreg import VICReg

_REGISTRY = {
    "simclr": (simclr.default_config, SimCLR),
    "moco_v2": (moco.v2_default_config, MoCoV2),
    "moco_v3": (moco.v3_default_config, MoCoV3),
    "byol": (byol.default_config, BYOL),
    "simsiam": (byol.simsiam_default_config, SimSiam),
    "barlow_twins": (barlow_twins.default_config, BarlowTwins),
    "vicreg": (vicreg.default_config, VICReg),
    "supcon": (supcon.default_config, SupCon),
    "clip": (clip.clip_default_config, CLIP),
    "siglip": (clip.siglip_default_config, SigLIP),
    "metric_learning": (metric_learning.default_config, MetricLearning),
    "cpc": (cpc.default_config, CPC),
    "dino": (dino.default_config, DINO),
    "ijepa": (ijepa.default_config, IJEPA),
    "retrieval": (retrieval.default_config, Retrieval),
}
#: Methods that train on a text dataset's tokenized pairs (``create`` needs the tokenizer's facts).
TEXT_METHODS = ("retrieval",)
NAMES = tuple(_REGISTRY)


def _check(name: str) -> None:
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; set method.name to one of: {', '.join(NAMES)}")


def default_config(name: str) -> ml_collections.ConfigDict:
  """The ``method`` sub-config: ``name`` and the method's hyperparameters, with its paper's values.

  Args:
    name: one of ``NAMES``.

  Returns:
    An unlocked ConfigDict.
  """
  _check(name)
  return _REGISTRY[name][0]()


def create(
    config: ml_collections.ConfigDict,
    *,
    rngs: nnx.Rngs,
    image_shape: tuple[int, ...] = (),
    num_classes: int = 0,
    class_names: Sequence[str] = (),
    vocab_size: int = 0,
    pad_id: int = 0,
) -> Method:
  """Builds the method that ``config.method.name`` names.

  Args:
    config: the experiment config; reads ``config.method``, ``config.model`` (the encoder),
      ``config.augment`` (the view recipe; its ``size`` is the training image side) and, for moco_v2,
      the global batch size (``config.batch_size`` or ``config.train.batch_size``) to size its key stash.
    image_shape: (H, W, C) of the stored images.
    num_classes: number of classes (CLIP/SigLIP caption one per class).
    class_names: the class names, used by CLIP/SigLIP's captions.
    rngs: initialisation keys.
    vocab_size / pad_id: the tokenizer's, for the text methods (``TEXT_METHODS``), and for
      CLIP/SigLIP on a captioned dataset (> 0: the text tower reads ``batch["caption_ids"]``).

  Returns:
    The method, an ``nnx.Module`` following ``jaxcl.methods.base.Method``.
  """
  name = config.method.name
  _check(name)
  cls = _REGISTRY[name][1]
  if name in TEXT_METHODS:
    return cls(config, vocab_size=vocab_size, pad_id=pad_id, rngs=rngs)
  if cls in (CLIP, SigLIP):
    return cls(config, image_shape=tuple(image_shape), num_classes=num_classes,
               class_names=class_names, rngs=rngs, vocab_size=vocab_size, pad_id=pad_id)
  return cls(config, image_shape=tuple(image_shape), rngs=rngs)


__all__ = [
    "BYOL", "BarlowTwins", "CLIP", "CPC", "DINO", "IJEPA", "Method", "MetricLearning", "MoCoV2",
    "MoCoV3", "NAMES", "Queue", "Retrieval", "SigLIP", "SimCLR", "SimSiam", "Stash", "SupCon", "TEXT_METHODS",
    "Target", "VICReg", "create", "default_config",
]
