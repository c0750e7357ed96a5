"""Checks an experiment config before anything is built or compiled.

Every error a user can cause in a config is reported before anything is built, as a ``ValueError``
that names the field and says how to fix it, instead of surfacing minutes later as a shape error
inside XLA. This module holds the checks that span sections (batch vs devices, crop vs image size,
multi-crop vs encoder, data vs what the method declares) and the run's own sections (optim, train,
eval); a method checks its own section (``Method.check_config``) and the models package its encoders'
rules (``jaxcl.models.check_config``).
"""

from __future__ import annotations

import ml_collections

from jaxcl import extras
from jaxcl.models import bert, pretrained
from jaxcl.train import optim

from jaxcl.train.loop import ON_NONFINITE
from jaxcl.train.online_probe import VIEWS as PROBE_VIEWS
COMPUTE_DTYPES = ("float32", "bfloat16")


def _fail(field: str, value, fix: str):
  raise ValueError(f"config.{field}={value!r}: {fix}")


def _get(config: ml_collections.ConfigDict, dotted: str, default=None):
  node = config
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return default
    node = node[part]
  return node


def _check_text_model_and_data(config: ml_collections.ConfigDict, check_data: bool) -> None:
  """A text run's data: tokens per text, a pretrained tower's folder against it, and (``check_data``)
  a prepared text dataset with queries."""
  d = config.data
  extras.check("text", "text retrieval")  # first: nothing else matters without the tokenizer
  if not isinstance(d.max_length, int) or d.max_length < 2:
    _fail("data.max_length", d.max_length, "tokens per text must be >= 2 ([CLS] and [SEP]).")
  if _get(config, "model.name") == "bert":  # the folder against the data and the method
    _check_pretrained(config)
  if not check_data:
    return
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  try:
    text = data.text.is_text_dataset(d)
    info = data.text.info(d) if text else None
  except (FileNotFoundError, ValueError, KeyError) as err:
    raise ValueError(f"config.data.name={d.name!r}: {err}") from err
  if not text:
    _fail("data.name", d.name, f"method {config.method.name!r} trains on a text dataset: "
          "'stdlib_code', or your pairs prepared with `jaxcl prepare-data --from_pairs FILE --name "
          "NAME`.")
  if not getattr(info, f"num_{d.eval_split}", 0):
    _fail("data.eval_split", d.eval_split, f"{d.name!r} has no queries in that split ({info}); "
          "use 'test' or 'validation'.")
  if info.corpus_size < 2:
    _fail("data.name", d.name, "the corpus has fewer than 2 documents; nothing can be ranked.")


def _check_pretrained(config: ml_collections.ConfigDict) -> None:
  """A BERT tower's folder (its JSON files, not its tensors) against the config."""
  mc, d = config.model, config.data
  if not mc.get("pretrained"):
    _fail("model.pretrained", mc.get("pretrained"), "model.name='bert' starts from a pretrained "
          "folder: set it to a Hugging Face or sentence-transformers model folder (config.json, "
          "model.safetensors, tokenizer.json); jaxcl never downloads.")
  if mc.get("pool") not in ("",) + bert.POOLS:  # "": the pretrained folder's own pooling
    _fail("model.pool", mc.get("pool"), "a BERT tower pools with 'mean', 'cls' or 'max' ('' for "
          "the folder's own pooling).")
  if d.get("tokenizer"):
    _fail("data.tokenizer", d.tokenizer, "a pretrained tower reads its folder's tokenizer.json (its "
          "ids are what the weights mean); leave data.tokenizer unset.")
  folder = pretrained.read_folder(mc.pretrained, field="config.model.pretrained")
  positions = folder.config["max_position_embeddings"]
  for field in ("max_length", "query_max_length"):
    if (d.get(field) or 0) > positions:
      _fail(f"data.{field}", d.get(field), f"{folder.path} has {positions} positions "
            "(max_position_embeddings); use at most that many tokens.")
  if config.method.get("projection_dim", 0) == 0:
    dims = tuple(config.method.get("matryoshka_dims", ()))
    if dims and max(dims) > folder.config["hidden_size"]:
      _fail("method.matryoshka_dims", dims, f"the tower's embeddings have "
            f"{folder.config['hidden_size']} dimensions; every prefix must be <= that.")


def _kind_names(kind: str) -> tuple[str, ...]:
  from jaxcl import methods  # pylint: disable=g-import-not-at-top
  return tuple(n for n in methods.names() if methods.method_class(n).data_kind == kind)


