"""Pretrained BERT-family weights from a Hugging Face or sentence-transformers folder.

  folder = pretrained.read_folder("~/.cache/jaxcl/models/all-MiniLM-L6-v2")   # JSON only, checked
  tower = pretrained.build_tower(folder, rngs=nnx.Rngs(0))                      # the right shape
  pretrained.load_weights(tower, pretrained.read_tensors(folder))               # the checkpoint's
  tensors = pretrained.tower_tensors(tower)                                     # HF names, float32

A Hugging Face folder holds ``config.json``, ``model.safetensors`` and ``tokenizer.json``. A
sentence-transformers folder adds ``modules.json`` (the Transformer module at the root or in a
sub-folder, then ``Pooling`` and optionally ``Normalize``) and ``1_Pooling/config.json`` (the pooling
mode). Tensors are read with the ``safetensors`` library into NumPy: a file of named arrays, nothing
executed; a folder with only ``pytorch_model.bin`` (a pickle) is refused. Names may carry BertForX's
``bert.`` prefix; old TensorFlow-converted ``LayerNorm.gamma/beta`` read as ``weight/bias``. Every
problem is one ValueError line naming the file, field or tensor. jaxcl never downloads: the user
points at a folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcl import extras
from jaxcl.models.bert import ACTIVATIONS, POOLS, BertEncoder

SUPPORTED_MODEL_TYPES = ("bert",)  # BERT, MiniLM, BGE, E5 (and other BertModel checkpoints)
CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size",
                 "layer_norm_eps", "hidden_act", "hidden_dropout_prob",
                 "attention_probs_dropout_prob")
_OPTIONAL = {"type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
             "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
_ST_POOL_FIELDS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                   "pooling_mode_max_tokens": "max"}
_ST_UNSUPPORTED = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                   "pooling_mode_lasttoken")
MAX_JSON_BYTES = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class PretrainedFolder:
  """What a model folder says, read from its JSON files (no tensors yet).

  Attributes:
    path: the folder (absolute).
    transformer_dir: where config.json / model.safetensors / tokenizer.json are (the folder, or the
      sub-folder modules.json names).
    config: the ``config.json`` fields ``BertEncoder`` takes (``CONFIG_FIELDS``).
    raw_config: the whole ``config.json``.
    pool: the pooling mode ("mean" without a sentence-transformers Pooling module, as
      sentence-transformers itself does for a plain Hugging Face folder).
    normalize: whether a ``Normalize`` module follows.
    max_seq_length: ``sentence_bert_config.json``'s max_seq_length, else None.
  """

  path: str
  transformer_dir: str
  config: dict[str, Any]
  raw_config: dict[str, Any]
  pool: str
  normalize: bool
  max_seq_length: int | None

  @property
  def weights_file(self) -> str:
    return os.path.join(self.transformer_dir, "model.safetensors")

  @property
  def tokenizer_file(self) -> str:
    return os.path.join(self.transformer_dir, "tokenizer.json")


def _read_json(path: str) -> Any:
  if os.path.getsize(path) > MAX_JSON_BYTES:
    raise ValueError(f"{path} is larger than any model config jaxcl reads ({MAX_JSON_BYTES:,} bytes).")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from None


def _modules(path: str) -> tuple[str, str | None, bool]:
  """(transformer sub-folder, pooling sub-folder or None, normalize) from ``modules.json``."""
  file = os.path.join(path, "modules.json")
  if not os.path.isfile(file):
    return "", None, False
  entries = _read_json(file)
  if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
    raise ValueError(f"{file}: expected a list of modules, as sentence-transformers writes it.")
  transformer, pooling, normalize = None, None, False
  for e in sorted(entries, key=lambda e: e.get("idx", 0)):
    kind = str(e.get("type", "")).rsplit(".", 1)[-1]
    if kind == "Transformer" and transformer is None:
      transformer = str(e.get("path", ""))
    elif kind == "Pooling" and pooling is None:
      pooling = str(e.get("path", ""))
    elif kind == "Normalize":
      normalize = True
    else:
      raise ValueError(f"{file}: module {e.get('type')!r} is not supported; jaxcl reads a "
                       "Transformer, a Pooling and an optional Normalize module.")
  if transformer is None:
    raise ValueError(f"{file} names no sentence_transformers.models.Transformer module.")
  return transformer, pooling, normalize


def _pooling(file: str) -> str:
  cfg = _read_json(file)
  for field in _ST_UNSUPPORTED:
    if cfg.get(field):
      raise ValueError(f"{file}: {field} is not supported; jaxcl pools with one of "
                       f"{tuple(_ST_POOL_FIELDS)}.")
  modes = [mode for field, mode in _ST_POOL_FIELDS.items() if cfg.get(field)]
  if len(modes) != 1:
    raise ValueError(f"{file}: exactly one of {tuple(_ST_POOL_FIELDS)} must be true, got "
                     f"{len(modes)}; jaxcl pools one way.")
  return modes[0]


def read_folder(path: str, *, field: str = "model.pretrained") -> PretrainedFolder:
  """Reads and checks a model folder's JSON files (fast; no tensors are read).

  Args:
    path: a Hugging Face or sentence-transformers folder (``~`` expanded).
    field: the config field that named it (for error messages).

  Returns:
    A ``PretrainedFolder``.

  Raises:
    ValueError: one line naming the file or field that is missing, malformed or unsupported.
  """
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.isdir(path):
    raise ValueError(f"{field}={path!r} is not a folder; point it at a Hugging Face or "
                     "sentence-transformers model folder (config.json, model.safetensors, "
                     "tokenizer.json). jaxcl never downloads.")
  sub, pooling_dir, normalize = _modules(path)
  tdir = os.path.join(path, sub)
  config_file = os.path.join(tdir, "config.json")
  if not os.path.isfile(config_file):
    raise ValueError(f"{field}={path!r}: no config.json in {tdir}; give a Hugging Face model folder.")
  raw = _read_json(config_file)
  model_type = raw.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"{config_file}: model_type={model_type!r} is not supported; jaxcl loads "
                     f"BERT-family encoders (model_type {SUPPORTED_MODEL_TYPES}: BERT, MiniLM, BGE, "
                     "E5).")
  for arch in raw.get("architectures") or ():
    if not str(arch).startswith("Bert"):
      raise ValueError(f"{config_file}: architectures={raw['architectures']!r} is not supported; "
                       "jaxcl loads BertModel-family checkpoints (BertModel, BertForMaskedLM, ...).")
  if raw.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{config_file}: position_embedding_type={raw['position_embedding_type']!r} is "
                     "not supported; jaxcl's BERT has absolute position embeddings.")
  if raw.get("is_decoder") or raw.get("add_cross_attention"):
    raise ValueError(f"{config_file}: a decoder (is_decoder / add_cross_attention) is not supported; "
                     "jaxcl loads BERT encoders.")
  config = {}
  for name in CONFIG_FIELDS:
    if name not in raw and name not in _OPTIONAL:
      raise ValueError(f"{config_file}: field {name!r} is missing; a BertConfig has it.")
    config[name] = raw.get(name, _OPTIONAL.get(name))
  if config["hidden_act"] not in ACTIVATIONS:
    raise ValueError(f"{config_file}: hidden_act={config['hidden_act']!r} is not supported; use one "
                     f"of {tuple(ACTIVATIONS)}.")
  if config["hidden_size"] % config["num_attention_heads"]:
    raise ValueError(f"{config_file}: hidden_size={config['hidden_size']} is not divisible by "
                     f"num_attention_heads={config['num_attention_heads']}.")
  pool = "mean"
  if pooling_dir is not None:
    pooling_file = os.path.join(path, pooling_dir, "config.json")
    if not os.path.isfile(pooling_file):
      raise ValueError(f"{os.path.join(path, 'modules.json')} names a Pooling module but "
                       f"{pooling_file} is missing.")
    pool = _pooling(pooling_file)
  max_seq = None
  st_file = os.path.join(path, "sentence_bert_config.json")
  if os.path.isfile(st_file):
    max_seq = _read_json(st_file).get("max_seq_length")
  folder = PretrainedFolder(path, tdir, config, raw, pool, normalize,
                            int(max_seq) if max_seq else None)
  if not os.path.isfile(folder.weights_file):
    if os.path.isfile(os.path.join(tdir, "pytorch_model.bin")):
      raise ValueError(f"{tdir} has pytorch_model.bin (a pickle, which jaxcl never loads) and no "
                       "model.safetensors; convert it once, e.g. with transformers: "
                       "AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True).")
    raise ValueError(f"{field}={path!r}: no model.safetensors in {tdir}.")
  if not os.path.isfile(folder.tokenizer_file):
    raise ValueError(f"{field}={path!r}: no tokenizer.json in {tdir}; save the tokenizer with "
                     "transformers' save_pretrained (a fast tokenizer writes tokenizer.json).")
  return folder


def _hf_name(name: str) -> str:
  """A checkpoint's tensor name as BertModel spells it (no ``bert.`` prefix, weight/bias)."""
  if name.startswith("bert."):
    name = name[len("bert."):]
  if name.endswith("LayerNorm.gamma"):
    name = name[:-len("gamma")] + "weight"
  elif name.endswith("LayerNorm.beta"):
    name = name[:-len("beta")] + "bias"
  return name


