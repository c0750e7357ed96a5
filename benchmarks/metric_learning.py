r"""Metric learning on classes never seen in training: Recall@K, R-precision and MAP@R against the
random-init encoder and raw pixels, on digits and Animal-Shape, tuned on validation classes.

Protocol (Musgrave et al. 2020): the configs train on the first 5 classes and score retrieval over
every image of the other 5. Tuning never looks at those: ``--tune`` trains on classes 0-2 and scores
classes 3-4 (``data.validation_classes``), for each pooling of the encoder's last map, margin loss and
step budget of ``GRID``, one seed; the final runs then use, per dataset, the (pool, loss, steps) with the
best validation MAP@R, over 3 seeds, with the baselines of the same run.

  python benchmarks/metric_learning.py --tune     # 32 validation cells, ~40 min on 2 cores
  python benchmarks/metric_learning.py            # 6 final cells (2 datasets x 3 seeds), ~15 min
  python benchmarks/metric_learning.py --table    # the README table from the JSON
  python benchmarks/metric_learning.py --smoke    # one tuning and one final cell of the smoke config

Every cell is written to ``benchmarks/results/metric_learning.json`` as soon as it finishes and a rerun
skips finished cells.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _cli  # noqa: E402  (--out / --fresh / --smoke)
import _subprocess  # noqa: E402  (the fresh-process jaxcl train runner)
import methods  # noqa: E402  (load / save / stat shared with the methods benchmark)

OUT = os.path.join(ROOT, "benchmarks", "results", "metric_learning.json")
DATASETS = ("digits", "animal_shapes")
SEEDS = (0, 1, 2)
# "mean": SmallCNN's global average pool; "flatten": its last feature map as it is, which keeps where
# each feature fired (a random-init flattened encoder scores as raw pixels do on digits).
GRID = [(pool, loss, steps) for pool in ("mean", "flatten")
        for loss in ("batch_hard_triplet", "batch_semi_hard_triplet", "contrastive_margin",
                     "triplet_margin")
        for steps in (100, 300)]
SCORES = ("recall@1", "recall@2", "recall@4", "recall@8", "r_precision", "map@r")
REPS = ("pretrained", "random_init", "raw_pixels")
TITLES = {"r_precision": "R-precision", "map@r": "MAP@R"}
# --smoke: the smoke config (batch 16) in 2 classes x 8 examples, evaluated, one setup, one seed.
SMOKE_GRID = [("flatten", "batch_semi_hard_triplet", 2)]
SMOKE_FLAGS = ("--config.eval.final=True", "--config.data.examples_per_class=8")
QUIET = ("--config.train.checkpoint_every=0", "--config.train.export_encoder=False",
         "--config.train.progress=False", "--config.eval.embedding_map=False")


def _flags(pool: str, steps: int, seed: int, *, tune: bool) -> list[str]:
  flags = [f"--config.seed={seed}", f"--config.steps={steps}", f"--config.model.pool={pool}", *QUIET]
  if tune:  # classes 0-2 trained, 3-4 scored; 5-9 never read
    flags += ["--config.data.train_classes=3", "--config.data.validation_classes=2",
              "--config.eval.baselines=False", "--config.eval.linear_probe=False",
              "--config.eval.online_probe=False"]
  return flags


def run(dataset: str, setup: tuple[str, str, int], seed: int, *, tune: bool,
        smoke: bool = False) -> dict:
  pool, loss, steps = setup
  config = (os.path.join(ROOT, "configs", f"metric_learning_{dataset}.py")
            + f":{'smoke,' if smoke else ''}loss={loss}")
  workdir = os.path.join("/tmp", "jaxcl_metric_learning",
                         f"{dataset}_{pool}_{loss}_{steps}_{seed}_{tune}{'_smoke' if smoke else ''}")
  flags = _flags(pool, steps, seed, tune=tune) + list(SMOKE_FLAGS if smoke else ())
  run = _subprocess.jaxcl_train(config, flags, workdir)
  if not run["ok"]:
    return run
  res = run["results"]
  return {"ok": True, "wall_s": run["wall_s"], "pool": pool, "loss": loss, "steps": steps,
          "unseen_classes": res["unseen_classes"], "knn": res.get("knn"), "linear": res.get("linear")}


def best(record: dict, dataset: str) -> tuple[str, str, int]:
  """The (pool, loss, steps) of the best validation MAP@R on ``dataset``."""
  tuned = [c for k, c in record["cells"].items() if k.startswith(f"tune/{dataset}/") and c.get("ok")]
  if not tuned:
    raise SystemExit(f"no tuning cells for {dataset}: run with --tune first")
  top = max(tuned, key=lambda c: c["unseen_classes"]["pretrained"]["map@r"])
  return top["pool"], top["loss"], top["steps"]


def _key(stage: str, dataset: str, setup: tuple[str, str, int], seed: int | None = None) -> str:
  return "/".join([stage, dataset, *map(str, setup), *([] if seed is None else [str(seed)])])


def table(record: dict) -> str:
  out = []
  tuned = sorted(k for k in record["cells"] if k.startswith("tune/"))
  if tuned:
    out += ["**validation (train on classes 0-2, score 3-4; seed 0)**", "",
            "| dataset | pool | loss | steps | R@1 | MAP@R |", "|---|---|---|---:|---:|---:|"]
    for key in tuned:
      c = record["cells"][key]
      if c.get("ok"):
        p = c["unseen_classes"]["pretrained"]
        out.append(f"| {key.split('/')[1]} | {c['pool']} | {c['loss']} | {c['steps']} "
                   f"| {100 * p['recall@1']:.1f} | {100 * p['map@r']:.1f} |")
    out.append("")
  for dataset in DATASETS:
    setups = {}  # every final setup measured, the chosen one last
    for key, c in sorted(record["cells"].items()):
      if key.startswith(f"final/{dataset}/") and c.get("ok"):
        setups.setdefault((c["pool"], c["loss"], c["steps"]), []).append(c)
    chosen = best(record, dataset) if setups else None
    for (pool, loss, steps), cells in sorted(setups.items(), key=lambda kv: kv[0] == chosen):
      out += [f"**{dataset}: test (train on classes 0-4, score every image of 5-9; {pool} pool, {loss}, "
              f"{steps} steps; {len(cells)} seeds)**", "",
              "| representation | " + " | ".join(TITLES.get(s, s.replace("recall@", "R@"))
                                                  for s in SCORES) + " |",
              "|---|" + "---:|" * len(SCORES)]
      for rep in REPS:
        values = {s: [c["unseen_classes"][rep][s] for c in cells] for s in SCORES}
        out.append(f"| {rep.replace('_', ' ')} | " + " | ".join(methods.stat(values[s]) for s in SCORES)
                   + " |")
      out.append("")
  return "\n".join(out).strip()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tune", action="store_true", help="the validation grid (seed 0)")
  parser.add_argument("--table", action="store_true", help="print the README tables and exit")
  parser.add_argument("--datasets", default=",".join(DATASETS))
  _cli.add_flags(parser, OUT)
  args = parser.parse_args()
  _cli.out_path(args, OUT)
  record = _cli.load(args.out, args.fresh, {"cells": {}})
  if args.table:
    print(table(record))
    return
  grid, seeds, datasets = GRID, SEEDS, args.datasets.split(",")
  stages = (args.tune,)
  if args.smoke:  # both stages: tune, then the final cell of the best setup
    grid, seeds, datasets, stages = SMOKE_GRID, (0,), ["digits"], (True, False)
  for dataset, tune in [(d, t) for d in datasets for t in stages]:
    if tune:
      cells = [(_key("tune", dataset, setup), setup, 0) for setup in grid]
    else:
      setup = best(record, dataset)
      cells = [(_key("final", dataset, setup, seed), setup, seed) for seed in seeds]
    for key, setup, seed in cells:
      if record["cells"].get(key, {}).get("ok"):
        continue
      record["cells"][key] = run(dataset, setup, seed, tune=tune, smoke=args.smoke)
      methods.save(record, args.out)
      c = record["cells"][key]
      print(key, f"MAP@R {100 * c['unseen_classes']['pretrained']['map@r']:.1f}" if c["ok"]
            else c["error"], flush=True)
  print(table(record))


if __name__ == "__main__":
  main()
