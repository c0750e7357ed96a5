"""A fine-tuned BERT tower written back as a sentence-transformers folder (what ``jaxcl export`` does).

  export.write_sentence_transformers(tower, source, out, max_seq_length=128)

``out`` gets what ``SentenceTransformer(out)`` and ``transformers.AutoModel.from_pretrained(out)``
load unchanged, and what jaxcl reads back with ``model.pretrained=out``:

  model.safetensors             the tower's tensors with BertModel's names (float32, contiguous;
                                written by ``safetensors.numpy``, metadata format "pt")
  config.json                   the source's, architectures set to BertModel
  tokenizer.json                the tokenizer the run used; tokenizer_config.json,
                                special_tokens_map.json, vocab.txt copied from the source folder
  modules.json, 1_Pooling/config.json, 2_Normalize/ (when the tower normalises),
  sentence_bert_config.json (max_seq_length), config_sentence_transformers.json

The folder is written in a temporary sibling and renamed into place, so a failure leaves nothing
half-written at ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from jaxcl import extras
from jaxcl.models import BertEncoder, pretrained

COPIED = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "added_tokens.json")
_TRANSFORMER = "sentence_transformers.models.Transformer"


def _dump(path: str, obj) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")


def _pooling_config(tower: BertEncoder) -> dict:
  return {"word_embedding_dimension": tower.out_dim,
          "pooling_mode_cls_token": tower.pool == "cls",
          "pooling_mode_mean_tokens": tower.pool == "mean",
          "pooling_mode_max_tokens": tower.pool == "max",
          "pooling_mode_mean_sqrt_len_tokens": False,
          "pooling_mode_weightedmean_tokens": False,
          "pooling_mode_lasttoken": False,
          "include_prompt": True}


def write_sentence_transformers(tower: BertEncoder, source: pretrained.PretrainedFolder, out: str, *,
                                max_seq_length: int, tokenizer_json: str | None = None,
                                overwrite: bool = False) -> str:
  """Writes ``tower`` as a sentence-transformers folder ``out`` (module docstring).

  Args:
    tower: the fine-tuned ``BertEncoder`` (its weights are read to the host).
    source: the folder the run started from (config.json, tokenizer files).
    out: the folder to create.
    max_seq_length: tokens per text (``sentence_bert_config.json``).
    tokenizer_json: the tokenizer.json the run used (default: the source's).
    overwrite: replace an existing ``out``.

  Returns:
    ``out`` (absolute).
  """
  save_file = extras.require("safetensors.numpy", "text", "jaxcl export").save_file
  out = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out) and not overwrite:
    raise ValueError(f"--out={out!r} exists; choose a new folder (or remove it).")
  if max_seq_length > source.config["max_position_embeddings"]:
    raise ValueError(f"max_seq_length={max_seq_length} > the model's max_position_embeddings="
                     f"{source.config['max_position_embeddings']}.")
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}-")
  try:
    tensors = pretrained.tower_tensors(tower)
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    config = dict(source.raw_config, architectures=["BertModel"], torch_dtype="float32")
    config.pop("_name_or_path", None)
    _dump(os.path.join(tmp, "config.json"), config)
    shutil.copyfile(tokenizer_json or source.tokenizer_file, os.path.join(tmp, "tokenizer.json"))
    for name in COPIED:
      found = os.path.join(source.transformer_dir, name)
      if os.path.isfile(found):
        shutil.copyfile(found, os.path.join(tmp, name))
    if not os.path.isfile(os.path.join(tmp, "tokenizer_config.json")):
      # Without one, AutoTokenizer picks BertTokenizerFast from config.json's model_type; these are
      # BERT's special tokens, which the tokenizer.json holds.
      _dump(os.path.join(tmp, "tokenizer_config.json"),
            {"tokenizer_class": "BertTokenizer", "model_max_length": max_seq_length,
             "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
             "mask_token": "[MASK]"})
    modules = [{"idx": 0, "name": "0", "path": "", "type": _TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    os.makedirs(os.path.join(tmp, "1_Pooling"))
    _dump(os.path.join(tmp, "1_Pooling", "config.json"), _pooling_config(tower))
    if tower.normalize:
      modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                      "type": "sentence_transformers.models.Normalize"})
      os.makedirs(os.path.join(tmp, "2_Normalize"))
    _dump(os.path.join(tmp, "modules.json"), modules)
    _dump(os.path.join(tmp, "sentence_bert_config.json"),
          {"max_seq_length": int(max_seq_length), "do_lower_case": False})
    st_config = os.path.join(source.path, "config_sentence_transformers.json")
    extra = {}
    if os.path.isfile(st_config):
      with open(st_config, encoding="utf-8") as f:
        extra = json.load(f)
    extra.setdefault("prompts", {})
    extra.setdefault("default_prompt_name", None)
    extra.setdefault("similarity_fn_name", "cosine")
    _dump(os.path.join(tmp, "config_sentence_transformers.json"), extra)
    if overwrite and os.path.exists(out):
      shutil.rmtree(out)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out
