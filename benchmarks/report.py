r"""Every measured table of the README and the manual, generated from ``benchmarks/results/*.json``.

  python benchmarks/report.py            # benchmarks/results/index.html: every table and picture
  python benchmarks/report.py --readme   # rewrite the marked blocks of README.md and docs/*.md
  python benchmarks/report.py --check    # list the blocks that differ from their JSON (exit 1)
  python benchmarks/report.py --list     # the table names a block can use

A block in README.md or docs/*.md is

  <!-- table: methods.digits -->
  | ... the table, as ``--readme`` writes it ... |
  <!-- /table -->

and ``--readme`` replaces what is between the two markers with the table that ``TABLES[name]`` makes
from its JSON. ``tests/test_docs.py`` fails when a block differs from what the JSON gives. A block whose
results file does not exist yet must say "Not generated" (it is then left as it is); a name that
``TABLES`` does not know is an error.

``default_job.json`` is read when present, through ``benchmarks/default_job.py``'s own ``table()``
(its "Selection" and "Test" tables); until that script and its JSON exist, the default job's blocks
say "Not generated".
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)  # run from a checkout
import cpc  # noqa: E402
import fsdp_memory  # noqa: E402
import methods  # noqa: E402
import metric_learning  # noqa: E402
import online_probe  # noqa: E402
import retrieval  # noqa: E402
import sweeps  # noqa: E402

try:  # the default job's selection and test runs (issue 36), once that script exists
  import default_job  # noqa: E402
except ImportError:
  default_job = None

RESULTS = os.path.join(HERE, "results")
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.\-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
NOT_GENERATED = "Not generated"


def _blocks(text: str) -> list[tuple[str | None, str]]:
  """The (``**heading**`` or None, pipe table) pairs of a ``--table`` printout, in order."""
  out, heading = [], None
  for block in text.strip().split("\n\n"):
    block = block.strip()
    if block.startswith("**"):
      heading = block.split("**")[1]
    elif block.startswith("|"):
      out.append((heading, block))
      heading = None
  return out


def _by_heading(text: str, key: Callable[[str], str]) -> dict[str, str]:
  return {key(heading): table for heading, table in _blocks(text) if heading}


def _ml_key(heading: str) -> str:
  """``digits: test (...; flatten pool, ...)`` -> ``digits.flatten``; the grid -> ``validation``."""
  if heading.startswith("validation"):
    return "validation"
  pool = re.search(r"(\w+) pool", heading)
  return f"{heading.split(':')[0]}.{pool.group(1) if pool else 'test'}"


def _pct(values: list[float]) -> str:
  values = [100 * v if v <= 1 else v for v in values]
  if len(values) == 1:
    return f"{values[0]:.1f}%"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}%"


def _g(x: float) -> str:
  return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


# ---------------------------------------------------------------------------------------------
# Tables whose script has no ``table()`` of its own.


def _default_job(part: str) -> Callable[[dict], str]:
  """The ``Selection`` or ``Test`` table of ``benchmarks/default_job.py``'s printout."""

  def make(record: dict) -> str:
    if default_job is None:
      raise ValueError("benchmarks/default_job.json exists but benchmarks/default_job.py does not")
    tables = _by_heading(default_job.table(record, default_job.CANDIDATES, len(record["folds"])),
                         lambda h: h.split()[0])
    if part not in tables:
      raise ValueError(f"default_job.json has no {part} table yet: mark its block '{NOT_GENERATED}'")
    return tables[part]

  return make


LOSS_METHODS = {"naive": "naive (1 device)", "allgather": "all-gather local loss",
                "gspmd": "GSPMD on sharded inputs", "ring": "jaxcl ring (tiled)"}


def _loss_cell(cell: dict | None) -> str:
  if not cell or not cell.get("ok"):
    return ""
  compiled = cell["compiled_total_bytes"] / 1e9
  if not cell.get("ran"):
    return f"{_g(compiled)} GB compiled (not run)"
  peak = cell.get("first_call_peak_rss_delta_bytes", 0) / 1e9
  return f"{_g(compiled)} / {_g(peak)} GB, {_g(cell['time_s'])} s"


