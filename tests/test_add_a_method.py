"""examples/add_a_method.py: a method of one's own, registered in one line, trained and evaluated by
the experiment from what it declares; ``jaxcl eval``'s results.json; evaluation phases that add up."""

import importlib.util
import json
import os

import numpy as np
import pytest

from jaxcl import experiment, methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example():
  path = os.path.join(ROOT, "examples", "add_a_method.py")
  spec = importlib.util.spec_from_file_location("add_a_method", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _phases_add_up(seconds: dict) -> None:
  parts = {k: v for k, v in seconds.items() if k != "total"}
  assert "other" in parts and len(parts) > 3
  assert sum(parts.values()) == pytest.approx(seconds["total"], abs=0.01 * len(parts))


def test_a_registered_method_trains_evaluates_and_eval_writes_results_json(tmp_path):
  example = _example()
  config = example.config(steps=3)
  assert "align_uniform" in methods.names()
  workdir = str(tmp_path / "run")
  result = experiment.train_and_evaluate(config, workdir)
  assert result["step"] == 3 and np.isfinite(result["loss"])
  assert 0.0 <= result["knn"] <= 1.0 and "raw_pixels" in result and "random_init" in result
  _phases_add_up(result["eval_seconds"])
  assert {"load splits", "pretrained/extract", "pretrained/knn", "random init/setup",
          "raw pixels/knn"} <= set(result["eval_seconds"])

  with open(os.path.join(workdir, "results.json")) as f:
    trained = json.load(f)
  os.remove(os.path.join(workdir, "results.md"))
  again = experiment.evaluate_checkpoint(config, workdir)  # what `jaxcl eval --workdir` runs
  with open(os.path.join(workdir, "results.json")) as f:
    written = json.load(f)
  assert os.path.exists(os.path.join(workdir, "results.md"))
  assert written["evaluated_by"] == "jaxcl eval" and written["step"] == 3
  assert written["train_seconds"] == trained["train_seconds"]  # the training's own fields stay
  for key in ("knn", "linear"):  # the same checkpoint gives the same table
    assert written[key] == pytest.approx(trained[key]) == pytest.approx(again[key])
  assert written["table"] == again["table"]
  protocol = written["protocol"]
  e = config.eval
  assert protocol["knn_k"] == e.knn_k and protocol["knn_temperature"] == e.knn_temperature
  splits = protocol["splits"]
  assert set(splits) == {config.data.train_split, config.data.eval_split}
  assert all(isinstance(n, int) and n > 0 for n in splits.values())
  assert protocol["linear_probe"]["l2_grid"] and "L-BFGS" in protocol["linear_probe"]["solver"]
  _phases_add_up(written["eval_seconds"])


def test_the_experiment_obeys_what_the_method_declares():
  example = _example()
  config = example.config(steps=3)
  config.unlock()
  config.augment.num_local = 2  # AlignUniform declares multi_crop = False
  with pytest.raises(ValueError, match=r"^config\.augment\.num_local=2: method 'align_uniform' trains on two views only"):
    experiment.validate(config, num_devices=8, check_data=False)
  config.augment.num_local = 0
  config.method.t = -1.0  # its own check_config
  with pytest.raises(ValueError, match=r"^config\.method\.t=-1\.0: the uniformity scale"):
    experiment.validate(config, num_devices=8, check_data=False)
