"""The `jaxcl` command as a user runs it (a subprocess): help, version, the config explained, and
errors that are one line with the right exit status, before anything is compiled."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "simclr_digits.py")
JAXCL = [shutil.which("jaxcl")] if shutil.which("jaxcl") else [sys.executable, "-m", "jaxcl"]


def _run(*args, timeout=120):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("JAXCL_TRACEBACK", None)
  return subprocess.run([*JAXCL, *args], capture_output=True, text=True, timeout=timeout, env=env,
                        cwd=ROOT, check=False)


def test_version_and_command_help_exit_0():
  out = _run("--version")
  assert out.returncode == 0 and out.stdout.startswith("jaxcl ")
  out = _run("train", "--help")
  assert out.returncode == 0, out.stderr
  assert "--workdir: Run directory" in out.stdout and "--config.<field>=<value>" in out.stdout
  out = _run("prepare-data", "--help")
  assert out.returncode == 0 and "--manual_dir" in out.stdout and "--workdir" not in out.stdout


def test_config_prints_every_field_with_its_explanation():
  out = _run("config", "--config", CONFIG, "--config.steps=7")
  assert out.returncode == 0, out.stderr
  text = out.stdout
  for part in ("data", "augment", "model", "method", "optim", "train", "eval"):
    assert f"\n# {part}\n" in text
  assert "steps = 7  # optimizer steps" in text
  assert "optim.lr = 0.002  # base learning rate" in text
  # The config file's own comment wins over the library default's.
  assert "eval.knn_k = 20  # ~126 training images per class" in text
  assert "method.loss = 'nt_xent'  # any of jaxcl.losses.TWO_VIEW_LOSSES" in text


@pytest.mark.parametrize("args, code, message", [
    (["--config.method.temperature=-1"], 1, "config.method.temperature=-1.0: must be > 0"),
    (["--config.method.loss=dcl", '--config.method.loss_kwargs={"margin": 1}'], 1,
     "config.method.loss_kwargs={'margin': 1}: loss 'dcl' takes no keyword"),
    (["--config.data.examples_per_class=7"], 1, "config.data.examples_per_class=7: must be >= 2"),
    (["--config.optim.lrr=1"], 2, "bad --config override"),
    (["--config.data.train_classes=10"], 1, "config.data.train_classes=10: 'digits' has 10 classes"),
    (["--config.data.validation_classes=2"], 1, "needs data.train_classes > 0"),
    (["--config.train.fsdp=True", "--config.train.fsdp_min_size=0"], 1,
     "config.train.fsdp_min_size=0: must be >= 1"),
], ids=["temperature", "loss-kwargs", "examples-per-class", "misspelt-field", "train-classes",
        "validation-classes", "fsdp-min-size"])
def test_bad_config_is_one_line_before_compiling(tmp_path, args, code, message):
  out = _run("train", "--config", CONFIG, "--workdir", str(tmp_path / "w"), *args)
  assert out.returncode == code, out.stderr
  assert message in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("x")
  out = _run("train", "--config", CONFIG, "--workdir", str(path))
  assert out.returncode == 2 and "is a file; give a directory" in out.stderr
  assert "Traceback" not in out.stderr


def test_eval_without_config_restores_tuples(tmp_path):
  from jaxcl import experiment, main
  config = experiment.load_config_file(CONFIG)
  (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
  restored = main._config_from_workdir(str(tmp_path))  # pylint: disable=protected-access
  assert restored.model.strides == (2, 2, 2, 2) and restored.augment.scale == (0.4, 1.0)
  assert restored.method.loss_kwargs.to_dict() == {}


@pytest.mark.parametrize("raised, code, message", [
    (KeyboardInterrupt(), 130, r"interrupted \(Ctrl-C\); a half-written preparation is never read"),
    (ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources"), 1,
     "needs the Python module 'importlib_resources'.*pip install 'jaxcl\\[tensorflow\\]'"),
])
def test_interrupt_and_missing_catalog_extra_are_one_line(monkeypatch, capsys, raised, code, message):
  import re
  from jaxcl import data, main

  def fail(*args, **kwargs):
    raise raised

  monkeypatch.delenv("JAXCL_TRACEBACK", raising=False)
  monkeypatch.setattr(data, "prepare", fail)
  with pytest.raises(SystemExit) as exit_info:
    main.run(["jaxcl", "prepare-data", "imagenet2012", "--manual_dir", "/nonexistent"])
  assert exit_info.value.code == code
  err = capsys.readouterr().err
  assert re.search(message, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1