def validate(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int = 1,
             check_data: bool = True) -> None:
  """Raises ValueError naming the field and the fix for the first bad setting found.

  Args:
    config: the experiment config (see ``configs/``).
    num_devices: devices the run will use (the mesh size).
    process_count: JAX processes taking part.
    check_data: also ask ``jaxcl.data`` whether the dataset exists and is prepared (fast).
  """
  for section in ("data", "augment", "model", "method", "optim", "train", "eval"):
    if section not in config:
      _fail(section, None, f"the experiment config has no '{section}' section; build configs from "
            "a file in configs/ (they all have seed, batch_size, steps, data, augment, model, method, "
            "optim, train, eval).")

  from jaxcl import methods, models  # pylint: disable=g-import-not-at-top
  if config.method.name not in methods.names():
    _fail("method.name", config.method.name, f"unknown method; use one of {methods.names()}.")
  # The method checks its own section (and what it needs of its encoder and views).
  method = methods.method_class(config.method.name)

  batch = config.batch_size
  if not isinstance(batch, int) or batch <= 0:
    _fail("batch_size", batch, "the global batch size must be a positive integer.")
  if batch % num_devices:
    _fail("batch_size", batch, f"the global batch must be divisible by the device count "
          f"({num_devices}); use a multiple of {num_devices}, e.g. "
          f"{max(num_devices, batch // num_devices * num_devices)}, or set train.num_devices.")
  if batch % process_count:
    _fail("batch_size", batch, f"the global batch must be divisible by the process count "
          f"({process_count}) so every process loads the same number of rows.")
  if not isinstance(config.steps, int) or config.steps <= 0:
    _fail("steps", config.steps, "the number of training steps must be a positive integer.")

  o = config.optim
  if o.name not in optim.OPTIMIZERS:
    _fail("optim.name", o.name, f"unknown optimizer; use one of {optim.OPTIMIZERS}.")
  if not o.lr >= 0:
    _fail("optim.lr", o.lr, "the learning rate must be >= 0 (it is the base rate before batch "
          "scaling, e.g. 0.3 for LARS at batch 256).")
  if o.lr_scaling not in optim.LR_SCALINGS:
    _fail("optim.lr_scaling", o.lr_scaling, f"use one of {optim.LR_SCALINGS}.")
  if o.get("weight_decay_schedule", "constant") not in ("constant", "cosine"):
    _fail("optim.weight_decay_schedule", o.weight_decay_schedule, "use 'constant' or 'cosine' (from "
          "optim.weight_decay to optim.weight_decay_end, as DINO's 0.04 -> 0.4).")
  if o.get("weight_decay_end", 0.0) < 0:
    _fail("optim.weight_decay_end", o.weight_decay_end, "weight decay must be >= 0.")
  if o.base_batch_size <= 0:
    _fail("optim.base_batch_size", o.base_batch_size, "must be a positive integer (usually 256).")
  if o.weight_decay < 0:
    _fail("optim.weight_decay", o.weight_decay, "weight decay must be >= 0.")
  if o.warmup_steps < 0 or o.warmup_steps > config.steps:
    _fail("optim.warmup_steps", o.warmup_steps, f"must be in [0, steps={config.steps}].")
  if not 0 <= o.warmup_fraction < 1:
    _fail("optim.warmup_fraction", o.warmup_fraction, "must be in [0, 1).")
  if o.get("decay", "cosine") not in ("cosine", "linear"):
    _fail("optim.decay", o.decay, "the learning rate decays by 'cosine' or 'linear' after warmup.")
  if not 0 <= o.end_lr_factor <= 1:
    _fail("optim.end_lr_factor", o.end_lr_factor, "must be in [0, 1].")
  if o.grad_clip_norm < 0:
    _fail("optim.grad_clip_norm", o.grad_clip_norm, "must be >= 0 (0 disables clipping).")

  t = config.train
  if t.on_nonfinite not in ON_NONFINITE:
    _fail("train.on_nonfinite", t.on_nonfinite, f"use one of {ON_NONFINITE}.")
  if t.compute_dtype not in COMPUTE_DTYPES:
    _fail("train.compute_dtype", t.compute_dtype, f"use one of {COMPUTE_DTYPES}.")
  for field in ("log_every", "keep_checkpoints"):
    if t[field] <= 0:
      _fail(f"train.{field}", t[field], "must be a positive integer.")
  for field in ("checkpoint_every", "keep_every", "num_devices"):
    if t[field] < 0:
      _fail(f"train.{field}", t[field], "must be >= 0 (0 disables it / means all).")
  chunks = t.grad_cache_chunks
  if chunks < 0:
    _fail("train.grad_cache_chunks", chunks, "must be >= 0 (0 or 1 disables gradient caching).")
  if chunks > 1 and (batch // num_devices) % chunks:
    _fail("train.grad_cache_chunks", chunks, f"must divide the per-device batch "
          f"{batch // num_devices} (batch_size / devices).")
  if t.get("fsdp") and t.get("fsdp_min_size", 1) < 1:
    _fail("train.fsdp_min_size", t.fsdp_min_size, "must be >= 1 (the smallest array FSDP splits).")

  e = config.eval
  if e.knn_k <= 0:
    _fail("eval.knn_k", e.knn_k, "k must be a positive integer (200 in Wu et al. 2018).")
  if e.get("knn_extra_k", 0) < 0:
    _fail("eval.knn_extra_k", e.knn_extra_k, "must be >= 0 (0: only knn_k).")
  if e.knn_temperature <= 0:
    _fail("eval.knn_temperature", e.knn_temperature, "must be > 0 (0.1 is standard).")
  if e.online_probe and not e.online_probe_lr > 0:
    _fail("eval.online_probe_lr", e.online_probe_lr,
          "must be > 0 (1e-2 is the default), or set eval.online_probe=False.")
  if e.online_probe and e.online_probe_views not in PROBE_VIEWS:
    _fail("eval.online_probe_views", e.online_probe_views, f"choose one of {PROBE_VIEWS}.")
  if e.knn_every < 0:
    _fail("eval.knn_every", e.knn_every, "must be >= 0 (0: only at the end).")

  method.check_config(config.method, model=config.model, augment=config.augment)
  models.check_config(config.model)
  needs_labels = method.reads_labels(config.method)
  per_class = _get(config, "data.examples_per_class", 0)
  if per_class and (per_class < 2 or batch % per_class):
    _fail("data.examples_per_class", per_class, f"must be >= 2 (each anchor needs a positive) and divide "
          f"batch_size={batch}, or 0 to turn the class-balanced batches off.")

  cnn_pool = _get(config, "model.pool", "mean") if _get(config, "model.name", "") == "small_cnn" else None
  local = _get(config, "augment.num_local", 0)
  if local:
    if not method.multi_crop:
      multi = tuple(n for n in methods.names() if methods.method_class(n).multi_crop)
      _fail("augment.num_local", local, f"method {config.method.name!r} trains on two views only; "
            f"multi-crop works with {multi}. Set augment.num_local=0.")
    if _get(config, "augment.local_size", 0) >= _get(config, "augment.size", 0):
      _fail("augment.local_size", config.augment.local_size, f"local crops must be smaller than the "
            f"global ones (augment.size={config.augment.size}).")
    patch = _get(config, "model.patch_size", 0)
    if str(_get(config, "model.name", "")).startswith("vit") and config.augment.local_size % patch:
      _fail("augment.local_size", config.augment.local_size, f"a ViT cuts views into "
            f"model.patch_size={patch} px patches (its position embeddings are resized to the grid); "
            f"use a multiple of {patch}.")
    if _get(config, "train.grad_cache_chunks", 0) > 1:
      _fail("train.grad_cache_chunks", config.train.grad_cache_chunks,
            "gradient caching covers two views; set it to 0 with multi-crop (augment.num_local).")
    if cnn_pool == "flatten":
      _fail("model.pool", "flatten", "a flattened feature map is sized by the view, and multi-crop's "
            "local views are smaller; use model.pool='mean' with augment.num_local.")
  seen = _get(config, "data.train_classes", 0)
  if seen < 0:
    _fail("data.train_classes", seen, "must be >= 0 (0: train on every class).")

  if method.data_kind == "text":
    _check_text_model_and_data(config, check_data)
    return
  crop = _get(config, "augment.size")
  image_size = _get(config, "data.image_size")
  if check_data:
    from jaxcl import data  # pylint: disable=g-import-not-at-top
    if data.text.is_text_dataset(config.data):
      _fail("method.name", config.method.name, f"{config.data.name!r} is a text dataset; train it "
            f"with a text method {_kind_names('text')} (configs/retrieval_stdlib_code.py).")
    try:
      info = data.info(config.data)
    except (FileNotFoundError, ValueError, KeyError) as err:
      raise ValueError(f"config.data.name={config.data.name!r}: {err}") from err
    sequences = len(info.image_shape) == 2  # [T, C] signals
    if sequences != (method.data_kind == "sequence"):
      _fail("method.name", config.method.name, f"{config.data.name!r} holds "
            f"{'sequences' if sequences else 'images'} of shape {tuple(info.image_shape)}; "
            + (f"train them with a sequence method {_kind_names('sequence')}." if sequences else
               f"method {config.method.name!r} needs a sequence dataset (data.name='plaid')."))
    crop = None if sequences else crop  # the sequence methods crop their own windows
    image_size = image_size or min(info.image_shape[:2])
    if seen and not 2 <= seen <= info.num_classes - 2:
      _fail("data.train_classes", seen, f"{config.data.name!r} has {info.num_classes} classes; train "
            f"on 2 to {info.num_classes - 2} of them so that at least 2 stay unseen (about half, "
            f"{info.num_classes // 2}, is the metric-learning protocol).")
    held = _get(config, "data.validation_classes", 0)
    if held and (held < 2 or not seen or seen + held > info.num_classes):
      _fail("data.validation_classes", held, f"needs data.train_classes > 0 and train_classes + "
            f"validation_classes <= {info.num_classes}, with at least 2 validation classes.")
    classes = seen or info.num_classes
    if per_class and batch // per_class > classes:
      _fail("data.examples_per_class", per_class, f"batch_size / examples_per_class = "
            f"{batch // per_class} classes "
            f"per batch, but {config.data.name!r} has {classes}"
            f"{' trained on' if seen else ''}; raise it to at least {-(-batch // classes)}.")
    if needs_labels and info.num_classes < 2:
      _fail("method.loss", config.method.loss, f"this loss reads batch['label'], and "
            f"{config.data.name!r} has no labels; choose a loss without labels (e.g. nt_xent).")
  if crop and image_size and crop > image_size:
    _fail("augment.size", crop, f"the crop is larger than the images (data.image_size="
          f"{image_size}); lower augment.size to at most {image_size} or raise data.image_size.")
