"""``jaxcl sweep``: a grid of config overrides x seeds, each cell one ``jaxcl train``, and their table.

  jaxcl sweep --config configs/simclr_digits.py --grid method.loss=nt_xent,dcl,my_losses:fn \\
      --grid method.temperature=0.1,0.2 --seeds 3 --workdir runs/sweep [--select_on validation|test]
  jaxcl sweep --workdir runs/sweep --table        (what has finished, without training)

* A cell is one grid point and one seed: ``jaxcl train`` in a fresh process with its own workdir,
  ``<workdir>/<point>/seed<s>``, the point's name made from its overrides. A cell is finished when
  its ``results.json`` exists. A rerun skips finished cells and resumes an interrupted one from its
  newest checkpoint (``jaxcl train`` resumes from a workdir); a failed cell is retried.
* ``select_on='validation'`` (the default) trains on the train split less a held-out fraction and
  scores that fraction (``data.train_split='train[20%:]'``, ``data.eval_split='train[:20%]'``), so the
  choice of a row never sees the test split; ``'test'`` scores the config's evaluation split, for the
  final table of the row chosen on validation.
* The table: mean ± std per grid point over seeds for each metric, and each row against a baseline row
  (``baseline``, default the first grid point) by a paired comparison over seeds on the primary metric
  (``jaxcl.experiment.sweep_stats``), with the raw-pixel and random-init rows the baseline's cells
  report. ``sweep.json``, ``sweep.png`` and ``sweep.html`` are rewritten after every cell.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from jaxcl.experiment import sweep_stats

SELECT_ON = ("validation", "test")
PREFERRED_METRICS = ("linear", "knn", "online_probe", "ndcg@10", "mrr@10", "recall@1", "recall@10",
                     "map@r")
NOT_METRICS = ("step", "train_seconds", "images_per_second", "stopped_at")
BASELINES = {"random_init": "random init", "raw_pixels": "raw pixels"}
RESULTS = "results.json"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One grid point (its ``(field, value)`` overrides, as typed) and one seed."""
  point: tuple[tuple[str, str], ...]
  seed: int

  @property
  def point_name(self) -> str:
    return point_name(self.point)

  @property
  def name(self) -> str:
    return f"{self.point_name}/seed{self.seed}"


def point_name(point: Sequence[tuple[str, str]]) -> str:
  """A directory name for a grid point: ``loss=dcl,temperature=0.1`` (safe characters only)."""
  if not point:
    return "default"
  text = ",".join(f"{field.rsplit('.', 1)[-1]}={value}" for field, value in point)
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)[:200]


def point_label(point: Sequence[tuple[str, str]]) -> str:
  """A grid point for people: ``method.loss=dcl method.temperature=0.1``."""
  return " ".join(f"{f}={v}" for f, v in point) or "(config as is)"


def _split_values(text: str) -> list[str]:
  """Comma-separated values; commas inside brackets or quotes (a tuple, a JSON dict) do not split."""
  out, depth, quote, current = [], 0, None, ""
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "\"'":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      out.append(current.strip())
      current = ""
      continue
    current += ch
  out.append(current.strip())
  return out


def parse_grid(specs: Sequence[str], config: ml_collections.ConfigDict | None = None
               ) -> list[tuple[str, list[str]]]:
  """``["method.loss=nt_xent,dcl", ...]`` -> ``[("method.loss", ["nt_xent", "dcl"]), ...]``.

  Raises:
    ValueError: a spec without ``=`` or values, a field repeated, ``seed`` (use ``seeds``), or, given
      ``config``, a field the config lacks or a value its type cannot take.
  """
  grid, seen = [], set()
  for spec in specs:
    field, eq, values_text = spec.partition("=")
    field = field.strip().removeprefix("--").removeprefix("config.")
    values = [v for v in _split_values(values_text) if v] if eq else []
    if not field or not values:
      raise ValueError(f"--grid={spec!r}: write field=value1,value2 (e.g. --grid "
                       "method.temperature=0.1,0.2).")
    if field == "seed":
      raise ValueError("--grid seed=...: seeds are the sweep's own axis; use --seeds N.")
    if field in seen:
      raise ValueError(f"--grid: field {field!r} appears twice; give all its values in one --grid.")
    seen.add(field)
    if config is not None:
      for value in values:
        _check_value(config, field, value)
    grid.append((field, values))
  return grid


