"""The experiment config turned into the plain objects a method is built from, and the ``TrainSetup``.

A method sees only its own section (``config.method``); what it needs of the rest of the config comes
as objects made here once: the ``EncoderFactory`` of ``config.model``, the ``ViewRecipe`` of
``config.augment`` (for methods that make image views) and the ``Facts`` of the data and the run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import ml_collections
import optax
from flax import nnx

from jaxcl import augment, data, methods, models
from jaxcl.train import TrainSetup, grad_cache, optim
from jaxcl.train.online_probe import OnlineProbe


def facts(config: ml_collections.ConfigDict, *, image_shape: Sequence[int] = (), num_classes: int = 0,
          class_names: Sequence[str] = (), vocab_size: int = 0, pad_id: int = 0) -> methods.Facts:
  """The ``Facts`` of a run: the data's (given) and the config's (global batch, tokens per text)."""
  data = config.get("data") or {}
  return methods.Facts(image_shape=tuple(image_shape), num_classes=int(num_classes),
                       class_names=tuple(str(c) for c in class_names), vocab_size=int(vocab_size),
                       pad_id=int(pad_id), max_length=int(data.get("max_length", 0) or 0),
                       global_batch_size=int(config.get("batch_size", 0) or 0))


def method_factory(config: ml_collections.ConfigDict,
                   facts_: methods.Facts) -> Callable[[nnx.Rngs], methods.Method]:
  """``build(rngs) -> method``: ``config.method``'s method from its section, the encoder factory of
  ``config.model``, the view recipe of ``config.augment`` (image methods only) and ``facts_``."""
  cls = methods.method_class(config.method.name)
  encoder = models.EncoderFactory(config.model)
  recipe = augment.view_recipe(config.augment) if cls.data_kind == "image" else None
  return lambda rngs: methods.create(config.method, encoder=encoder, recipe=recipe, facts=facts_,
                                     rngs=rngs)


def create_method(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs, **data_facts) -> methods.Method:
  """The method of an experiment config, built now (notebooks, tests); ``data_facts``: the keyword
  arguments of ``facts`` (``image_shape``, ``num_classes``, ``class_names``, ``vocab_size``,
  ``pad_id``)."""
  return method_factory(config, facts(config, **data_facts))(rngs)


def build_setup(config: ml_collections.ConfigDict, mesh_: jax.sharding.Mesh,
                info: data.DataInfo | None = None, **data_facts) -> TrainSetup:
  """The ``TrainSetup`` a config describes: its method, optimiser and schedule on ``mesh_``.

  ``info`` describes an image or sequence dataset (and turns the online probe on where the config
  asks and the data has labels); a text or caption run gives its facts as keywords instead
  (``vocab_size``, ``pad_id``, ...: ``facts``).
  """
  if info is not None:
    data_facts = dict(image_shape=tuple(info.image_shape), num_classes=info.num_classes,
                      class_names=list(info.class_names))
  build = method_factory(config, facts(config, **data_facts))
  tx, schedule = optim.make_optimizer(config.optim, total_steps=config.steps,
                                      global_batch_size=config.batch_size)
  probe = None
  if info is not None and config.eval.online_probe and info.num_classes >= 2:  # data with labels
    probe = OnlineProbe(info.num_classes, image_shape=tuple(info.image_shape),
                        tx=optax.adam(config.eval.online_probe_lr),
                        views=config.eval.online_probe_views)
  load = None
  if config.model.get("pretrained"):  # the towers start from a checkpoint's weights
    folder = models.pretrained.read_folder(config.model.pretrained)
    load = functools.partial(models.pretrained.load_into, folder=folder)
  setup = TrainSetup(build, mesh=mesh_, tx=tx, schedule=schedule,
                     seed=config.seed, total_steps=config.steps,
                     grad_cache_chunks=config.train.grad_cache_chunks, online_probe=probe,
                     fsdp_min_size=config.train.fsdp_min_size if config.train.get("fsdp") else 0,
                     load_weights=load)
  chunks = config.train.grad_cache_chunks
  if chunks > 1 and not grad_cache.supports(setup.method_cls):
    raise ValueError(
        f"config.train.grad_cache_chunks={chunks}: method {config.method.name!r} does not implement "
        "embed() and loss_from_embeddings(); set train.grad_cache_chunks=0 or use a method that "
        "supports gradient caching (simclr, supcon, retrieval).")
  return setup