def loss_scaling(record: dict) -> str:
  results = record["results"]
  sizes = sorted({int(n) for m in results.values() for n in m})
  head = [LOSS_METHODS[m] for m in LOSS_METHODS if m in results]
  out = ["| N | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
  for n in sizes:
    out.append(f"| {n:,} | " + " | ".join(_loss_cell(results[m].get(str(n)))
                                          for m in LOSS_METHODS if m in results) + " |")
  return "\n".join(out)


def loss_scaling_goals(record: dict) -> str:
  goals, limit = record["goals"], record["config"]["limit_gb"]
  mem = goals["memory_ratio_ring_over_naive_at_32768"]
  doubling = goals["ring_memory_doubling_ratios"]["value"]
  compiled = [v["compiled_total"] for v in doubling.values()]
  measured = [f"{v['measured_peak_first_call']:.2f}" for v in doubling.values()
              if "measured_peak_first_call" in v]
  largest = goals["largest_n_within_limit"]
  time = goals["time_ratio_ring_over_naive_at_16384"]
  return "\n".join([
      "| goal | target | measured |", "|---|---|---|",
      f"| ring memory at N=32,768 / naive | {mem['goal']} | {mem['value']:.3f}x "
      f"(ring {mem['ring']}; naive {mem['naive']}) |",
      f"| ring memory(2N) / memory(N) | {doubling_goal(record)} | compiled: "
      f"{min(compiled):.2f}-{max(compiled):.2f}; measured first-call peak: {', '.join(measured)} |",
      f"| largest N within {limit:g} GB | >= 131,072 | " + ", ".join(
          f"{LOSS_METHODS[m].split(' (')[0]}: {n:,}" for m, n in largest.items()) + " |",
      f"| ring time / naive at N=16,384 | {time['goal']} | {time['value']:.2f}x |"])


def doubling_goal(record: dict) -> str:
  return record["goals"]["ring_memory_doubling_ratios"]["goal"]


def loss_scaling_limit(record: dict) -> str:
  out = ["| N x d | compiled (all devices) | one call | ring FLOP rate / tile-matmul rate |",
         "|---|---:|---:|---:|"]
  for key, c in record["cells"].items():
    n, d = (int(v) for v in key.split("x"))
    if not c.get("ran"):
      call, rate = "compiled only", "-"
    else:
      call = f"{c['time_s']:.1f} s" + (" (one call, no warm-up)" if c.get("warmup") is False
                                       else " (after a warm-up call)")
      rate = (f"{100 * c['ring_fraction_of_matmul']:.0f}% ({c['ring_flops_per_s'] / 1e9:.0f} vs "
              f"{c['matmul_tile_flops_per_s'] / 1e9:.0f} GFLOP/s)")
    out.append(f"| {n:,} x {d} | {c['compiled_total_bytes'] / 1e9:.2f} GB | {call} | {rate} |")
  return "\n".join(out)


def augment_throughput(record: dict) -> str:
  out = ["| views | jaxcl (jit, CPU) | Pillow, 0 workers | Pillow, 2 workers | jaxcl / Pillow, 2 workers |",
         "|---|---:|---:|---:|---:|"]
  for r in record["results"]:
    label = f"{r['size']} px" + (f" (blur {r['blur_prob']:g})" if r["blur_prob"] else "")
    out.append(f"| {label} | {r['device_images_per_s']:,.1f} | {r['host_0w_images_per_s']:,.1f} | "
               f"{r['host_2w_images_per_s']:,.1f} | {r['ratio_device_over_host_2w']:.2f}x |")
  return "\n".join(out)


def input_pipeline(record: dict) -> str:
  out = ["| dataset | workers | examples/s | start-up s | / the JSON's train step |",
         "|---|---:|---:|---:|---:|"]
  for r in record["results"]:
    shape = "x".join(map(str, r["image_shape"]))
    out.append(f"| {r['dataset']} {shape} | {r['num_workers']} | {r['examples_per_second']:,.0f} | "
               f"{r['startup_seconds']:.1f} | {r['ratio_to_train_step']:.1f}x |")
  step = record["train_step"]
  out.append("")
  out.append(f"Train step it is divided by: {step['images_per_second']:.1f} images/s "
             f"({step['source']}).")
  return "\n".join(out)


def _eval_cell(cells: dict, key: str) -> str:
  c = cells.get(key)
  if c is None:
    return "-"
  if not c.get("ok"):
    return c.get("error", "failed")
  return f"{c['seconds']:.1f} s / {c['peak_rss_gb']:.2f}"


def eval_scaling(record: dict) -> str:
  cells = record["cells"]
  shapes = sorted({(c["n"], c["d"]) for c in cells.values() if "n" in c}, key=lambda s: (s[1], s[0]))
  out = [f"Command: `{record['command']}`", "",
         "| n x d | kNN (k=200) | probe, old (k-fold) | probe, new |", "|---|---:|---:|---:|"]
  for n, d in shapes:
    key = f"n={n}/d={d}"
    new = _eval_cell(cells, f"probe_new/{key}")
    if f"probe_new/{key}_lbfgs" in cells:
      new += f" (L-BFGS: {_eval_cell(cells, f'probe_new/{key}_lbfgs')})"
    out.append(f"| {n // 1000}k x {d} | {_eval_cell(cells, f'knn/{key}')} | "
               f"{_eval_cell(cells, f'probe_old/{key}')} | {new} |")
  return "\n".join(out)


E2E_ORDER = ("end_to_end_60k", "end_to_end_60k_first_try", "end_to_end_60k_lbfgs",
             "end_to_end_60k_before_tol")


def eval_end_to_end(record: dict) -> str:
  out = ["| cell | train / test images | steps | train s | eval s: load | pretrained | random init | "
         "raw pixels | other | eval s total | eval / train |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for name in E2E_ORDER:
    c = record.get(name)
    if not c:
      continue
    per = c["eval_seconds_per_representation"]
    load = f"{c['load_seconds']:.1f}" if "load_seconds" in c else "(in other)"
    out.append(f"| {name} | {c['n_train']:,} / {c['n_test']:,} | {c['steps']} | "
               f"{c['train_seconds']:.1f} | {load} | {per['pretrained']:.1f} | {per['random init']:.1f} | "
               f"{per['raw pixels']:.1f} | {c['eval_seconds_other']:.1f} | {c['eval_seconds']:.1f} | "
               f"{c['eval_over_train']:.2f} |")
  return "\n".join(out)


def eval_phases(record: dict) -> str:
  now, before = record["end_to_end_60k"]["eval_phases"], record["end_to_end_60k_lbfgs"]["eval_phases"]
  out = ["| phase (seconds) | extract | kNN | linear probe, `end_to_end_60k` | "
         "linear probe, `end_to_end_60k_lbfgs` |", "|---|---:|---:|---:|---:|"]
  for rep in ("pretrained", "random init", "raw pixels"):
    extract = now.get(f"{rep}/extract")
    out.append(f"| {rep} | {'-' if extract is None else f'{extract:.1f}'} | {now[f'{rep}/knn']:.1f} | "
               f"{now[f'{rep}/linear probe']:.1f} | {before[f'{rep}/linear probe']:.1f} |")
  probes = [sum(p[f"{rep}/linear probe"] for rep in ("pretrained", "random init", "raw pixels"))
            for p in (now, before)]
  out.append(f"| all three probes | | | {probes[0]:.1f} | {probes[1]:.1f} |")
  return "\n".join(out)


def eval_estimate(record: dict) -> str:
  e = record["estimate_1.28M_x_2048"]
  return "\n".join([
      "| 1.28M x 2048, 1,000 classes | memory (GB) | time |", "|---|---:|---:|",
      f"| features (host + device copy) | {e['features_gb']:.1f} | - |",
      f"| linear probe (6 heads, mini-batch Adam) | {e['probe_total_gb']:.1f} | "
      f"{e['probe_steps']:,} steps x {e['probe_step_s']:.2f} s = {e['probe_hours']:.2f} h |",
      f"| kNN ({e['n_test']:,} queries, chunks of {e['knn_chunk_rows']}) | {e['knn_total_gb']:.1f} | "
      f"{e['knn_chunk_s']:.1f} s a chunk = {e['knn_hours']:.2f} h |"])


STEP_LABELS = {"small_cnn": "SmallCNN ({layers} layers)", "resnet18_w025": "ResNet-18 x0.25 (CIFAR stem)",
               "resnet18": "ResNet-18 (CIFAR stem)", "vit_tiny": "ViT-Tiny/4"}


def step_vs_pytorch(record: dict) -> str:
  out = ["| configuration | jaxcl img/s | PyTorch img/s | jaxcl / PyTorch | step / (fwd+bwd) | "
         "augmentation |", "|---|---:|---:|---:|---:|---:|"]
  for name, c in record["configs"].items():
    label = STEP_LABELS.get(name, name).format(layers=len(c["model"].get("widths", ())))
    label += f", batch {c['batch']}, {c['optimizer'].upper() if c['optimizer'] != 'adamw' else 'AdamW'}"
    ips = c["images_per_s"]
    out.append(f"| {label} | {_g(ips['jaxcl'])} | {_g(ips['pytorch'])} | {c['jaxcl_over_pytorch']:.2f} | "
               f"{c['step_over_fwd_bwd']:.2f} | {100 * c['augment_fraction']:.1f}% |")
  return "\n".join(out)


def batch_scaling(record: dict) -> str:
  rows = {(r["batch"], r["grad_cache_chunks"]): r for r in record["rows"]}
  chunks = max(k for _, k in rows)
  out = [f"| batch | plain step | gradient caching, {chunks} chunks | caching / plain time | "
         "plain / caching temporary memory |", "|---|---|---|---:|---:|"]

  def cell(r):
    return f"{r['temp_bytes'] / 1e6:.1f} MB, {r['step_s']:.3f} s ({r['images_per_s']:,.0f} img/s)"

  for batch in sorted({b for b, _ in rows}):
    plain, cached = rows.get((batch, 0)), rows.get((batch, chunks))
    if plain and cached:
      out.append(f"| {batch} | {cell(plain)} | {cell(cached)} | {cached['step_s'] / plain['step_s']:.2f}x | "
                 f"{plain['temp_bytes'] / cached['temp_bytes']:.2f}x |")
  return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# name -> (results file, table from its record)

def _module_tables(module, key: Callable[[str], str]) -> Callable[[str], Callable[[dict], str]]:
  return lambda name: lambda record: _by_heading(module.table(record), key)[name]


_methods = _module_tables(methods, lambda h: h)
_sweeps = _module_tables(sweeps, lambda h: h)
_ml = _module_tables(metric_learning, _ml_key)


def _online_probe(index: int) -> Callable[[dict], str]:
  return lambda record: _blocks(online_probe.table(record))[index][1]


TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "default_job": ("default_job.json", _default_job("Test")),
    "default_job.selection": ("default_job.json", _default_job("Selection")),
    "methods.digits": ("methods.json", _methods("digits")),
    "methods.animal_shapes": ("methods.json", _methods("animal_shapes")),
    "sweeps.batch": ("sweeps.json", _sweeps("batch")),
    "sweeps.temperature": ("sweeps.json", _sweeps("temperature")),
    "metric_learning.validation": ("metric_learning.json", _ml("validation")),
    "metric_learning.digits.mean": ("metric_learning.json", _ml("digits.mean")),
    "metric_learning.digits.flatten": ("metric_learning.json", _ml("digits.flatten")),
    "metric_learning.animal_shapes.mean": ("metric_learning.json", _ml("animal_shapes.mean")),
    "metric_learning.animal_shapes.flatten": ("metric_learning.json", _ml("animal_shapes.flatten")),
    "cpc": ("cpc.json", cpc.table),
    "retrieval": ("retrieval.json", retrieval.table),
    "online_probe.cost": ("online_probe.json", _online_probe(0)),
    "online_probe.gap": ("online_probe.json", _online_probe(1)),
    "fsdp_memory": ("fsdp_memory.json", fsdp_memory.table),
    "loss_scaling": ("loss_scaling.json", loss_scaling),
    "loss_scaling.goals": ("loss_scaling.json", loss_scaling_goals),
    "loss_scaling.limit": ("loss_scaling_limit.json", loss_scaling_limit),
    "augment_throughput": ("augment_throughput.json", augment_throughput),
    "input_pipeline": ("input_pipeline.json", input_pipeline),
    "eval_scaling": ("eval_scaling.json", eval_scaling),
    "eval_scaling.end_to_end": ("eval_scaling.json", eval_end_to_end),
    "eval_scaling.phases": ("eval_scaling.json", eval_phases),
    "eval_scaling.estimate": ("eval_scaling.json", eval_estimate),
    "step_vs_pytorch": ("step_vs_pytorch.json", step_vs_pytorch),
    "batch_scaling": ("batch_scaling.json", batch_scaling),
}


def render(name: str, results: str = RESULTS) -> str | None:
  """The table ``name`` from its JSON under ``results``; None when that file does not exist yet."""
  if name not in TABLES:
    raise KeyError(f"unknown table {name!r} in a <!-- table: ... --> block; known: {', '.join(TABLES)}")
  filename, make = TABLES[name]
  path = os.path.join(results, filename)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return make(json.load(f)).strip() + "\n"


def documents(root: str = ROOT) -> list[str]:
  """README.md and every page of the manual."""
  return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "**", "*.md"),
                                                              recursive=True))