def _check_value(config: ml_collections.ConfigDict, field: str, value: str) -> None:
  node: Any = config
  parts = field.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:i]) or "the config"
      raise ValueError(f"--grid {field}: {where} has no field {part!r} (`jaxcl config --config C` "
                       "lists them all).")
    node = node[part]
  kind = type(node)
  try:
    if kind is bool:
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError
    elif kind in (int, float):
      kind(value)
  except ValueError:
    raise ValueError(f"--grid {field}={value!r}: the field is a {kind.__name__} "
                     f"(now {node!r}).") from None


def cells(grid: Sequence[tuple[str, Sequence[str]]], seeds: int) -> list[Cell]:
  """Every (grid point, seed), seed-major: a half-finished sweep already has every point once."""
  points = [tuple(zip([f for f, _ in grid], values))
            for values in itertools.product(*[v for _, v in grid])]
  return [Cell(point, seed) for seed in range(seeds) for point in points]


def split_overrides(config: ml_collections.ConfigDict, select_on: str,
                    validation_fraction: float) -> list[str]:
  """The ``--config.data.*`` flags that make the run score a validation split held out of train."""
  if select_on not in SELECT_ON:
    raise ValueError(f"--select_on={select_on!r}: use 'validation' (tune) or 'test' (final table).")
  if select_on == "test":
    return []
  from jaxcl import methods  # pylint: disable=g-import-not-at-top
  if config.method.name in methods.TEXT_METHODS:
    raise ValueError(f"--select_on=validation: method {config.method.name!r} scores queries of "
                     "data.eval_split; point that at your validation queries and use --select_on test.")
  if not 0 < validation_fraction < 1:
    raise ValueError(f"--validation_fraction={validation_fraction}: must be in (0, 1), e.g. 0.2.")
  train = config.data.train_split
  if "[" in train:
    raise ValueError(f"--select_on=validation: data.train_split={train!r} is already a slice; "
                     "give the whole split (the sweep holds out a fraction of it) or use --select_on test.")
  percent = round(100 * validation_fraction)
  return [f"--config.data.train_split={train}[{percent}%:]",
          f"--config.data.eval_split={train}[:{percent}%]"]


def cell_flags(cell: Cell, *, baseline_point: tuple, user_overrides: Sequence[str],
               splits: Sequence[str]) -> list[str]:
  """The ``jaxcl train`` flags of a cell after ``--config`` and ``--workdir``."""
  flags = [*user_overrides, f"--config.seed={cell.seed}", "--config.train.progress=False"]
  flags += [f"--config.{field}={value}" for field, value in cell.point]
  flags += splits
  if cell.point != baseline_point:  # the baselines depend on the seed, not on the row: measure once
    flags.append("--config.eval.baselines=False")
  return flags


def cell_status(workdir: str) -> str:
  """``finished`` (results.json), ``interrupted`` (checkpoints, no results) or ``new``."""
  if os.path.exists(os.path.join(workdir, RESULTS)):
    return "finished"
  if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(
      os.path.join(workdir, "checkpoints")):
    return "interrupted"
  return "new"


