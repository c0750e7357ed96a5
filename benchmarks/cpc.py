r"""CPC on PLAID over seeds: kNN and linear probe of the pooled context vectors against the
random-init encoder and the raw signal of the same run.

  python benchmarks/cpc.py            # 3 seeds of configs/cpc_plaid.py, ~12 min on 2 cores
  python benchmarks/cpc.py --table    # the README table from the JSON
  python benchmarks/cpc.py --smoke    # one seed of the smoke config, evaluated, temporary --out

Each seed is ``jaxcl train`` in a fresh process (``benchmarks/methods.py``'s runner); results go to
``benchmarks/results/cpc.json`` as each finishes, and a rerun skips finished seeds.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)
import methods  # noqa: E402  (the cell runner, load / save / stat)

OUT = os.path.join(methods.ROOT, "benchmarks", "results", "cpc.json")
CONFIG = os.path.join(methods.ROOT, "configs", "cpc_plaid.py")
SEEDS = (0, 1, 2)
SMOKE_FLAGS = ("--config.eval.final=True", "--config.eval.max_train_examples=200",
               "--config.eval.max_test_examples=100")


def table(record: dict) -> str:
  cells = [c for c in record["cells"].values() if c.get("ok")]
  if not cells:
    return ""
  rows = [("cpc (pretrained)", cells), ("random init", [c["random_init"] for c in cells]),
          ("raw signal", [c["raw_pixels"] for c in cells])]
  lines = [f"| PLAID ({len(cells)} seeds) | kNN k=20 | linear probe | final future-prediction accuracy |",
           "|---|---:|---:|---:|"]
  for name, scores in rows:
    accuracy = (methods.stat([c["cpc_accuracy"] for c in cells]) if name.startswith("cpc") else "-")
    lines.append(f"| {name} | {methods.stat([s['knn'] for s in scores])} | "
                 f"{methods.stat([s['linear'] for s in scores])} | {accuracy} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--table", action="store_true")
  _cli.add_flags(parser, OUT)
  args = parser.parse_args()
  _cli.out_path(args, OUT)
  record = _cli.load(args.out, args.fresh, {"cells": {}})
  config, seeds, extra = CONFIG, SEEDS, []
  if args.smoke:
    config, seeds, extra = CONFIG + ":smoke", (0,), list(SMOKE_FLAGS)
  if not args.table:
    for seed in seeds:
      key = f"plaid/cpc/{seed}"
      if record["cells"].get(key, {}).get("ok"):
        continue
      flags = [f"--config.seed={seed}", *methods.COMMON_FLAGS[:4], *extra]
      workdir = os.path.join(os.path.dirname(args.out) if args.smoke else "/tmp", "jaxcl_cpc", str(seed))
      cell = methods.run_cell(config, flags, workdir)
      if cell.get("ok"):  # the last logged prediction accuracy of the run
        cell["cpc_accuracy"] = methods.last_metric(workdir, "cpc_accuracy")
      record["cells"][key] = cell
      methods.save(record, args.out)
      print(key, "ok" if cell.get("ok") else cell.get("error"), flush=True)
  print(table(record))


if __name__ == "__main__":
  main()
