"""Pretrained weights in and out: a tiny random BERT the test writes in the Hugging Face /
sentence-transformers layout is loaded, fine-tuned (8 devices == 1), exported and loaded back
bit-identical; each bad folder fails in one line naming the file, field or tensor; the `jaxcl`
commands: mine with the pretrained towers, fine-tune, export, reload."""

import functools
import inspect
import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file
from tolerance import assert_close_to_scale

import tiny_bert
from jaxcl import data, experiment, main
from jaxcl.experiment import export as export_run
from jaxcl.models import pretrained
from jaxcl.serve import export
from jaxcl.train import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "finetune_minilm_stdlib_code.py")
LENGTH, NEGATIVES = 16, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return tiny_bert.write_folder(tmp_path_factory.mktemp("bert") / "tiny")


def _one_line_error(fn, match):
  with pytest.raises(ValueError, match=match) as err:
    fn()
  assert "\n" not in str(err.value)


def _load(path):
  f = pretrained.read_folder(path)
  tower = pretrained.build_tower(f, rngs=nnx.Rngs(1))
  pretrained.load_weights(tower, pretrained.read_tensors(f), source=f.weights_file)
  return tower


def test_bad_folders_fail_in_one_line_naming_the_thing(tmp_path, folder):
  path, config, weights = folder
  bad = tmp_path / "bin_only"
  shutil.copytree(path, bad)
  os.remove(bad / "model.safetensors")
  (bad / "pytorch_model.bin").write_bytes(b"not unpickled")
  _one_line_error(lambda: pretrained.read_folder(bad), "pytorch_model.bin.*safe_serialization=True")

  missing = tmp_path / "missing"
  shutil.copytree(path, missing)
  save_file({k: v for k, v in weights.items() if k != "encoder.layer.1.output.dense.bias"},
            str(missing / "model.safetensors"))
  _one_line_error(lambda: _load(missing), "tensor 'encoder.layer.1.output.dense.bias' is missing")

  shape = tmp_path / "shape"
  shutil.copytree(path, shape)
  wrong = dict(weights, **{"encoder.layer.0.attention.self.key.weight": np.zeros((16, 8), np.float32)})
  save_file(wrong, str(shape / "model.safetensors"))
  _one_line_error(lambda: _load(shape),
                  r"'encoder.layer.0.attention.self.key.weight' has shape \(16, 8\), config.json "
                  r"says \(16, 16\)")

  extra = tmp_path / "extra"
  shutil.copytree(path, extra)
  save_file(dict(weights, **{"encoder.layer.2.output.dense.bias": np.zeros(16, np.float32)}),
            str(extra / "model.safetensors"))
  _one_line_error(lambda: _load(extra), "tensor 'encoder.layer.2.output.dense.bias' is not part")

  for field, value, match in (("model_type", "roberta", "model_type='roberta' is not supported.*bert"),
                              ("architectures", ["GPT2Model"], "architectures=.*GPT2Model"),
                              ("hidden_act", "relu", "hidden_act='relu'"),
                              ("num_attention_heads", 3, "not divisible by num_attention_heads")):
    other = tmp_path / f"cfg_{field}"
    shutil.copytree(path, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg[field] = value
    (other / "config.json").write_text(json.dumps(cfg))
    _one_line_error(lambda: pretrained.read_folder(other), match)

  pooling = tmp_path / "pooling"
  shutil.copytree(path, pooling)
  (pooling / "1_Pooling" / "config.json").write_text(json.dumps(
      {"pooling_mode_mean_sqrt_len_tokens": True}))
  _one_line_error(lambda: pretrained.read_folder(pooling), "pooling_mode_mean_sqrt_len_tokens")
  _one_line_error(lambda: pretrained.read_folder(tmp_path / "nowhere"),
                  "model.pretrained=.*is not a folder")


def test_load_export_load_is_bit_identical(tmp_path, folder):
  path, _, weights = folder
  tower = _load(path)
  out = export.write_sentence_transformers(tower, pretrained.read_folder(path), str(tmp_path / "st"),
                                           max_seq_length=LENGTH)
  written = load_file(os.path.join(out, "model.safetensors"))
  assert set(written) == set(weights)  # BertModel names, the pooler kept
  for name, value in weights.items():
    assert written[name].dtype == np.float32 and written[name].flags.c_contiguous
    np.testing.assert_array_equal(written[name], value, err_msg=name)
  back = pretrained.read_folder(out)
  assert (back.pool, back.normalize, back.max_seq_length) == ("mean", True, LENGTH)
  again = pretrained.tower_tensors(_load(out))
  for name, value in weights.items():
    np.testing.assert_array_equal(again[name], value, err_msg=name)
  assert json.loads((tmp_path / "st" / "modules.json").read_text())[2]["path"] == "2_Normalize"
  with pytest.raises(ValueError, match="exists"):  # never over a folder unasked
    export.write_sentence_transformers(tower, pretrained.read_folder(path), out, max_seq_length=8)
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left behind


def _config(path, **overrides):
  c = experiment.load_config_file(CONFIG, "smoke")
  c.unlock()
  c.model.pretrained = path
  c.method.num_negatives = NEGATIVES
  c.data.max_length = LENGTH
  c.update_from_flattened_dict(overrides)  # dotted keys, e.g. "train.grad_cache_chunks"
  return experiment.lock(c)


def _batch(rng, vocab):
  def ids(*shape):
    x = rng.integers(5, vocab, size=(*shape, LENGTH)).astype(np.int32)
    x[..., 0] = 2  # [CLS]
    x[..., LENGTH // 2:] *= rng.random((*shape, 1)) < 0.5  # some texts padded after 8 tokens
    return x
  keys = np.arange(16, dtype=np.int32)
  keys[[3, 9]] = 1
  return {"query_ids": ids(16), "positive_ids": ids(16), "negative_ids": ids(16, NEGATIVES),
          "negative_valid": rng.random((16, NEGATIVES)) < 0.8, "positive_key": keys,
          "query_key": np.arange(16, dtype=np.int32)}


@functools.lru_cache(maxsize=None)
def _one_step(path, vocab, num_devices, chunks=0, matryoshka=(), block_size=0, dropout=True,
              fsdp=False):
  c = _config(path, **{"train.grad_cache_chunks": chunks, "optim.name": "sgd", "optim.lr": 0.5,
                       "method.matryoshka_dims": matryoshka, "method.loss_block_size": block_size,
                       "model.dropout": dropout, "train.fsdp": fsdp, "train.fsdp_min_size": 64})
  setup = experiment.run.build_setup(c, mesh_lib.make_mesh(num_devices), vocab_size=vocab, pad_id=0)
  start = setup.init_state()
  before = jax.device_get(start["params"])  # the step donates the state
  batch = mesh_lib.shard_batch(_batch(np.random.default_rng(0), vocab), setup.mesh)
  state, metrics = setup.step_fn()(start, batch)
  return before, jax.device_get(state["params"]), jax.device_get(metrics)


@pytest.mark.slow
def test_fine_tuning_step_on_8_devices_equals_1_and_starts_from_the_checkpoint(folder):
  path, config, weights = folder
  start, params8, m8 = _one_step(path, config["vocab_size"], 8, matryoshka=(16, 8))
  _, params1, m1 = _one_step(path, config["vocab_size"], 1, matryoshka=(16, 8))
  tower_key = next(k for k in ("query_tower", "doc_tower") if k in start)  # shared: one of them
  tower = start[tower_key]
  np.testing.assert_array_equal(tower["word_embeddings"]["embedding"],
                                weights["embeddings.word_embeddings.weight"])
  np.testing.assert_array_equal(tower["layers"][1]["intermediate"]["kernel"],
                                weights["encoder.layer.1.intermediate.dense.weight"].T)
  assert np.isfinite(m8["loss"]) and m8["loss"] > 0
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: assert_close_to_scale(a, b, rtol=1e-4), params8, params1)
  moved = params8[tower_key]["layers"][0]["query"]["kernel"] - tower["layers"][0]["query"]["kernel"]
  assert np.abs(moved).max() > 0


@pytest.mark.slow
def test_fsdp_splits_the_bert_tower_and_equals_the_replicated_step(folder):
  path, config, _ = folder
  _, split, m_split = _one_step(path, config["vocab_size"], 8, matryoshka=(16, 8), fsdp=True)
  _, whole, m_whole = _one_step(path, config["vocab_size"], 8, matryoshka=(16, 8))
  np.testing.assert_allclose(m_split["loss"], m_whole["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: assert_close_to_scale(a, b, rtol=1e-4), split, whole)


@pytest.mark.slow
def test_gradient_caching_with_the_bert_tower_equals_the_plain_step(folder):
  path, config, _ = folder
  _, cached, m_cached = _one_step(path, config["vocab_size"], 8, chunks=2)
  _, plain, m_plain = _one_step(path, config["vocab_size"], 8)
  np.testing.assert_allclose(m_cached["loss"], m_plain["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: assert_close_to_scale(a, b, rtol=1e-4), cached, plain)


@pytest.mark.slow
def test_ring_loss_with_the_bert_tower_on_8_devices_equals_1(folder):
  path, config, _ = folder
  # (dropout is covered above; off here for a smaller program to compile)
  _, ring8, m8 = _one_step(path, config["vocab_size"], 8, block_size=2, dropout=False)
  _, ring1, m1 = _one_step(path, config["vocab_size"], 1, block_size=2, dropout=False)
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: assert_close_to_scale(a, b, rtol=1e-4), ring8, ring1)


def test_config_errors_name_the_field(folder, tmp_path):
  path, _, _ = folder
  _one_line_error(lambda: experiment.validate(_config(""), num_devices=1, check_data=False),
                  "config.model.pretrained=''")
  _one_line_error(lambda: experiment.validate(_config(path, **{"data.max_length": 64}),
                                              num_devices=1, check_data=False),
                  "config.data.max_length=64.*40 positions")
  _one_line_error(lambda: experiment.validate(
      _config(path, **{"method.matryoshka_dims": (32, 8)}), num_devices=1, check_data=False),
      r"config.method.matryoshka_dims=\(32, 8\).*16 dimensions")
  _one_line_error(lambda: experiment.validate(_config(path, **{"data.tokenizer": "t.json"}),
                                              num_devices=1, check_data=False), "data.tokenizer")
  plain = experiment.load_config_file(os.path.join(ROOT, "configs", "retrieval_stdlib_code.py"),
                                      "smoke")
  _one_line_error(lambda: export_run.check_exportable(plain), "model.name='text_transformer'")


def _pairs_file(path):
  """Real pairs: the first docstring line of standard-library functions and their code."""
  rows = []
  for module in (json, shutil, os.path, inspect):
    for name, fn in sorted(vars(module).items()):
      doc = inspect.getdoc(fn) if inspect.isfunction(fn) else None
      if not doc or name.startswith("_"):
        continue
      try:
        code = inspect.getsource(fn).replace(fn.__doc__, "")
      except (OSError, TypeError):
        continue
      rows.append({"query": doc.splitlines()[0], "positive": code[:300]})
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return len(rows)


def _jaxcl(*args):
  main.run(["jaxcl", *map(str, args)])


@pytest.mark.slow
def test_mine_with_pretrained_towers_fine_tune_export_reload(tmp_path, folder, capsys):
  path, _, _ = folder
  pairs = tmp_path / "pairs.jsonl"
  assert _pairs_file(pairs) >= 40
  data_dir = tmp_path / "tfds"
  _jaxcl("prepare-data", "--from-pairs", pairs, "--name", "my_pairs", "--data_dir", data_dir)
  common = ["--config", CONFIG + ":smoke", f"--config.data.data_dir={data_dir}",
            f"--config.model.pretrained={path}", f"--config.data.max_length={LENGTH}"]
  # The first mining needs no jaxcl run: the pretrained towers rank the corpus.
  _jaxcl("mine", *common, "--config.data.name=my_pairs", "--name", "my_pairs_mined",
         "--num_negatives", NEGATIVES, "--margin", 0)
  mined = data.default_config("my_pairs_mined")
  mined.data_dir = str(data_dir)
  rows = [r for r in data.text.dataset.sources.data_source(mined, "train")]
  assert all(len(r["negatives"]) == NEGATIVES for r in rows)

  run = tmp_path / "run"
  _jaxcl("train", *common, "--config.data.name=my_pairs_mined",
         f"--config.method.num_negatives={NEGATIVES}", "--config.method.matryoshka_dims=(16, 8)",
         "--config.steps=2", "--config.train.checkpoint_every=2", "--config.eval.final=True",
         "--config.eval.max_test_examples=8", "--workdir", run)
  result = json.loads((run / "results.json").read_text())
  assert set(result["dims"]) == {"16", "8"} and 0 <= result["dims"]["8"]["ndcg@10"] <= 1
  assert "zero_shot" in result and "random_init" not in result
  out = capsys.readouterr().out
  assert "(trained, first 8 dims)" in out and "zero-shot" in out

  st = tmp_path / "st_model"
  _jaxcl("export", "--workdir", run, "--out", st)
  config = json.loads((run / "config.json").read_text())
  assert config["model"]["pretrained"] == path
  # Reloaded with model.pretrained=st, the towers embed exactly as the fine-tuned run's do.
  c = _config(path, **{"data.data_dir": str(data_dir), "data.name": "my_pairs_mined",
                       "method.matryoshka_dims": (16, 8)})
  trained, evaluator, _, _ = experiment.run.restore_method(c, str(run))
  c2 = _config(str(st), **{"data.data_dir": str(data_dir), "data.name": "my_pairs_mined"})
  reloaded, _ = experiment.run.initial_method(c2)
  ids = evaluator.tokens.encoder(["Return a copy of the file", "remove a directory tree"] * 4)[0]
  np.testing.assert_array_equal(evaluator.embed(reloaded.encode_documents, ids),
                                evaluator.embed(trained.encode_documents, ids))
  for name, value in pretrained.tower_tensors(trained.query_tower).items():
    np.testing.assert_array_equal(pretrained.tower_tensors(reloaded.query_tower)[name], value)

  with pytest.raises(SystemExit):  # a run without a checkpoint: one line, no traceback
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((run / "config.json").read_text())
    _jaxcl("export", "--workdir", empty, "--out", tmp_path / "never")
  err = capsys.readouterr().err
  assert "no complete checkpoint" in err and not (tmp_path / "never").exists()
