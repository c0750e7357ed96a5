r"""The text-retrieval ablation on ``stdlib_code``: in-batch negatives, + mined hard negatives, + false-
negative filtering, and the global batch size, over seeds, against BM25 and the random-init towers.

  python benchmarks/retrieval.py             # every cell, 3 seeds (about 1 hour on 2 cores)
  python benchmarks/retrieval.py --table     # the README table (and the PNG) from the JSON
  python benchmarks/retrieval.py --rows in-batch,mined --seeds 0
  python benchmarks/retrieval.py --smoke     # in-batch and mined, smoke config, temporary --out

Rows (each scored on the 442 test queries against all 4,161 documents):

* ``in-batch``: ``configs/retrieval_stdlib_code.py`` as is (600 steps at batch 128, in-batch
  negatives only): the default job; its wall time is the "under 15 minutes" target.
* ``in-batch +300``: that model trained 300 more steps, still in-batch only (the compute control).
* ``mined``: that model mines 4 hard negatives per training query (``jaxcl mine --margin 0``: the
  top-ranked non-positives, nothing filtered), then trains 300 more steps with them (ANCE's
  stage 2: Xiong et al. 2021).
* ``mined+filter``: the same, mining with the positive-aware false-negative filter (``--margin
  0.95``: candidates scoring above 95% of the positive dropped; Moreira et al. 2024).
* ``bm25-mined``: the same stage 2 with BM25's top non-positive documents as the 4 negatives
  (``jaxcl mine --by bm25 --margin 0``: DPR's negatives, Karpukhin et al. 2020).
* ``batch B``: the default job at global batch B in {64, 256, 512, 1024} for the same number of
  epochs (76,800 pairs: 600 steps at 128), so a larger batch sees more negatives per query, not
  more data.

Each cell is ``jaxcl train`` in a fresh process; results go to ``benchmarks/results/retrieval.json``
as each finishes and a rerun skips finished cells. Stage-2 cells start from their seed's ``in-batch``
checkpoint (``train.init_checkpoint``; its tokenizer comes with it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)
import methods  # noqa: E402  (run_cell, load / save / stat)

OUT = os.path.join(methods.ROOT, "benchmarks", "results", "retrieval.json")
CONFIG = os.path.join(methods.ROOT, "configs", "retrieval_stdlib_code.py")
SEEDS = (0, 1, 2)
WORK = os.path.join("/tmp", "jaxcl_retrieval")
NEGATIVES, EXTRA_STEPS, PAIRS_SEEN = 4, 300, 600 * 128
BATCHES = (64, 256, 512, 1024)
ROWS = ("in-batch", "in-batch +300", "mined", "mined+filter", "bm25-mined",
        *(f"batch {b}" for b in BATCHES))
METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")
COMMON = ("--config.train.export_encoder=False", "--config.train.progress=False")
MINED = "bench_retrieval_mined"  # prefix of the mined datasets' names
# --smoke: the smoke config, evaluated on 50 queries, 2 stage-2 steps; its own datasets and runs.
SMOKE_FLAGS = ("--config.eval.final=True", "--config.eval.max_test_examples=50")


def _workdir(row: str, seed: int) -> str:
  return os.path.join(WORK, row.replace(" ", "_").replace("+", "plus"), str(seed))


def _mine(seed: int, margin: float, by: str = "model") -> tuple[str, float]:
  """Mines with the seed's in-batch model (or BM25) into a fresh dataset; (its name, seconds)."""
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  name = (f"{MINED}_s{seed}_{'filtered' if margin else 'all'}" if by == "model"
          else f"{MINED}_bm25")  # BM25's negatives do not depend on the seed
  shutil.rmtree(os.path.join(data.default_data_dir(), name), ignore_errors=True)
  started = time.time()
  cmd = [sys.executable, "-m", "jaxcl", "mine", "--workdir", _workdir("in-batch", seed), "--name", name,
         "--num_negatives", str(NEGATIVES), "--margin", str(margin), "--by", by]
  proc = subprocess.run(cmd, cwd=methods.ROOT, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"mining failed: {proc.stderr.strip().splitlines()[-1:]}")
  return name, round(time.time() - started, 1)


def cell_flags(row: str, seed: int) -> tuple[list[str], dict]:
  """The ``--config.*`` flags of one cell (mining first where the row needs it) and extra facts."""
  flags = [f"--config.seed={seed}", *COMMON]
  facts: dict = {}
  if row == "in-batch":
    return flags, facts
  if row.startswith("batch "):
    batch = int(row.split()[1])
    return flags + [f"--config.batch_size={batch}", f"--config.steps={PAIRS_SEEN // batch}",
                    "--config.eval.baselines=False"], facts
  flags += [f"--config.steps={EXTRA_STEPS}", "--config.eval.baselines=False",
            f"--config.train.init_checkpoint={os.path.join(_workdir('in-batch', seed), 'checkpoints')}"]
  if "mined" in row:
    name, seconds = _mine(seed, 0.95 if row.endswith("filter") else 0.0,
                          "bm25" if row.startswith("bm25") else "model")
    facts["mine_s"] = seconds
    flags += [f"--config.data.name={name}", f"--config.method.num_negatives={NEGATIVES}"]
  return flags, facts


