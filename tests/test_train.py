"""The training loop: config validation before compilation, exact resume, divergence guard, CLI."""

import json
import os

import jax
import numpy as np
import pytest

from jaxcl import experiment, train
from jaxcl.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(name="simclr_digits", **overrides):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", f"{name}.py"), "smoke")
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def final_state(workdir):
  return checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore_arrays()


def metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r for r in map(json.loads, f) if "loss" in r}


@pytest.mark.parametrize("field,value,match", [
    ("method.name", "simclrr", "method.name"),
    ("data.name", "no_such_dataset", "data.name"),
    ("batch_size", 12, "batch_size"),  # not divisible by the 8 devices
    ("optim.lr", -0.1, "optim.lr"),
    ("augment.size", 48, "augment.size"),  # crop larger than the 32 px images
    ("train.on_nonfinite", "ignore", "train.on_nonfinite"),
    ("train.grad_cache_chunks", 3, "train.grad_cache_chunks"),  # does not divide 2 rows per device
    ("model.pool", "max", "model.pool='max': small_cnn pools with one of"),
])
def test_bad_config_fails_before_anything_is_built(field, value, match, tmp_path, monkeypatch):
  def no_build(*args, **kwargs):
    raise AssertionError("the method was built (and would be compiled) before validation")
  monkeypatch.setattr(experiment.parts, "build_setup", no_build)
  with pytest.raises(ValueError, match=match):
    experiment.train_and_evaluate(smoke_config(**{field: value}), str(tmp_path))


def test_resumed_run_equals_uninterrupted_run(tmp_path):
  overrides = {"steps": 4, "train.checkpoint_every": 2}
  whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
  experiment.train_and_evaluate(smoke_config(**overrides), whole)
  stopped = experiment.train_and_evaluate(smoke_config(**overrides, **{"train.stop_at": 2}), parts)
  assert stopped["step"] == 2
  resumed = experiment.train_and_evaluate(smoke_config(**overrides), parts)
  assert resumed["step"] == 4
  assert not os.path.exists(os.path.join(parts, "train.lock"))  # released at each run's end
  a, b = final_state(whole), final_state(parts)
  assert int(a["step"]) == int(b["step"]) == 4
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  # Same data order and views: the losses after the resume match step by step.
  ma, mb = metrics(whole), metrics(parts)
  for step in (3, 4):
    np.testing.assert_allclose(ma[step]["loss"], mb[step]["loss"], rtol=1e-6)
  assert ma[3]["loss"] != ma[4]["loss"]


def _exploding(**kw):
  # A learning rate this large makes the parameters ~1e30 after one step, the activations inf after
  # the next: step 1 is the last good one.
  return smoke_config(**{"steps": 4, "optim.name": "sgd", "optim.lr": 1e32,
                         "optim.lr_scaling": "none", "optim.momentum": 0.0,
                         "train.checkpoint_every": 1, **kw})


def test_divergence_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(train.NonFiniteError, match=r"step 2 .*last good checkpoint is step 1"):
    experiment.train_and_evaluate(_exploding(), str(tmp_path))
  assert not os.path.exists(os.path.join(str(tmp_path), "train.lock"))  # released on the error
  ckpt = checkpoint.Checkpointer(os.path.join(str(tmp_path), "checkpoints"))
  assert ckpt.all_steps() == [1]
  state = ckpt.restore_arrays()
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_divergence_guard_skip_keeps_state_finite(tmp_path):
  result = experiment.train_and_evaluate(_exploding(**{"train.on_nonfinite": "skip"}), str(tmp_path))
  assert result["step"] == 4
  state = final_state(str(tmp_path))
  assert int(state["guard"]["nonfinite_count"]) == 3
  assert int(state["guard"]["first_nonfinite_step"]) == 1
  after_one = checkpoint.Checkpointer(os.path.join(str(tmp_path), "checkpoints")).restore_arrays(step=4)
  for x in jax.tree.leaves(after_one["params"]):
    assert np.isfinite(np.asarray(x)).all()


