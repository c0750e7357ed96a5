"""The BERT tower against a NumPy forward written from the architecture's equations (Devlin et al.
2019; Hugging Face's BertModel: post-LN blocks, exact-erf GELU), with sentence-transformers' pooling
and normalisation, on a tiny random checkpoint the test writes in the Hugging Face layout."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

import tiny_bert
from jaxcl.models import pretrained

_erf = np.vectorize(math.erf)


def _ln(x, w, b, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def _dense(t, name, x):
  return x @ t[name + ".weight"].T + t[name + ".bias"]


def numpy_bert(t, config, ids, pad_id=0):
  """Last hidden states [B, T, H] in float64 from the equations (token type 0, positions 0..T-1)."""
  t = {k: v.astype(np.float64) for k, v in t.items()}
  eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
  b, n = ids.shape
  x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
       + t["embeddings.token_type_embeddings.weight"][0])
  x = _ln(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
  keep = ids != pad_id
  d = x.shape[-1] // heads
  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q, k, v = (_dense(t, p + f"attention.self.{w}", x).reshape(b, n, heads, d).transpose(0, 2, 1, 3)
               for w in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + np.where(keep, 0.0, -1e30)[:, None, None, :]
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    y = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, -1)
    x = _ln(x + _dense(t, p + "attention.output.dense", y), t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"], eps)
    h = _dense(t, p + "intermediate.dense", x)
    h = 0.5 * h * (1 + _erf(h / np.sqrt(2)))
    x = _ln(x + _dense(t, p + "output.dense", h), t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"], eps)
  return x


def numpy_sentence(hidden, ids, pool, normalize, pad_id=0):
  """sentence-transformers' Pooling (mean / cls / max over attention-mask tokens) and Normalize."""
  m = (ids != pad_id)[..., None].astype(np.float64)
  if pool == "cls":
    out = hidden[:, 0]
  elif pool == "max":
    out = np.where(m > 0, hidden, -1e9).max(1)
  else:
    out = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
  if normalize:
    out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
  return out


def _ids(tok, texts, length):
  tok = tiny_bert.tokenizer()
  tok.enable_padding(length=length, pad_id=0)
  tok.enable_truncation(length)
  return np.asarray([e.ids for e in tok.encode_batch(texts)], np.int32)


TEXTS = ["Return a copy of the file", "remove a directory tree", "def join(a, *p): return path",
         "json"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return tiny_bert.write_folder(tmp_path_factory.mktemp("bert"))


def _tower(path, **kw):
  folder = pretrained.read_folder(path)
  tower = pretrained.build_tower(folder, rngs=nnx.Rngs(0), **kw)
  pretrained.load_weights(tower, pretrained.read_tensors(folder))
  return tower


@pytest.mark.parametrize("pool", ["mean", "cls", "max"])
def test_forward_and_pooling_match_numpy_with_padding(folder, pool):
  path, config, weights = folder
  ids = _ids(None, TEXTS, 12)
  assert (ids == 0).any() and (ids != 0).all(axis=0).sum() < 12  # padding in the batch
  tower = _tower(path, pool=pool)
  hidden = numpy_bert(weights, config, ids)
  np.testing.assert_allclose(np.asarray(jax.jit(lambda i: tower.hidden_states(i))(ids))[ids != 0],
                             hidden[ids != 0], atol=1e-5)
  got = np.asarray(jax.jit(lambda i: tower(i))(ids))
  np.testing.assert_allclose(got, numpy_sentence(hidden, ids, pool, normalize=True), atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)  # 2_Normalize


def test_folder_pooling_and_normalize_are_read(tmp_path):
  path, config, weights = tiny_bert.write_folder(tmp_path / "cls", pool="cls", normalize=False,
                                                  subfolder="0_Transformer", prefix="bert.")
  folder = pretrained.read_folder(path)
  assert (folder.pool, folder.normalize, folder.max_seq_length) == ("cls", False, 32)
  assert folder.transformer_dir.endswith("0_Transformer")
  ids = _ids(None, TEXTS, 10)
  got = np.asarray(_tower(path)(ids))  # bert.-prefixed names, transformer in a sub-folder
  want = numpy_sentence(numpy_bert(weights, config, ids), ids, "cls", normalize=False)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # A plain Hugging Face folder pools by the mean, as sentence-transformers does, and normalises not.
  path, _, _ = tiny_bert.write_folder(tmp_path / "hf", sentence_transformers=False)
  assert (pretrained.read_folder(path).pool, pretrained.read_folder(path).normalize) == ("mean", False)


def test_tanh_gelu_and_bfloat16_compute(tmp_path):
  path, config, weights = tiny_bert.write_folder(tmp_path / "m")
  ids = _ids(None, TEXTS, 10)
  want = numpy_sentence(numpy_bert(weights, config, ids), ids, "mean", True)
  folder = pretrained.read_folder(path)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  tower = pretrained.build_tower(folder, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  pretrained.load_weights(tower, pretrained.read_tensors(folder))
  got = np.asarray(tower(ids))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=5e-2)  # bfloat16 rounding, same function


def test_dropout_is_per_text_and_off_without_keys(folder):
  path, _, _ = folder
  ids = _ids(None, TEXTS, 12)
  tower = _tower(path)  # config.json: hidden and attention dropout 0.1
  keys = jax.random.split(jax.random.key(0), len(TEXTS))
  run = jax.jit(lambda i, k: tower(i, keys=k))
  dropped = np.asarray(run(ids, keys))
  assert np.abs(dropped - np.asarray(tower(ids))).max() > 1e-3  # keys turn dropout on
  np.testing.assert_array_equal(dropped, np.asarray(run(ids, keys)))  # and fix its masks
  # Each text's masks come from its own key: a text alone, or in another batch, drops the same.
  np.testing.assert_allclose(np.asarray(run(ids[2:], keys[2:])), dropped[2:], atol=1e-6)
  still = pretrained.build_tower(pretrained.read_folder(path), rngs=nnx.Rngs(0), dropout=False)
  pretrained.load_weights(still, pretrained.read_tensors(pretrained.read_folder(path)))
  np.testing.assert_array_equal(np.asarray(still(ids, keys=keys)), np.asarray(still(ids)))
