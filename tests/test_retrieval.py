"""The retrieval method: the train step with hard negatives on 8 devices == 1, gradient caching, and the
user's path through the `jaxcl` command: own pairs -> train -> mine -> train with negatives -> embed ->
search."""

import functools
import inspect
import json
import os
import shutil

import jax
import numpy as np
import pytest
from tolerance import assert_close_to_scale

from jaxcl import data, experiment, main
from jaxcl.train import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "retrieval_stdlib_code.py")
VOCAB, LENGTH, NEGATIVES = 300, 16, 2


def _config(**overrides):
  c = experiment.load_config_file(CONFIG, "smoke")
  c.unlock()
  c.method.num_negatives = NEGATIVES
  c.method.learn_temperature = True
  c.eval.online_probe = False
  c.update_from_flattened_dict(overrides)  # dotted keys, e.g. "train.grad_cache_chunks"
  return experiment.lock(c)


def _batch(rng):
  def ids(*shape):
    x = rng.integers(1, VOCAB, size=(*shape, LENGTH)).astype(np.int32)
    x[..., LENGTH // 2:] *= rng.random((*shape, 1)) < 0.5  # some texts padded after 8 tokens
    return x
  keys = np.arange(16, dtype=np.int32)
  keys[[3, 9]] = 1  # three rows share a positive document: not each other's negatives
  return {"query_ids": ids(16), "positive_ids": ids(16), "negative_ids": ids(16, NEGATIVES),
          "negative_valid": rng.random((16, NEGATIVES)) < 0.8, "positive_key": keys,
          "query_key": np.arange(16, dtype=np.int32)}


@functools.lru_cache(maxsize=None)
def _one_step(num_devices, chunks=0):
  # SGD: Adam's first step is lr * sign(gradient), which turns the rounding noise of gradients that
  # are zero in exact arithmetic (attention key biases: softmax ignores them) into +-lr.
  c = _config(**{"train.grad_cache_chunks": chunks, "optim.name": "sgd", "optim.lr": 0.5})
  setup = experiment.run.build_setup(c, mesh_lib.make_mesh(num_devices), vocab_size=VOCAB, pad_id=0)
  batch = mesh_lib.shard_batch(_batch(np.random.default_rng(0)), setup.mesh)
  state, metrics = setup.step_fn()(setup.init_state(), batch)
  return jax.device_get(state["params"]), jax.device_get(metrics)


def test_train_step_with_hard_negatives_on_8_devices_equals_1():
  params8, m8 = _one_step(8)
  params1, m1 = _one_step(1)
  assert np.isfinite(m8["loss"]) and m8["loss"] > 0
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: assert_close_to_scale(a, b, rtol=1e-4), params8, params1)
  # The learned temperature moved, in both.
  assert params8["log_scale"] != pytest.approx(np.log(1 / 0.05), abs=1e-7)


