"""Building blocks of the experiment configs in ``configs/``.

An experiment config is one locked ``ml_collections.ConfigDict``::

  seed, batch_size (global), steps,
  data, augment, model, method   (each part's own ``default_config``),
  optim                          (``jaxcl.train.optim.default_config``),
  train                          (loop mechanics: devices, logging, checkpoints, guards),
  eval                           (kNN monitor, final kNN + linear probe, baselines, pictures).

``configs/<experiment>.py`` files call ``base(...)``, override fields and return ``lock(config)``;
variants load another config file with ``load_config_file`` and override it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import ml_collections

from jaxcl.train import optim


def train_defaults() -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.num_devices = 0             # 0: every device of every process
  t.log_every = 50              # steps between metric lines (and divergence checks)
  t.checkpoint_every = 500      # steps between async checkpoints (0: only the final one)
  t.keep_checkpoints = 3        # newest checkpoints retained
  t.keep_every = 0              # also retain every n-th step (0: no)
  t.async_checkpoint = True
  t.on_nonfinite = "stop"       # "stop" | "skip": what a NaN/inf loss or gradient does
  t.grad_cache_chunks = 0       # > 1: gradient caching, chunks per device batch (Gao et al. 2021)
  t.fsdp = False                # split parameters, optimizer state and EMA targets over the devices
  t.fsdp_min_size = 16384       # with fsdp: arrays smaller than this many elements stay replicated
  t.compute_dtype = "float32"   # "bfloat16": encoder compute in bf16, parameters stay f32
  t.export_encoder = True       # write workdir/encoder (encoder weights alone) at the end
  t.init_checkpoint = ""        # start from another run's checkpoints dir when the workdir has none
  t.progress = True             # progress bar
  t.stop_at = 0                 # > 0: checkpoint and stop after this step (a preemption, for tests)
  return t


def eval_defaults() -> ml_collections.ConfigDict:
  e = ml_collections.ConfigDict()
  e.knn_every = 0               # steps between kNN monitor evaluations (0: only at the end)
  e.knn_k = 200                 # Wu et al. 2018
  e.knn_extra_k = 0             # > 0: the final evaluation also reports kNN at this k (knn_k<k>)
  e.knn_temperature = 0.1
  e.final = True                # kNN + linear probe after training
  e.linear_probe = True
  e.baselines = True            # also evaluate the random-init encoder and raw pixels
  e.batch_size = 256
  e.max_train_examples = 0      # 0: all (subsample the memory bank of huge datasets)
  e.max_test_examples = 0
  e.embedding_map = True        # t-SNE map of test embeddings (workdir/tsne.png)
  e.online_probe = True         # linear head on detached features, trained during pretraining
                                # (where the data has labels); its batch accuracy is logged, its
                                # test accuracy is a column of the final table
  e.online_probe_lr = 1e-2      # the online probe's Adam learning rate
  e.online_probe_views = "clean"  # "clean": an eval-mode forward pass of the un-augmented batch
                                # (what the test set looks like; ~4% of the step); "augmented":
                                # the step's own views where the method hands them over (free)
  e.retrieval_distance = "cosine"  # with data.train_classes: "cosine" | "euclidean" for Recall@K
  return e


def base(*, method: str, dataset: str, encoder: str, recipe: str, crop_size: int,
         batch_size: int, steps: int, seed: int = 0) -> ml_collections.ConfigDict:
  """An unlocked experiment config with every part's defaults.

  Args:
    method: ``jaxcl.methods`` name.
    dataset: ``jaxcl.data`` name.
    encoder: ``jaxcl.models`` encoder name.
    recipe: ``jaxcl.augment`` recipe name.
    crop_size: side of the augmented views.
    batch_size: global batch (all devices).
    steps: optimizer steps.
    seed: the one seed every random number derives from.

  Returns:
    An unlocked ConfigDict; override fields, then ``lock`` it.
  """
  from jaxcl import augment, data, methods, models  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.batch_size = batch_size
  c.steps = steps
  c.data = data.default_config(dataset)
  c.augment = augment.default_config(recipe, size=crop_size)
  c.model = models.default_config(encoder)
  c.method = methods.default_config(method)
  c.optim = optim.default_config()
  c.train = train_defaults()
  c.eval = eval_defaults()
  return c


def smoke(c: ml_collections.ConfigDict, *, batch_size: int = 16, steps: int = 3) -> None:
  """Shrinks a config for tests: a few steps, tiny batch, no pictures, cheap evaluation."""
  c.batch_size = batch_size
  c.steps = steps
  c.optim.warmup_steps = 0
  c.optim.warmup_fraction = 0.0
  c.train.log_every = 1
  c.train.checkpoint_every = 0
  c.train.progress = False
  c.train.export_encoder = False
  c.data.read_threads = 1
  c.data.prefetch_buffer_size = 16
  c.eval.final = False
  c.eval.knn_k = 5
  c.eval.embedding_map = False
  # The probe on the step's own views: no extra forward pass to compile in every test's step
  # (tests/test_online_probe.py covers the default "clean" input).
  c.eval.online_probe_views = "augmented"
  c.eval.batch_size = 64


def swap_method(c: ml_collections.ConfigDict, name: str, **fields: Any) -> None:
  """Replaces ``c.method`` by ``name``'s defaults with ``fields`` overridden (for variant configs)."""
  from jaxcl import methods  # pylint: disable=g-import-not-at-top
  m = methods.default_config(name)
  for key, value in fields.items():
    if key not in m:
      raise ValueError(f"method {name!r} has no field {key!r}; it has {sorted(m)}")
    m[key] = value
  c.method = m