def rewrite(text: str, results: str = RESULTS) -> str:
  """``text`` with every marked block replaced by its generated table (blocks without JSON kept)."""

  def replace(match):
    table = render(match["name"], results)
    if table is None:
      if NOT_GENERATED not in match["body"]:
        raise ValueError(f"block {match['name']!r}: {TABLES[match['name']][0]} does not exist; mark the "
                         f"block '{NOT_GENERATED}: ...' or run its benchmark")
      return match.group(0)
    return match.group(1) + table + match.group(4)

  return BLOCK.sub(replace, text)


def stale(root: str = ROOT, results: str = RESULTS) -> list[str]:
  """``path: name`` of every block that differs from what its JSON gives."""
  out = []
  for path in documents(root):
    text = open(path, encoding="utf-8").read()
    for match in BLOCK.finditer(text):
      if rewrite(match.group(0), results) != match.group(0):
        out.append(f"{os.path.relpath(path, root)}: {match['name']}")
  return out


def write_readme(root: str = ROOT, results: str = RESULTS) -> list[str]:
  """Rewrites the marked blocks of README.md and docs/*.md in place; returns the files changed."""
  changed = []
  for path in documents(root):
    text = open(path, encoding="utf-8").read()
    new = rewrite(text, results)
    if new != text:
      with open(path, "w", encoding="utf-8") as f:
        f.write(new)
      changed.append(os.path.relpath(path, root))
  return changed


