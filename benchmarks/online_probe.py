r"""The online linear probe: what it costs per step, and how far it ends from the offline probe.

  python benchmarks/online_probe.py              # both parts, resumable (reruns skip finished cells)
  python benchmarks/online_probe.py --cost-only  # only the step times (a minute or two)
  python benchmarks/online_probe.py --table      # only print the tables from the JSON
  python benchmarks/online_probe.py --smoke      # the smoke config: 1 timed step, 1 gap cell, temp --out

* ``cost``: the default job's jitted train step (``configs/simclr_digits.py``, batch 256, a real
  digits batch) with the probe off, on the step's own augmented views (``eval.online_probe_views=
  "augmented"``, the default) and on an extra eval-mode forward pass of the un-augmented batch
  (``"clean"``); the three are timed interleaved, ``--reps`` rounds of ``--steps`` steps, and the
  table shows the median step time and the probe's share of it.
* ``gap``: the default job on digits and Animal-Shape (as ``benchmarks/methods.py`` runs it), 3 seeds,
  per probe mode: the online probe's final test accuracy against the offline linear probe of the same
  run (``jaxcl train`` in a fresh process per cell; each finished cell is written at once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)
import methods  # noqa: E402  (its cell runner, overrides and JSON helpers)

ROOT = methods.ROOT
OUT = os.path.join(ROOT, "benchmarks", "results", "online_probe.json")
MODES = ("off", "augmented", "clean")
VIEWS = ("augmented", "clean")
SMOKE_FLAGS = ("--config.eval.final=True", "--config.eval.max_train_examples=200",
               "--config.eval.max_test_examples=100")


def step_times(reps: int, steps: int, smoke: bool = False) -> dict[str, list[float]]:
  """Seconds per step of the default job's train step, per probe mode, timed interleaved."""
  import jax
  import numpy as np

  from jaxcl import data, experiment
  from jaxcl.train import mesh as mesh_lib

  mesh = mesh_lib.make_mesh()
  runs = {}
  for mode in MODES:
    c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"),
                                    "smoke" if smoke else None)
    c.unlock()
    c.eval.online_probe = mode != "off"
    c.eval.online_probe_views = "augmented" if mode == "off" else mode
    info = data.info(c.data)
    images, labels = data.load_arrays(c.data, "train")
    batch = mesh_lib.shard_batch({"image": np.asarray(images[:c.batch_size]),
                                  "label": np.asarray(labels[:c.batch_size], np.int32)}, mesh)
    setup = experiment.run.build_setup(c, mesh, info)
    step = setup.step_fn()
    state, _ = step(setup.init_state(), batch)  # compile
    jax.block_until_ready(state)
    runs[mode] = [step, state, batch]
  times: dict[str, list[float]] = {mode: [] for mode in MODES}
  for _ in range(reps):
    for mode, run in runs.items():
      step, state, batch = run
      t = time.perf_counter()
      for _ in range(steps):
        state, metrics = step(state, batch)
      jax.block_until_ready((state, metrics))
      times[mode].append((time.perf_counter() - t) / steps)
      run[1] = state
  return times


def gap_cells(smoke: bool = False, workroot: str = os.path.join(ROOT, "runs", "bench_online_probe")):
  """``(key, config, flags, workdir)`` of every (dataset, probe views, seed) cell (``smoke``: one
  cell of the smoke config on digits, evaluated)."""
  datasets, seeds = (("digits",), (0,)) if smoke else (methods.DATASETS, methods.SEEDS)
  for dataset in datasets:
    for views in VIEWS[-1:] if smoke else VIEWS:
      for seed in seeds:
        config, flags = methods.overrides(dataset, "simclr", seed, None)
        flags = [f for f in flags if not f.startswith("--config.eval.baselines")]
        flags += ["--config.eval.baselines=False", f"--config.eval.online_probe_views={views}"]
        if smoke:
          config, flags = config + ":smoke", flags + list(SMOKE_FLAGS)
        workdir = os.path.join(workroot, dataset, views, str(seed))
        yield f"{dataset}/{views}/{seed}", config, flags, workdir


def table(record: dict) -> str:
  lines = []
  cost = record.get("cost")
  if cost:
    off = statistics.median(cost["off"])
    lines += ["| probe | step (ms, median) | probe's share of the step |", "|---|---:|---:|"]
    for mode in MODES:
      t = statistics.median(cost[mode])
      share = "-" if mode == "off" else f"{100 * (t - off) / t:.1f}%"
      lines.append(f"| {mode} | {1000 * t:.1f} | {share} |")
    lines.append("")
  rows: dict = {}
  for key, cell in record["cells"].items():
    if cell.get("ok"):
      dataset, views, _ = key.split("/")
      slot = rows.setdefault((dataset, views), {"linear": [], "online_probe": [], "gap": []})
      slot["linear"].append(cell["linear"])
      slot["online_probe"].append(cell["online_probe"])
      slot["gap"].append(cell["linear"] - cell["online_probe"])
  if rows:
    lines += ["| dataset | probe views | seeds | linear (offline) | online probe | gap (points) |",
              "|---|---|---:|---:|---:|---:|"]
    for (dataset, views), m in sorted(rows.items()):
      lines.append(f"| {dataset} | {views} | {len(m['gap'])} | {methods.stat(m['linear'])} | "
                   f"{methods.stat(m['online_probe'])} | {methods.stat(m['gap'])} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cost-only", action="store_true")
  p.add_argument("--table", action="store_true")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--steps", type=int, default=5)
  _cli.add_flags(p, OUT)
  args = p.parse_args(argv)
  _cli.out_path(args, OUT)
  if args.smoke:
    args.reps, args.steps = 1, 1
  if not args.table:
    record = _cli.load(args.out, args.fresh, {"cells": {}})
    if "cost" not in record:
      record["cost"] = step_times(args.reps, args.steps, args.smoke)
    methods.save(record, args.out)
    if not args.cost_only:
      workroot = (os.path.join(os.path.dirname(args.out), "runs") if args.smoke
                  else os.path.join(ROOT, "runs", "bench_online_probe"))
      methods.run_cells(gap_cells(args.smoke, workroot), args.out)
  print(table(methods.load(args.out)))


if __name__ == "__main__":
  main()