def test_gradient_caching_equals_the_plain_step():
  cached, m_cached = _one_step(8, chunks=2)
  plain, m_plain = _one_step(8)
  np.testing.assert_allclose(m_cached["loss"], m_plain["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: assert_close_to_scale(a, b, rtol=1e-4), cached, plain)


def test_text_config_errors_name_the_field():
  with pytest.raises(ValueError, match="config.method.num_negatives=-1"):
    experiment.validate(_config(**{"method.num_negatives": -1}), num_devices=8, check_data=False)
  with pytest.raises(ValueError, match="config.model.name='small_cnn'.*text_transformer"):
    bad = _config()
    bad.unlock()
    bad.model = experiment.base(method="simclr", dataset="digits", encoder="small_cnn",
                                recipe="simclr", crop_size=32, batch_size=16, steps=1).model
    experiment.validate(bad, num_devices=8, check_data=False)
  with pytest.raises(ValueError, match="config.method.name='simclr'.*text dataset"):
    simclr = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smoke")
    simclr.unlock()
    simclr.data.name = "stdlib_code"
    experiment.validate(simclr, num_devices=8)


def _pairs_file(path):
  """Real pairs: the first docstring line of standard-library functions and their code."""
  import json as json_mod
  import shutil as shutil_mod
  import textwrap as textwrap_mod
  rows = []
  for module in (json_mod, shutil_mod, textwrap_mod, os.path, inspect):
    for name, fn in sorted(vars(module).items()):
      doc = inspect.getdoc(fn) if inspect.isfunction(fn) else None
      if not doc or name.startswith("_"):
        continue
      try:
        code = inspect.getsource(fn).replace(fn.__doc__, "")
      except (OSError, TypeError):
        continue
      rows.append({"query": doc.splitlines()[0], "positive": code[:400],
                   "id": f"{module.__name__}.{name}"})
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps({"query": r["query"], "positive": r["positive"]}) + "\n")
  return len(rows)


def _jaxcl(*args):
  main.run(["jaxcl", *map(str, args)])


def test_own_pairs_train_mine_train_embed_search(tmp_path, capsys):
  pairs = tmp_path / "pairs.jsonl"
  assert _pairs_file(pairs) >= 60
  data_dir = tmp_path / "tfds"
  _jaxcl("prepare-data", "--from-pairs", pairs, "--name", "my_pairs", "--data_dir", data_dir)
  run = tmp_path / "run"
  common = ["--config", CONFIG + ":smoke", f"--config.data.data_dir={data_dir}",
            "--config.eval.final=True"]
  _jaxcl("train", *common, "--config.data.name=my_pairs", "--workdir", run)
  result = json.loads((run / "results.json").read_text())
  for row in (result, result["random_init"], result["bm25"]):
    assert set(row) >= {"mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100"}
    assert 0 <= row["ndcg@10"] <= 1
  assert result["bm25"]["ndcg@10"] > 0.3  # docstring words are in the code
  assert result["examples_per_second"] > 0 and "images_per_second" not in result  # text pairs
  # Every phase of the evaluation is timed (tokenizing, encoding, searching): they add up to the total.
  seconds = {k: v for k, v in result["eval_seconds"].items() if k != "total"}
  assert {"load and tokenize corpus and queries", "trained/encode corpus", "trained/search",
          "random init/setup", "bm25/index and search", "other"} <= set(seconds)
  assert sum(seconds.values()) == pytest.approx(result["eval_seconds"]["total"], abs=0.01 * len(seconds))
  assert result["protocol"]["top_k"] == 100 and result["protocol"]["documents"] > 0
  out = capsys.readouterr().out
  assert "| BM25 (bm25s" in out and "NDCG@10" in out

  _jaxcl("mine", "--workdir", run, "--name", "my_pairs_mined", "--num_negatives", NEGATIVES,
         "--margin", 0)
  mined = data.default_config("my_pairs_mined")
  mined.data_dir = str(data_dir)
  source = data.text.dataset.sources.data_source(mined, "train")
  rows = [source[i] for i in range(len(source))]
  assert all(len(r["negatives"]) == NEGATIVES for r in rows)
  assert all(r["positive"] not in r["negatives"] for r in rows)  # known positives never mined

  run2 = tmp_path / "run2"
  _jaxcl("train", *common, "--config.data.name=my_pairs_mined",
         f"--config.method.num_negatives={NEGATIVES}", "--config.eval.final=False",
         f"--config.train.init_checkpoint={run / 'checkpoints'}", "--workdir", run2)
  assert np.isfinite(json.loads((run2 / "results.json").read_text())["loss"])
  # Started from run's weights, it reads their token ids with run's tokenizer.
  assert (run2 / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()

  _jaxcl("embed", "--workdir", run2)
  capsys.readouterr()
  _jaxcl("search", "--workdir", run2, "--k", 3, "Return a copy of a file")
  hits = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:2] in
          ("1.", "2.", "3.")]
  assert len(hits) == 3 and "def " in hits[0]
  with pytest.raises(SystemExit) as stop:
    _jaxcl("search", "--workdir", tmp_path / "run")  # never embedded
  assert stop.value.code == 1
  assert "no index in" in capsys.readouterr().err
  shutil.rmtree(data_dir)
  with pytest.raises(SystemExit):  # the run's recorded data folder is gone: the message names it
    _jaxcl("embed", "--workdir", run2, "--overwrite")
  err = capsys.readouterr().err
  assert f"data.data_dir={str(data_dir)!r} does not exist" in err, err
  assert "not a text dataset" not in err


def test_image_run_embeds_its_dataset_and_finds_an_image(tmp_path, capsys):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  run = tmp_path / "simclr"
  _jaxcl("train", "--config", os.path.join(ROOT, "configs", "simclr_digits.py") + ":smoke",
         "--config.steps=1", "--workdir", run)
  _jaxcl("embed", "--workdir", run)
  cfg = data.default_config("digits")
  images, _ = data.load_arrays(cfg, "test")
  Image.fromarray(images[7][..., 0]).save(tmp_path / "digit.png")
  capsys.readouterr()
  _jaxcl("search", "--workdir", run, "--image", tmp_path / "digit.png", "--k", 2)
  lines = capsys.readouterr().out.splitlines()
  first = next(line for line in lines if line.strip().startswith("1."))
  assert "test/7" in first and "1.000" in first  # the image itself, at cosine 1