def test_cli_train_and_misspelt_override(tmp_path, capsys):
  from jaxcl import main
  workdir = str(tmp_path / "cli")
  config = os.path.join(ROOT, "configs", "simclr_digits.py") + ":smoke"
  main.run(["jaxcl", "train", "--config", config, "--workdir", workdir, "--config.steps=1"])
  assert json.load(open(os.path.join(workdir, "results.json")))["step"] == 1
  page = open(os.path.join(workdir, "report.html"), encoding="utf-8").read()
  assert "<h1>simclr on digits</h1>" in page and "optim.lr = " in page
  with pytest.raises(SystemExit):
    main.run(["jaxcl", "train", "--config", config, "--workdir", workdir, "--config.optim.lrr=1"])


def test_cli_user_errors_are_one_line_messages(tmp_path, capsys):
  from jaxcl import main
  config = os.path.join(ROOT, "configs", "simclr_digits.py") + ":smoke"
  with pytest.raises(SystemExit) as exit_info:
    main.run(["jaxcl", "train", "--config", config, "--workdir", str(tmp_path), "--config.optim.lr=-1"])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert "config.optim.lr=-1.0" in err and "Traceback" not in err
  with pytest.raises(SystemExit):
    main.run(["jaxcl", "eval", "--config", config, "--workdir", str(tmp_path / "none")])
  assert "no complete checkpoint" in capsys.readouterr().err


def test_readme_training_from_python_runs(tmp_path, monkeypatch):
  """The manual's "train without a config file" snippet, shrunk to 2 steps of 16 images."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "docs", "architecture.md")) as f:
    readme = f.read()
  start = readme.index("```python\n", readme.index("a notebook that trains without a config file"))
  code = readme[start + len("```python\n"):readme.index("```", start + 10)]
  shrunk = (code.replace("steps, batch = 300, 256", "steps, batch = 2, 16")
            .replace('"configs/simclr_digits.py"', '"configs/simclr_digits.py", "smoke"')
            .replace("/tmp/run", str(tmp_path)))
  assert shrunk.count(str(tmp_path)) == 2 and "steps, batch = 2, 16" in shrunk
  monkeypatch.chdir(root)
  namespace = {}
  exec(compile(shrunk, "docs/architecture.md", "exec"), namespace)  # noqa: S102
  run = namespace["run"]
  assert int(run.state["step"]) == 2 and np.isfinite(run.metrics["loss"])
  images = np.zeros((8, 32, 32, 1), np.float32)
  assert namespace["features"](images).shape[0] == 8


def test_final_evaluation_reports_each_phase_with_its_time(tmp_path, capsys):
  overrides = {"steps": 1, "eval.final": True, "eval.max_train_examples": 96,
               "eval.max_test_examples": 64, "eval.knn_every": 1}
  result = experiment.train_and_evaluate(smoke_config(**overrides), str(tmp_path))
  saved = json.load(open(os.path.join(str(tmp_path), "results.json")))["eval_seconds"]
  printed = capsys.readouterr().out
  for rep in ("pretrained", "random init", "raw pixels"):
    for phase in ("knn", "linear probe") + (("extract",) if rep != "raw pixels" else ()):
      assert f"{rep}/{phase}" in saved
      assert f"eval: {rep}/{phase}:" in printed
  assert saved["total"] >= max(v for k, v in saved.items() if k != "total")
  # Every phase is reported (loading, the baseline's setup, ...; "other" is the rest): they add up.
  phases = {k: v for k, v in saved.items() if k != "total"}
  assert {"load splits", "random init/setup", "other"} <= set(phases)
  assert sum(phases.values()) == pytest.approx(saved["total"], abs=0.01 * len(phases))
  assert result["eval_seconds"] == saved
  assert 0.0 <= result["online_probe_acc"] <= 1.0  # logged by the step (online probe on by default)