def run(rows, seeds, path: str) -> dict:
  record = methods.load(path)
  # Row by row over the seeds: the ablation's rows have every seed before the batch sweep starts.
  for row in rows:
    for seed in seeds:
      key = f"{row}/{seed}"
      if record["cells"].get(key, {}).get("ok"):
        continue
      if row != "in-batch" and not row.startswith("batch ") and not record["cells"].get(
          f"in-batch/{seed}", {}).get("ok"):
        print(key, "skipped: needs in-batch", flush=True)
        continue
      try:
        flags, facts = cell_flags(row, seed)
      except RuntimeError as err:
        record["cells"][key] = {"ok": False, "error": str(err)}
        methods.save(record, path)
        continue
      workdir = _workdir(row, seed)
      cell = methods.run_cell(CONFIG, flags, workdir)
      if cell.get("ok"):
        with open(os.path.join(workdir, "results.json")) as f:
          res = json.load(f)
        cell.update({k: res[k] for k in METRICS})
        for base in ("random_init", "bm25"):
          if base in res:
            cell[base] = {k: res[base][k] for k in METRICS}
      cell.update(facts)
      record["cells"][key] = cell
      methods.save(record, path)
      print(key, {k: cell.get(k) for k in ("ok", "ndcg@10", "train_s", "error") if k in cell},
            flush=True)
  return record


def _rows(record: dict) -> dict[str, list[dict]]:
  out: dict[str, list[dict]] = {}
  for key, cell in sorted(record["cells"].items()):
    if cell.get("ok"):
      out.setdefault(key.rsplit("/", 1)[0], []).append(cell)
  base = out.get("in-batch", [])
  for name, field in (("BM25 (bm25s)", "bm25"), ("random init", "random_init")):
    if any(field in c for c in base):
      out[name] = [c[field] for c in base if field in c]
  return out


def table(record: dict) -> str:
  rows = _rows(record)
  if not rows:
    return ""
  lines = ["| row | seeds | NDCG@10 | MRR@10 | R@1 | R@10 | R@100 | train s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for name in (*ROWS, "BM25 (bm25s)", "random init"):
    cells = rows.get(name)
    if not cells:
      continue
    train = [c["train_s"] for c in cells if c.get("train_s") is not None]
    seconds = f"{sum(train) / len(train):.0f}" if train else "-"
    lines.append(f"| {name} | {len(cells)} | "
                 + " | ".join(methods.stat([c[m] for c in cells]) for m in METRICS)
                 + f" | {seconds} |")
  return "\n".join(lines)


def plot(record: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = _rows(record)
  names = [n for n in (*ROWS, "random init") if n in rows]
  if not names:
    return
  means = [100 * np.mean([c["ndcg@10"] for c in rows[n]]) for n in names]
  stds = [100 * np.std([c["ndcg@10"] for c in rows[n]]) for n in names]
  fig, ax = plt.subplots(figsize=(10, 4))
  ax.bar(range(len(names)), means, yerr=stds, color="tab:blue", capsize=3)
  if "BM25 (bm25s)" in rows:
    ax.axhline(100 * np.mean([c["ndcg@10"] for c in rows["BM25 (bm25s)"]]), color="tab:red",
               linestyle="--", label="BM25")
    ax.legend()
  ax.set_xticks(range(len(names)), names, rotation=20)
  ax.set_ylabel("NDCG@10 (%), test queries")
  ax.set_title("stdlib_code: docstring -> code retrieval (mean ± std over seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--table", action="store_true", help="only print the table, write the PNG")
  parser.add_argument("--rows", default=",".join(ROWS))
  parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
  _cli.add_flags(parser, OUT)
  args = parser.parse_args()
  _cli.out_path(args, OUT)
  if args.fresh and not args.table:
    methods.save({"cells": {}}, args.out)
  if args.smoke:
    global CONFIG, WORK, EXTRA_STEPS, COMMON, MINED  # pylint: disable=global-statement
    CONFIG, WORK, EXTRA_STEPS = CONFIG + ":smoke", os.path.join(os.path.dirname(args.out), "runs"), 2
    COMMON, MINED = COMMON + SMOKE_FLAGS, "bench_smoke_retrieval_mined"
    args.rows, args.seeds = "in-batch,mined", "0"
  if not args.table:
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(rows) - set(ROWS)
    if unknown:
      parser.error(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
    run(rows, [int(s) for s in args.seeds.split(",")], args.out)
  record = methods.load(args.out)
  plot(record, args.out.replace(".json", ".png"))
  print(table(record))


if __name__ == "__main__":
  main()
