"""A tiny random BERT written in the Hugging Face / sentence-transformers layout by the tests themselves
(no download, no torch): config.json, model.safetensors (``safetensors.numpy``), a WordPiece
tokenizer.json built with ``tokenizers``, and optionally modules.json + 1_Pooling + 2_Normalize."""

import json
import os

import numpy as np
import tokenizers
from safetensors.numpy import save_file
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Words of the standard library's docstrings and code (what the retrieval tests' pairs hold).
WORDS = ("def return the a of to file path is if in for not self and or none string list name "
         "directory copy json object text with value as import os line data import true false "
         "get set open read write remove tree join split").split()
CONFIG = dict(vocab_size=0, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=40, type_vocab_size=2,
              layer_norm_eps=1e-12, hidden_act="gelu", model_type="bert",
              architectures=["BertModel"], position_embedding_type="absolute",
              hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
              pad_token_id=0)


def vocabulary():
  chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789_.,:;()[]{}=+-*/'\"#<>!%&|@"))
  words = [w for w in dict.fromkeys(WORDS) if w not in chars]  # "a" is a character already
  vocab = SPECIALS + chars + ["##" + c for c in chars] + words
  return {t: i for i, t in enumerate(vocab)}


def tokenizer():
  vocab = vocabulary()
  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
      special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
  tok.decoder = decoders.WordPiece()
  return tok


def tensors(config, rng, *, prefix="", pooler=True):
  h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
  normal = lambda *s: rng.normal(0, 0.2, s).astype(np.float32)  # noqa: E731
  ln = lambda: (1 + normal(h), normal(h))  # noqa: E731
  t = {"embeddings.word_embeddings.weight": normal(v, h),
       "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
       "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h)}
  t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"] = ln()
  for layer in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{layer}."
    for name, (o, n) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                         "attention.self.value": (h, h), "attention.output.dense": (h, h),
                         "intermediate.dense": (i, h), "output.dense": (h, i)}.items():
      t[p + name + ".weight"], t[p + name + ".bias"] = normal(o, n), normal(o)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      t[p + name + ".weight"], t[p + name + ".bias"] = ln()
  if pooler:
    t["pooler.dense.weight"], t["pooler.dense.bias"] = normal(h, h), normal(h)
  return {prefix + k: val for k, val in t.items()}


def write_folder(path, *, seed=0, pool="mean", normalize=True, sentence_transformers=True,
                 subfolder="", prefix="", pooler=True, **config_overrides):
  """Writes the tiny model to ``path`` and returns (path, config dict, tensors by BertModel name)."""
  rng = np.random.default_rng(seed)
  tok = tokenizer()
  config = dict(CONFIG, vocab_size=tok.get_vocab_size(), **config_overrides)
  tdir = os.path.join(path, subfolder)
  os.makedirs(tdir, exist_ok=True)
  with open(os.path.join(tdir, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  weights = tensors(config, rng, pooler=pooler)
  save_file({prefix + k: v for k, v in weights.items()}, os.path.join(tdir, "model.safetensors"),
            metadata={"format": "pt"})
  tok.save(os.path.join(tdir, "tokenizer.json"))
  if sentence_transformers:
    modules = [{"idx": 0, "name": "0", "path": subfolder,
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
      modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                      "type": "sentence_transformers.models.Normalize"})
      os.makedirs(os.path.join(path, "2_Normalize"), exist_ok=True)
    with open(os.path.join(path, "modules.json"), "w") as f:
      json.dump(modules, f)
    os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
    with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
      json.dump({"word_embedding_dimension": config["hidden_size"],
                 "pooling_mode_cls_token": pool == "cls",
                 "pooling_mode_mean_tokens": pool == "mean",
                 "pooling_mode_max_tokens": pool == "max",
                 "pooling_mode_mean_sqrt_len_tokens": False}, f)
    with open(os.path.join(path, "sentence_bert_config.json"), "w") as f:
      json.dump({"max_seq_length": 32, "do_lower_case": False}, f)
  return str(path), config, weights
