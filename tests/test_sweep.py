"""``jaxcl sweep``: grid parsing, the statistics against NumPy/SciPy, and a real 2 x 2 sweep with
skip-finished and resume-after-interrupt."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from jaxcl import experiment
from jaxcl.experiment import sweep, sweep_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "simclr_digits.py")


def test_paired_comparison_equals_scipy():
  rng = np.random.default_rng(0)
  base = rng.normal(0.8, 0.02, 5)
  row = base + rng.normal(0.01, 0.01, 5)
  out = sweep_stats.paired(dict(enumerate(row)), dict(enumerate(base)))
  ref = stats.ttest_rel(row, base).confidence_interval(0.95)  # SciPy's own paired t-interval
  d = row - base
  assert out["seeds"] == 5
  np.testing.assert_allclose(out["mean_difference"], d.mean(), rtol=1e-12)
  np.testing.assert_allclose([out["ci_low"], out["ci_high"]], [ref.low, ref.high], rtol=1e-10)
  assert out["agree"] == int(np.sum(np.sign(d) == np.sign(d.mean())))
  mean, std = sweep_stats.mean_std(row)
  np.testing.assert_allclose([mean, std], [row.mean(), row.std(ddof=1)], rtol=1e-12)


def test_paired_uses_common_seeds_only_and_one_seed_has_no_interval():
  out = sweep_stats.paired({0: 0.5, 1: 0.7, 2: 0.9}, {1: 0.6, 2: 0.95, 5: 0.1})
  assert out["seeds"] == 2 and out["agree"] == 1
  np.testing.assert_allclose(out["mean_difference"], (0.1 - 0.05) / 2)
  one = sweep_stats.paired({0: 0.5}, {0: 0.4})
  assert one["ci_low"] is None and one["agree"] == 1
  assert sweep_stats.paired({0: 0.5}, {1: 0.4}) is None


def test_grid_parsing_and_cell_names():
  c = experiment.load_config_file(CONFIG, "smoke")
  grid = sweep.parse_grid(["method.loss=nt_xent,dcl,my_losses:fn", "method.temperature=0.1,0.2",
                           "model.widths=(8, 8),(16, 16)"], c)
  assert grid[0] == ("method.loss", ["nt_xent", "dcl", "my_losses:fn"])
  assert grid[2][1] == ["(8, 8)", "(16, 16)"]
  cells = sweep.cells(grid, 2)
  assert len(cells) == 3 * 2 * 2 * 2 and [c.seed for c in cells[:12]] == [0] * 12
  assert cells[8].point_name == "loss=my_losses_fn,temperature=0.1,widths=_8,_8_"
  for bad, match in [("method.temprature=0.1", "no field 'temprature'"),
                     ("method.temperature=hot", "is a float"), ("seed=0,1", "--seeds"),
                     ("method.loss", "field=value1,value2")]:
    with pytest.raises(ValueError, match=match):
      sweep.parse_grid([bad], c)
  assert sweep.resolve_baseline(grid, "method.loss=dcl,method.temperature=0.2,model.widths=(8, 8)") \
      == (("method.loss", "dcl"), ("method.temperature", "0.2"), ("model.widths", "(8, 8)"))
  with pytest.raises(ValueError, match="matches 4 grid points"):
    sweep.resolve_baseline(grid, "method.loss=dcl")


def test_validation_split_is_held_out_of_train_never_test():
  c = experiment.load_config_file(CONFIG, "smoke")
  assert sweep.split_overrides(c, "validation", 0.2) == [
      "--config.data.train_split=train[20%:]", "--config.data.eval_split=train[:20%]"]
  assert sweep.split_overrides(c, "test", 0.2) == []
  with pytest.raises(ValueError, match="already a slice"):
    c.data.train_split = "train[:50%]"
    sweep.split_overrides(c, "validation", 0.2)


def test_seed_list_points_to_sweep():
  out = subprocess.run([sys.executable, "-m", "jaxcl", "train", f"--config={CONFIG}:smoke",
                        "--workdir=/tmp/never", "--config.seed=0,1,2"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
  assert out.returncode == 2 and "jaxcl sweep" in out.stderr and "--seeds" in out.stderr


def _sweep(workdir, *extra):
  # Tiny cells: 4 smoke steps (a checkpoint every 2), kNN on 200 train images as the only metric.
  return subprocess.run(
      [sys.executable, "-m", "jaxcl", "sweep", f"--config={CONFIG}:smoke", f"--workdir={workdir}",
       "--grid", "method.temperature=0.1,0.5", "--seeds", "2", "--config.steps=4",
       "--config.train.checkpoint_every=2", "--config.eval.final=True",
       "--config.eval.linear_probe=False", "--config.eval.max_train_examples=200",
       "--config.eval.max_test_examples=100", "--config.eval.online_probe=False", *extra],
      capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=2400)


def test_sweep_runs_skips_finished_and_resumes_interrupted(tmp_path):
  workdir = tmp_path / "sweep"
  # An interrupted cell: (temperature 0.5, seed 1) stopped after step 2 with its checkpoint saved.
  interrupted = workdir / "temperature=0.5" / "seed1"
  c = experiment.load_config_file(CONFIG, "smoke")
  c.seed, c.steps, c.train.checkpoint_every, c.train.stop_at = 1, 4, 2, 2
  c.method.temperature = 0.5
  c.eval.online_probe = False
  c.data.train_split, c.data.eval_split = "train[20%:]", "train[:20%]"
  experiment.train_and_evaluate(c, str(interrupted))
  assert not (interrupted / "results.json").exists()

  out = _sweep(workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  assert any(l.startswith("[4/4] method.temperature=0.5 seed 1: resuming from its checkpoint")
             for l in lines), out.stdout
  assert any("[1/4]" in l and "cells left" in l and "to go" in l for l in lines)
  with open(interrupted / "metrics.jsonl") as f:
    steps = [json.loads(line)["step"] for line in f if "loss" in json.loads(line)]
  assert steps[:2] == [1, 2] and 3 in steps and 4 in steps and steps.count(1) == 1  # resumed at 2
  record = json.load(open(workdir / "sweep.json"))
  assert all(c["status"] == "finished" for c in record["cells"].values())
  assert record["summary"]["metric"] == "knn"
  rows = record["summary"]["rows"]
  assert set(rows) >= {"method.temperature=0.1", "method.temperature=0.5", "raw pixels", "random init"}
  # The table's numbers are the cells' own results.json, compared over seeds.
  knn = {t: [json.load(open(workdir / f"temperature={t}" / f"seed{s}" / "results.json"))["knn"]
             for s in (0, 1)] for t in ("0.1", "0.5")}
  d = np.subtract(knn["0.5"], knn["0.1"])
  cmp = rows["method.temperature=0.5"]["vs_baseline"]
  np.testing.assert_allclose(cmp["mean_difference"], d.mean(), atol=1e-12)
  if d.std() > 0:
    ref = stats.ttest_rel(knn["0.5"], knn["0.1"]).confidence_interval(0.95)
    np.testing.assert_allclose([cmp["ci_low"], cmp["ci_high"]], [ref.low, ref.high], rtol=1e-9)
  assert "raw_pixels" not in json.load(open(workdir / "temperature=0.5" / "seed0" / "results.json"))
  assert (workdir / "sweep.png").exists() and "<table>" in (workdir / "sweep.html").read_text()

  mtimes = {p: p.stat().st_mtime for p in workdir.glob("*/seed*/results.json")}
  again = _sweep(workdir)
  assert again.returncode == 0 and again.stdout.count("finished earlier, skipped") == 4
  assert {p: p.stat().st_mtime for p in workdir.glob("*/seed*/results.json")} == mtimes

  table = subprocess.run([sys.executable, "-m", "jaxcl", "sweep", f"--workdir={workdir}", "--table"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
  assert table.returncode == 0 and "4 of 4 cells finished" in table.stdout
  assert "| method.temperature=0.1 (baseline) | 2 |" in table.stdout
