"""Contrastive and self-supervised methods behind one interface (see ``jaxcl.methods.base``).

``default_config(name)`` gives a method's own config section (the experiment's ``method``);
``create(method_config, encoder=..., recipe=..., facts=..., rngs=...)`` builds the method (an
``nnx.Module``) from that section and plain objects, never from the rest of the experiment config.
``method_class(name)`` is the class, whose declarations (``data_kind``, ``multi_crop``, ``uses_labels``,
``needs_queue``, ``reads_captions``) and ``check_config`` the experiment reads. Adding a method is one
module and one ``_REGISTRY`` line here, or ``register(name, default_config, cls)`` from your own code.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
from flax import nnx

from jaxcl import augment, models
from jaxcl.methods import (barlow_twins, byol, clip, cpc, dino, ijepa, metric_learning, moco, retrieval,
                           simclr, supcon, vicreg)
from jaxcl.methods.barlow_twins import BarlowTwins
from jaxcl.methods.base import DATA_KINDS, Facts, Method, Queue, Stash, Target
from jaxcl.methods.byol import BYOL, SimSiam
from jaxcl.methods.clip import CLIP, SigLIP
from jaxcl.methods.cpc import CPC
from jaxcl.methods.dino import DINO
from jaxcl.methods.ijepa import IJEPA
from jaxcl.methods.image import ImageMethod, TwoViewMethod
from jaxcl.methods.metric_learning import MetricLearning
from jaxcl.methods.moco import MoCoV2, MoCoV3
from jaxcl.methods.momentum import MomentumMethod
from jaxcl.methods.retrieval import Retrieval
from jaxcl.methods.simclr import SimCLR
from jaxcl.methods.supcon import SupCon
from jaxcl.methods.vicreg import VICReg

_REGISTRY: dict[str, tuple[Callable[[], ml_collections.ConfigDict], type[Method]]] = {
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
#: The built-in methods' names, in registry order (``names()`` includes registered ones).
NAMES = tuple(_REGISTRY)
#: Methods that train on a text dataset's tokenized pairs (declared ``data_kind == "text"``).
TEXT_METHODS = tuple(n for n, (_, cls) in _REGISTRY.items() if cls.data_kind == "text")


def names() -> tuple[str, ...]:
  """Every method's name, the built-in ones first, then those added by ``register``."""
  return tuple(_REGISTRY)


def register(name: str, default_config: Callable[[], ml_collections.ConfigDict],
             cls: type[Method]) -> None:
  """Adds a method: ``method.name=name`` then builds ``cls`` with ``default_config()``'s fields.

  Args:
    name: the ``method.name`` that selects it; must be new.
    default_config: returns the method's section, with ``name`` set to ``name``.
    cls: a ``Method`` subclass constructed as ``cls(method_config, *, encoder, recipe, facts,
      rngs)`` and declaring ``data_kind`` (one of ``DATA_KINDS``).
  """
  if name in _REGISTRY:
    raise ValueError(f"method {name!r} is already registered; pick another name")
  if not (isinstance(cls, type) and issubclass(cls, Method)):
    raise TypeError(f"method {name!r}: {cls!r} is not a jaxcl.methods.Method subclass")
  if cls.data_kind not in DATA_KINDS:
    raise ValueError(f"method {name!r} declares data_kind={cls.data_kind!r}; use one of {DATA_KINDS}")
  _REGISTRY[name] = (default_config, cls)


def _check(name: str) -> None:
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; set method.name to one of: {', '.join(_REGISTRY)}")


def method_class(name: str) -> type[Method]:
  """The class that ``method.name = name`` builds (its declarations and ``check_config``)."""
  _check(name)
  return _REGISTRY[name][1]


def default_config(name: str) -> ml_collections.ConfigDict:
  """The ``method`` sub-config: ``name`` and the method's hyperparameters, with its paper's values.

  Args:
    name: one of ``names()``.

  Returns:
    An unlocked ConfigDict.
  """
  _check(name)
  return _REGISTRY[name][0]()


def create(method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
           recipe: augment.ViewRecipe | None, facts: Facts, rngs: nnx.Rngs) -> Method:
  """Builds the method that ``method_config.name`` names from its own section and plain objects.

  Args:
    method_config: the method's section (``default_config(name)``, possibly edited).
    encoder: builds the encoder (``jaxcl.models.EncoderFactory(model_config)``).
    recipe: the view recipe (``jaxcl.augment.view_recipe(augment_config)``); None for the methods
      that make no image views (``data_kind`` "sequence" or "text").
    facts: what the data and the run tell the method (``Facts``).
    rngs: initialisation keys.

  Returns:
    The method, an ``nnx.Module`` following ``jaxcl.methods.base.Method``.
  """
  cls = method_class(method_config.name)
  return cls(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)


__all__ = [
    "BYOL", "BarlowTwins", "CLIP", "CPC", "DATA_KINDS", "DINO", "Facts", "IJEPA", "ImageMethod",
    "Method", "MetricLearning", "MoCoV2", "MoCoV3", "MomentumMethod", "NAMES", "Queue", "Retrieval",
    "SigLIP", "SimCLR", "SimSiam", "Stash", "SupCon", "TEXT_METHODS", "Target", "TwoViewMethod",
    "VICReg", "create", "default_config", "method_class", "names", "register",
]