# Tensors a checkpoint may hold that the encoder has no use for: buffers, and BertForX's heads.
_IGNORED_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "lm_head.")
_IGNORED_NAMES = ("embeddings.position_ids",)


def read_tensors(folder: PretrainedFolder) -> dict[str, np.ndarray]:
  """The encoder's tensors of ``folder``'s ``model.safetensors``, by BertModel name, as NumPy arrays.

  Names and shapes are checked by ``load_weights``; BertForX heads and buffers are dropped here.
  """
  what = "reading a pretrained model folder"
  safetensors = extras.require("safetensors", "text", what)
  load_file = extras.require("safetensors.numpy", "text", what).load_file
  try:
    raw = load_file(folder.weights_file)
  except (safetensors.SafetensorError, OSError, ValueError) as e:
    reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f"{folder.weights_file} could not be read by safetensors ({reason}).") from None
  out = {}
  for name, array in raw.items():
    hf = _hf_name(name)
    if hf.startswith(_IGNORED_PREFIXES) or hf in _IGNORED_NAMES:
      continue
    if hf in out:
      raise ValueError(f"{folder.weights_file}: tensor {hf!r} is stored twice (with and without "
                       "the 'bert.' prefix).")
    out[hf] = array
  return out


def build_tower(folder: PretrainedFolder, *, rngs: nnx.Rngs, pool: str | None = None,
                pad_id: int = 0, pooler: bool | None = None, dropout: bool = True, dtype=None,
                param_dtype=jnp.float32) -> BertEncoder:
  """A ``BertEncoder`` of the folder's sizes and pooling (random weights until ``load_weights``).

  Args:
    folder: ``read_folder``'s result.
    rngs: initialisation keys.
    pool: override of the folder's pooling (None: the folder's).
    pad_id: the tokenizer's padding id.
    pooler: carry BERT's pooler layer (None: when the checkpoint has one; reads the file's header).
    dropout: drop out at the checkpoint's rates when the tower is called with keys (training); False:
      never.
    dtype, param_dtype: compute and parameter dtypes.
  """
  if pool is not None and pool not in POOLS:
    raise ValueError(f"model.pool={pool!r}: a BERT tower pools with one of {POOLS}.")
  if pooler is None:
    pooler = "pooler.dense.weight" in tensor_names(folder)
  sizes = dict(folder.config)
  if not dropout:
    sizes.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  return BertEncoder(**sizes, pool=pool or folder.pool, normalize=folder.normalize,
                     pad_id=pad_id, pooler=pooler, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def tensor_names(folder: PretrainedFolder) -> set[str]:
  """BertModel names of the tensors in ``folder``'s safetensors file (reads only its header)."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(folder.weights_file, framework="numpy") as f:
    return {_hf_name(k) for k in f.keys()}


def _variables(tower: BertEncoder) -> dict[str, tuple[nnx.Variable, bool]]:
  """Every weight of ``tower`` by its BertModel tensor name, with whether the checkpoint stores it
  transposed (torch's Linear keeps [out, in]; Flax's kernel is [in, out])."""
  v = {"embeddings.word_embeddings.weight": (tower.word_embeddings.embedding, False),
       "embeddings.position_embeddings.weight": (tower.position_embeddings.embedding, False),
       "embeddings.token_type_embeddings.weight": (tower.token_type_embeddings.embedding, False),
       "embeddings.LayerNorm.weight": (tower.embeddings_norm.scale, False),
       "embeddings.LayerNorm.bias": (tower.embeddings_norm.bias, False)}
  for i, layer in enumerate(tower.layers):
    p = f"encoder.layer.{i}."
    for name, lin in (("attention.self.query", layer.query), ("attention.self.key", layer.key),
                      ("attention.self.value", layer.value),
                      ("attention.output.dense", layer.attention_output),
                      ("intermediate.dense", layer.intermediate), ("output.dense", layer.output)):
      v[p + name + ".weight"] = (lin.kernel, True)
      v[p + name + ".bias"] = (lin.bias, False)
    for name, ln in (("attention.output.LayerNorm", layer.attention_norm),
                     ("output.LayerNorm", layer.output_norm)):
      v[p + name + ".weight"] = (ln.scale, False)
      v[p + name + ".bias"] = (ln.bias, False)
  if tower.pooler_weight is not None:
    v["pooler.dense.weight"] = (tower.pooler_weight, False)  # kept in torch's layout, never used
    v["pooler.dense.bias"] = (tower.pooler_bias, False)
  return v


def load_weights(tower: BertEncoder, tensors: dict[str, np.ndarray], *, source: str = "checkpoint"
                 ) -> None:
  """Sets every weight of ``tower`` from ``tensors`` (BertModel names; ``read_tensors``).

  Raises:
    ValueError: one line naming the first missing, unexpected or wrongly shaped tensor.
  """
  variables = _variables(tower)
  for name in tensors:
    if name not in variables and not name.startswith("pooler."):
      raise ValueError(f"{source}: tensor {name!r} is not part of a BertModel encoder of "
                       f"{len(tower.layers)} layers; is this a BERT-family checkpoint?")
  for name, (var, transposed) in variables.items():
    if name not in tensors:
      raise ValueError(f"{source}: tensor {name!r} is missing.")
    value = np.asarray(tensors[name])
    value = value.T if transposed else value
    if value.shape != tuple(var.get_value().shape):
      want = var.get_value().shape[::-1] if transposed else var.get_value().shape
      raise ValueError(f"{source}: tensor {name!r} has shape {tuple(np.shape(tensors[name]))}, "
                       f"config.json says {tuple(want)}.")
    # A host array: placed on the mesh by the caller (TrainSetup), also across processes.
    var.set_value(np.asarray(value, dtype=var.get_value().dtype))


def tower_tensors(tower: BertEncoder) -> dict[str, np.ndarray]:
  """The tower's weights as BertModel tensors: float32, C-contiguous, torch's layouts."""
  out = {}
  for name, (var, transposed) in _variables(tower).items():
    value = np.asarray(var.get_value(), np.float32)
    out[name] = np.ascontiguousarray(value.T if transposed else value)
  return out


def load_into(method: nnx.Module, folder: PretrainedFolder) -> int:
  """Loads ``folder``'s weights into every ``BertEncoder`` inside ``method`` (shared towers once).

  Returns:
    The number of towers loaded.
  """
  tensors = read_tensors(folder)
  towers = [m for _, m in nnx.iter_modules(method) if isinstance(m, BertEncoder)]
  for tower in towers:
    load_weights(tower, tensors, source=folder.weights_file)
  return len(towers)