def write_index(results: str = RESULTS) -> str:
  """``index.html``: every table of ``TABLES`` whose JSON exists, and every PNG."""
  from jaxcl import report  # pylint: disable=g-import-not-at-top

  tables = {}
  for name in TABLES:
    table = render(name, results)
    if table is not None:
      tables[name] = table
  pictures = [(png, os.path.splitext(os.path.basename(png))[0])
              for png in sorted(glob.glob(os.path.join(results, "*.png"))) if "_quick" not in png]
  return report.write_page(os.path.join(results, "index.html"), title="jaxcl benchmarks",
                           facts={"source": "benchmarks/*.py; numbers in benchmarks/results/*.json; "
                                            "made by python benchmarks/report.py"},
                           tables=tables, pictures=pictures)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--readme", action="store_true", help="rewrite the marked blocks of README.md, docs/")
  p.add_argument("--check", action="store_true", help="exit 1 if a marked block differs from its JSON")
  p.add_argument("--list", action="store_true", help="print the table names")
  args = p.parse_args(argv)
  if args.list:
    print("\n".join(TABLES))
  elif args.check:
    out = stale()
    print("\n".join(out) or "every block matches its JSON")
    sys.exit(1 if out else 0)
  elif args.readme:
    print("\n".join(write_readme()) or "no block changed")
  else:
    print(write_index())


if __name__ == "__main__":
  main()