def run_cell(config_arg: str, flags: Sequence[str], workdir: str) -> tuple[bool, str]:
  """``python -m jaxcl train`` of one cell, its output appended to ``<workdir>/train.log``.

  Returns (finished, the last lines of its output when it did not).
  """
  os.makedirs(workdir, exist_ok=True)
  cmd = [sys.executable, "-m", "jaxcl", "train", "--config", config_arg, "--workdir", workdir, *flags]
  log = os.path.join(workdir, "train.log")
  with open(log, "a") as f:
    f.write(f"\n$ {' '.join(cmd)}\n")
    f.flush()
    code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
  if code == 0 and os.path.exists(os.path.join(workdir, RESULTS)):
    return True, ""
  with open(log) as f:
    tail = [line.rstrip() for line in f.read().strip().splitlines()[-3:]]
  return False, f"exit code {code}: " + " | ".join(tail)


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else
          f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def run_sweep(config_arg: str, config: ml_collections.ConfigDict, grid: Sequence[tuple[str, list[str]]],
              *, seeds: int, workdir: str, select_on: str = "validation",
              validation_fraction: float = 0.2, baseline: str | None = None,
              user_overrides: Sequence[str] = (), metric: str | None = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs every unfinished cell of the sweep, then writes its table; returns ``collect``'s record.

  Args:
    config_arg: the ``--config`` argument each cell's ``jaxcl train`` gets (``path[:arg]``).
    config: that config, loaded (with ``user_overrides`` applied), to check the grid against.
    grid: ``parse_grid``'s output.
    seeds: seeds 0 .. seeds-1 per grid point.
    workdir: the sweep's directory; each cell trains in ``<workdir>/<point>/seed<s>``.
    select_on: ``"validation"`` (held out of train) or ``"test"``.
    validation_fraction: the share of the train split held out with ``select_on='validation'``.
    baseline: the row the others are compared with, as ``field=value[,field=value]`` (default: the
      first grid point).
    user_overrides: ``--config.*`` flags applied to every cell (before the grid's).
    metric: the primary metric of the comparison (default: the first of ``PREFERRED_METRICS`` the
      results have).
    say: where progress lines go.
  """
  if seeds < 1:
    raise ValueError(f"--seeds={seeds}: must be >= 1.")
  todo = cells(grid, seeds)
  base = resolve_baseline(grid, baseline)
  splits = split_overrides(config, select_on, validation_fraction)
  spec = {"config": config_arg, "grid": [[f, list(v)] for f, v in grid], "seeds": seeds,
          "select_on": select_on, "validation_fraction": validation_fraction if splits else None,
          "baseline": [list(p) for p in base], "overrides": list(user_overrides)}
  os.makedirs(workdir, exist_ok=True)
  _check_same_spec(workdir, spec)
  with open(os.path.join(workdir, "sweep_spec.json"), "w") as f:
    json.dump(spec, f, indent=2)
  started, ran = time.perf_counter(), []
  for i, cell in enumerate(todo, 1):
    where = os.path.join(workdir, cell.name)
    status = cell_status(where)
    head = f"[{i}/{len(todo)}] {point_label(cell.point)} seed {cell.seed}"
    if status == "finished":
      say(f"{head}: finished earlier, skipped")
      continue
    t0 = time.perf_counter()
    say(f"{head}: {'resuming from its checkpoint' if status == 'interrupted' else 'training'} ...")
    ok, error = run_cell(config_arg, cell_flags(cell, baseline_point=base,
                                                user_overrides=user_overrides, splits=splits), where)
    ran.append(time.perf_counter() - t0)
    left = sum(1 for c in todo[i:] if cell_status(os.path.join(workdir, c.name)) != "finished")
    eta = sum(ran) / len(ran) * left
    say(f"{head}: {'done' if ok else 'FAILED (' + error + ')'} in {_duration(ran[-1])}; elapsed "
        f"{_duration(time.perf_counter() - started)}, {left} cells left, ~{_duration(eta)} to go")
    write_outputs(workdir, metric=metric)
  return write_outputs(workdir, metric=metric)


def _check_same_spec(workdir: str, spec: dict) -> None:
  """A rerun must describe the same sweep (its cells' names would otherwise mix two studies)."""
  path = os.path.join(workdir, "sweep_spec.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  for key in ("config", "select_on", "validation_fraction", "overrides"):
    if old.get(key) != spec.get(key):
      raise ValueError(f"--workdir={workdir} holds a sweep with {key}={old.get(key)!r}, not "
                       f"{spec.get(key)!r}; use another --workdir (grid and seeds may grow).")


def resolve_baseline(grid: Sequence[tuple[str, Sequence[str]]], baseline: str | None) -> tuple:
  """The baseline grid point: the first, or the one ``baseline`` (``field=value,...``) names."""
  points = [c.point for c in cells(grid, 1)]
  if not baseline:
    return points[0]
  wanted = {}
  for part in _split_values(baseline):
    field, _, value = part.partition("=")
    wanted[field.strip().removeprefix("config.")] = value.strip()
  matches = [p for p in points if all(dict(p).get(f) == v for f, v in wanted.items())]
  if len(matches) != 1:
    raise ValueError(f"--baseline={baseline!r} matches {len(matches)} grid points; name one of: "
                     + "; ".join(",".join(f"{f}={v}" for f, v in p) for p in points))
  return matches[0]


def _scalars(results: dict) -> dict[str, float]:
  return {k: float(v) for k, v in results.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_METRICS}


def collect(workdir: str) -> dict[str, Any]:
  """The sweep's finished cells, read from their ``results.json`` (the record of truth)."""
  with open(os.path.join(workdir, "sweep_spec.json")) as f:
    spec = json.load(f)
  grid = [(f, v) for f, v in spec["grid"]]
  record = {"spec": spec, "cells": {}}
  for cell in cells(grid, spec["seeds"]):
    path = os.path.join(workdir, cell.name, RESULTS)
    entry = {"point": [list(p) for p in cell.point], "seed": cell.seed,
             "status": cell_status(os.path.dirname(path))}
    if entry["status"] == "finished":
      with open(path) as f:
        results = json.load(f)
      entry["metrics"] = _scalars(results)
      for key in BASELINES:
        if isinstance(results.get(key), dict):
          entry[key] = _scalars(results[key])
    record["cells"][cell.name] = entry
  return record


def primary_metric(record: dict, metric: str | None) -> str | None:
  names = [set(c["metrics"]) for c in record["cells"].values() if "metrics" in c]
  if not names:
    return metric
  common = set.intersection(*names)
  if metric:
    if metric not in common:
      raise ValueError(f"--metric={metric!r}: the finished cells report {sorted(common)}.")
    return metric
  return next((m for m in PREFERRED_METRICS if m in common), sorted(common)[0] if common else None)


def summarize(record: dict, *, metric: str | None = None) -> dict[str, Any]:
  """Per row: ``{metric: {seed: value}}``, mean/std, and the paired comparison with the baseline."""
  spec = record["spec"]
  primary = primary_metric(record, metric)
  base_point = tuple(tuple(p) for p in spec["baseline"])
  rows: dict[str, dict] = {}
  for entry in record["cells"].values():
    point = tuple(tuple(p) for p in entry["point"])
    row = rows.setdefault(point_label(point), {"point": point, "values": {}})
    if "metrics" not in entry:
      continue
    for name, value in entry["metrics"].items():
      row["values"].setdefault(name, {})[entry["seed"]] = value
    if point == base_point:
      for key, label in BASELINES.items():
        for name, value in entry.get(key, {}).items():
          rows.setdefault(label, {"point": None, "values": {}})["values"].setdefault(
              name, {})[entry["seed"]] = value
  base = rows.get(point_label(base_point), {"values": {}})["values"].get(primary, {})
  for label, row in rows.items():
    row["stats"] = {name: dict(zip(("mean", "std"), sweep_stats.mean_std(list(v.values()))),
                               seeds=len(v)) for name, v in row["values"].items()}
    if row["point"] is not None and row["point"] != base_point and primary in row["values"]:
      row["vs_baseline"] = sweep_stats.paired(row["values"][primary], base)
  return {"metric": primary, "baseline": point_label(base_point), "rows": rows}


def _ms(stats: dict | None) -> str:
  if not stats:
    return "-"
  return f"{stats['mean']:.4f}" + ("" if stats["std"] is None else f" ± {stats['std']:.4f}")


def format_table(summary: dict) -> str:
  """The sweep's Markdown table (rows: grid points, then the baselines)."""
  rows, primary = summary["rows"], summary["metric"]
  shown = [m for m in PREFERRED_METRICS if any(m in r["stats"] for r in rows.values())]
  if primary and primary not in shown:
    shown.insert(0, primary)
  shown = shown or ["loss"]
  lines = ["| row | seeds | " + " | ".join(shown) +
           f" | Δ {primary} vs baseline | 95% CI | seeds agreeing |",
           "|---|---:|" + "---:|" * len(shown) + "---:|---|---:|"]
  for label, row in rows.items():
    seeds = max((s["seeds"] for s in row["stats"].values()), default=0)
    name = label + (" (baseline)" if label == summary["baseline"] else "")
    cmp = row.get("vs_baseline")
    if cmp:
      ci = ("-" if cmp["ci_low"] is None else f"[{cmp['ci_low']:+.4f}, {cmp['ci_high']:+.4f}]")
      tail = f"{cmp['mean_difference']:+.4f} | {ci} | {cmp['agree']}/{cmp['seeds']}"
    else:
      tail = "- | - | -"
    lines.append(f"| {name} | {seeds} | " + " | ".join(_ms(row["stats"].get(m)) for m in shown)
                 + f" | {tail} |")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> str | None:
  """Bars of the primary metric per row (mean ± std), the baselines as lines; None without data."""
  primary = summary["metric"]
  rows = {k: r for k, r in summary["rows"].items() if r["point"] is not None and primary in r["stats"]}
  if not rows:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows) + 2), 4))
  names = list(rows)
  stats = [rows[n]["stats"][primary] for n in names]
  ax.bar(range(len(names)), [s["mean"] for s in stats], yerr=[s["std"] or 0 for s in stats],
         capsize=3, color=["tab:gray" if n == summary["baseline"] else "tab:blue" for n in names])
  for label, style in zip(BASELINES.values(), ("--", ":")):
    s = summary["rows"].get(label, {}).get("stats", {}).get(primary)
    if s:
      ax.axhline(s["mean"], color="tab:red", linestyle=style, label=label)
  ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel(primary)
  ax.set_title(f"{primary}: mean ± std over seeds (grey: the baseline row)")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_outputs(workdir: str, *, metric: str | None = None) -> dict[str, Any]:
  """``sweep.json`` (cells + summary), ``sweep.png`` and ``sweep.html`` from the finished cells."""
  from jaxcl import report  # pylint: disable=g-import-not-at-top
  record = collect(workdir)
  summary = summarize(record, metric=metric)
  record["summary"] = {"metric": summary["metric"], "baseline": summary["baseline"],
                       "rows": {k: {"values": {m: {str(s): v for s, v in vals.items()}
                                               for m, vals in r["values"].items()},
                                    "stats": r["stats"], "vs_baseline": r.get("vs_baseline")}
                                for k, r in summary["rows"].items()}}
  record["table"] = format_table(summary)
  tmp = os.path.join(workdir, "sweep.json.tmp")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, os.path.join(workdir, "sweep.json"))
  png = plot(summary, os.path.join(workdir, "sweep.png"))
  spec = record["spec"]
  done = sum(1 for c in record["cells"].values() if c["status"] == "finished")
  report.write_page(
      os.path.join(workdir, "sweep.html"), title=f"Sweep of {spec['config']}",
      facts={"cells finished": f"{done} of {len(record['cells'])}", "scored on": spec["select_on"],
             "primary metric": summary["metric"], "baseline row": summary["baseline"],
             "comparison": "paired over seeds: mean difference, its 95% t-interval, and the seeds "
                           "whose difference has the mean's sign"},
      tables={"Results (mean ± std over seeds)": record["table"]},
      pictures=[(png, summary["metric"] or "")] if png else [])
  return record