_HEAD_FIELDS = {"proj_hidden_dim": 32, "pred_hidden_dim": 32, "proj_out_dim": 16, "embed_dim": 16,
                "text_width": 16, "text_depth": 1, "text_heads": 2, "head_hidden_dim": 32,
                "head_bottleneck_dim": 16, "out_dim": 64}


def shrink_heads(m: ml_collections.ConfigDict) -> None:
  """Tiny projector/predictor/text tower for smoke tests."""
  for key, value in _HEAD_FIELDS.items():
    if key in m:
      m[key] = value


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """``get_config`` argument ``"smoke"`` or ``"key=value,flag"`` into a ConfigDict over ``defaults``."""
  out = ml_collections.ConfigDict(dict(defaults))
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    if key not in out:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(out)}")
    if not value:
      out[key] = True
    else:
      kind = type(defaults[key])
      out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
  return out


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config so a misspelt override (``--config.optim.lrr``) is an error."""
  c.lock()
  return c


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """Runs ``get_config(arg)`` of a config file (relative paths from the caller's ``configs/`` dir)."""
  spec = importlib.util.spec_from_file_location(
      f"jaxcl_config_{os.path.splitext(os.path.basename(path))[0]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def sibling(file: str, name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """A variant's base: ``get_config(arg)`` of ``configs/<name>.py`` next to ``file``."""
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(file)), f"{name}.py"), arg)


def on_animal_shapes(file: str, base_name: str, arg: str | None) -> ml_collections.ConfigDict:
  """A digits config file (``configs/<base_name>.py``) on Animal-Shape, as ``benchmarks/methods.py``
  runs its Animal-Shape cells: ``data.name="animal_shapes"`` (28 px, resized to the config's
  ``data.image_size`` on the host) and horizontal flips (a mirrored animal is still that animal).
  ``arg="smoke"`` is the base's smoke config, on digits. Returns the locked config."""
  smoke_test = parse_arg(arg, smoke=False).smoke
  c = sibling(file, base_name, "smoke" if smoke_test else None)
  c.unlock()
  if not smoke_test:
    c.data.name = "animal_shapes"
    c.augment.flip_prob = 0.5
  return lock(c)


def variant(file: str, base_name: str, arg: str | None, method: str,
            **method_fields: Any) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """A base config file run with another method: same data, encoder, views, optimiser, evaluation.

  Args:
    file: the variant's ``__file__`` (the base is looked up next to it).
    base_name: the base config's file name without ``.py``.
    arg: the variant's ``get_config`` argument (``"smoke"`` shrinks it, as the base does).
    method: the method name.
    **method_fields: overrides of the method's defaults.

  Returns:
    ``(config, parsed_arg)``: the unlocked config (override more, then ``lock``) and the argument.
  """
  a = parse_arg(arg, smoke=False)
  c = sibling(file, base_name, "smoke" if a.smoke else None)
  c.unlock()
  swap_method(c, method, **method_fields)
  if a.smoke:
    shrink_heads(c.method)
  return c, a


def data_config(name: str) -> ml_collections.ConfigDict:
  """``jaxcl.data.default_config(name)`` (for configs whose smoke variant swaps the dataset)."""
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  return data.default_config(name)


def augment_config(recipe: str, *, size: int) -> ml_collections.ConfigDict:
  """``jaxcl.augment.default_config(recipe, size=size)``."""
  from jaxcl import augment  # pylint: disable=g-import-not-at-top
  return augment.default_config(recipe, size=size)
