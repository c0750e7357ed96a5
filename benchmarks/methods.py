r"""Every method and every loss, trained on two real datasets over seeds, against the run's baselines.

  python benchmarks/methods.py            # the whole table, resumable (reruns skip finished cells)
  python benchmarks/methods.py --quick    # one seed of four cells on digits, 80 steps (minutes)
  python benchmarks/methods.py --table    # only rebuild the table and the PNG from the JSON

Rows: each of the 12 image methods through its own config (``configs/<method>_digits.py``), DINO on a ViT
(``configs/dino_vit_digits.py``), and each loss of
``jaxcl.losses.TWO_VIEW_LOSSES`` other than NT-Xent through SimCLR's two-view setup (``method.loss``;
the losses that read labels get class-balanced batches, ``data.examples_per_class``). Datasets: the
UCI digits and Animal-Shape (animal silhouettes, a different kind of image), both shipped in installed
packages. A cell is one (dataset, row, seed): ``jaxcl train`` in a fresh process, then its
``results.json``; every finished cell is written to the JSON at once, so a kill loses one cell at
most. The SimCLR row's cells also evaluate the baselines of that (dataset, seed): the same encoder at
its random initialisation, and raw pixels. Columns: kNN at k=20 and k=200, the linear probe (its L2
strength chosen on a validation split of the train set, never on test), the online probe, training
wall time; mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _subprocess  # noqa: E402  (the fresh-process jaxcl train runner)

DATASETS = ("digits", "animal_shapes")
SEEDS = (0, 1, 2)
METHODS = ("simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "supcon",
           "clip", "siglip", "dino", "ijepa")
# Loss rows: SimCLR's setup with method.loss = name and these hyperparameters (the margin losses see
# L2-normalised embeddings, so their margins are distances on the unit sphere: FaceNet's 0.2).
LOSSES = {
    "info_nce": {}, "clip_loss": {}, "sigmoid_loss": {}, "dcl": {}, "hard_negative_nt_xent": {},
    "barlow_twins": {}, "vicreg": {}, "supcon": {},
    "triplet_margin": {"margin": 0.2}, "contrastive_margin": {"margin": 0.5},
    "batch_hard_triplet": {"margin": 0.2}, "batch_semi_hard_triplet": {"margin": 0.2},
}
LABELLED = ("supcon", "triplet_margin", "contrastive_margin", "batch_hard_triplet",
            "batch_semi_hard_triplet")
# Global batch 256 of 10 classes: 8 classes x 32 examples.
EXAMPLES_PER_CLASS = 32
QUICK_ROWS = ("simclr", "byol", "loss:dcl", "loss:batch_hard_triplet")
OUT = os.path.join(ROOT, "benchmarks", "results", "methods.json")
METRICS = ("knn", "knn_k200", "linear", "online_probe")


# Multi-crop rows: the method's config plus MULTI_CROP_LOCAL local views (14 px next to the 32 px
# global ones), one encoder pass per resolution.
MULTI_CROP = ("simclr", "byol", "dino")
MULTI_CROP_LOCAL = 4


# Other encoders: ``configs/<row>_digits.py`` (DINO on the ViT that I-JEPA trains).
ENCODER_ROWS = ("dino_vit",)


# The tables were measured with the 3-layer SmallCNN (32-64-128, strides 2-2-2) that every digits
# config had until the default job moved to 4 layers (configs/simclr_digits.py). Its cells keep it,
# so that what is recorded reproduces and a resumed run stays consistent, until all are re-measured.
TABLE_ENCODER = ("--config.model.widths=(32, 64, 128)", "--config.model.strides=(2, 2, 2)")


def table_encoder(config: str) -> list[str]:
  """``TABLE_ENCODER`` for a SmallCNN config file (``path[:arg]``), nothing for another encoder."""
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top

  path, _, arg = config.partition(":")
  small_cnn = experiment.load_config_file(path, arg or None).model.name == "small_cnn"
  return list(TABLE_ENCODER) if small_cnn else []


def rows() -> list[str]:
  return (list(METHODS) + [f"loss:{name}" for name in LOSSES]
          + [f"{name}+multicrop" for name in MULTI_CROP] + list(ENCODER_ROWS))


COMMON_FLAGS = ("--config.train.checkpoint_every=0", "--config.train.export_encoder=False",
                "--config.train.progress=False", "--config.eval.embedding_map=False",
                "--config.eval.knn_k=20", "--config.eval.knn_extra_k=200")


def overrides(dataset: str, row: str, seed: int, steps: int | None) -> tuple[str, list[str]]:
  """The config file and the ``--config.*`` flags of one cell."""
  method = "simclr" if row.startswith("loss:") else row.removesuffix("+multicrop")
  flags = [f"--config.seed={seed}", *COMMON_FLAGS, f"--config.eval.baselines={row == 'simclr'}"]
  if steps:
    flags.append(f"--config.steps={steps}")
  if dataset != "digits":
    # Stored at 28 px, resized to the configs' 32 on the host; mirrored animals are still animals.
    flags += [f"--config.data.name={dataset}", "--config.augment.flip_prob=0.5"]
  if row.endswith("+multicrop"):
    flags.append(f"--config.augment.num_local={MULTI_CROP_LOCAL}")
  if row.startswith("loss:"):
    name = row.split(":", 1)[1]
    flags += [f"--config.method.loss={name}",
              f"--config.method.loss_kwargs={json.dumps(LOSSES[name])}"]
    if name in LABELLED:
      flags.append(f"--config.data.examples_per_class={EXAMPLES_PER_CLASS}")
  config = os.path.join(ROOT, "configs", f"{method}_digits.py")
  return config, flags + table_encoder(config)


def run_cell(config: str, flags: list[str], workdir: str) -> dict:
  """``jaxcl train`` of one cell in a fresh process; its metrics, or the error's last lines."""
  run = _subprocess.jaxcl_train(config, flags, workdir)
  if not run["ok"]:
    return run
  res, wall = run["results"], run["wall_s"]
  out = {"ok": True, "wall_s": round(wall, 1), "eval_s": res.get("eval_seconds", {}).get("total"),
         "steps": res.get("step"), "final_loss": res.get("loss")}
  for key in METRICS:
    if key in res:
      out[key] = res[key]
  for base in ("random_init", "raw_pixels"):
    if base in res:
      out[base] = {k: v for k, v in res[base].items() if k in METRICS}
  out["train_s"] = round(wall - (out["eval_s"] or 0.0), 1)
  return out


def load(path: str) -> dict:
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {"cells": {}}


def save(record: dict, path: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def run_cells(cells, path: str) -> dict:
  """Runs ``(key, config, flags, workdir)`` cells not finished in ``path``'s JSON, saving each."""
  record = load(path)
  for key, config, flags, workdir in cells:
    if record["cells"].get(key, {}).get("ok"):
      continue
    cell = run_cell(config, flags, workdir)
    record["cells"][key] = cell
    save(record, path)
    state = (f"kNN {100 * cell['knn']:.1f}% linear {100 * cell.get('linear', 0):.1f}% "
             f"train {cell['train_s']:.0f}s" if cell["ok"] else "FAILED: " + cell["error"])
    print(f"{key}: {state}", flush=True)
  return record


def last_metric(workdir: str, key: str) -> float | None:
  """The last value of ``key`` a run logged to ``metrics.jsonl``."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    values = [r[key] for r in map(json.loads, f) if key in r]
  return values[-1] if values else None


def stat(values: list[float]) -> str:
  if not values:
    return "-"
  mean = 100 * statistics.fmean(values)
  if len(values) == 1:
    return f"{mean:.1f}"
  return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def summary(record: dict) -> dict:
  """``{dataset: {row: {metric: [values over seeds]}}}`` of the finished cells, baselines included."""
  out: dict = {}
  for key, cell in record["cells"].items():
    if not cell.get("ok"):
      continue
    dataset, row, _ = key.split("/")
    per_row = out.setdefault(dataset, {})
    for name, metrics in ((row, cell), ("random init", cell.get("random_init")),
                          ("raw pixels", cell.get("raw_pixels"))):
      if not metrics:
        continue
      slot = per_row.setdefault(name, {})
      for m in (*METRICS, "train_s"):
        if m in metrics:
          slot.setdefault(m, []).append(metrics[m])
  return out


def table(record: dict) -> str:
  lines = []
  for dataset, per_row in summary(record).items():
    base = per_row.get("raw pixels", {}), per_row.get("random init", {})
    lines += [f"\n**{dataset}** (mean ± std over seeds, %; ✓: beats raw pixels on linear and random "
              "init on kNN k=20)\n",
              "| row | seeds | kNN k=20 | kNN k=200 | linear | online probe | train s | beats |",
              "|---|---:|---:|---:|---:|---:|---:|:---:|"]
    order = ["raw pixels", "random init"] + [r for r in rows() if r in per_row]
    for row in order:
      m = per_row.get(row)
      if not m:
        continue
      beats = ""
      if row not in ("raw pixels", "random init") and base[0].get("linear") and base[1].get("knn"):
        beats = "✓" if (statistics.fmean(m["linear"]) > statistics.fmean(base[0]["linear"])
                        and statistics.fmean(m["knn"]) > statistics.fmean(base[1]["knn"])) else "✗"
      seeds = len(m.get("knn", []))
      train = f"{statistics.fmean(m['train_s']):.0f}" if m.get("train_s") else "-"
      lines.append(f"| {row} | {seeds} | {stat(m.get('knn', []))} | {stat(m.get('knn_k200', []))} "
                   f"| {stat(m.get('linear', []))} | {stat(m.get('online_probe', []))} | {train} "
                   f"| {beats} |")
  failed = [k for k, c in record["cells"].items() if not c.get("ok")]
  if failed:
    lines.append(f"\nFailed cells: {', '.join(failed)}")
  return "\n".join(lines)


def plot(record: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = summary(record)
  fig, axes = plt.subplots(len(data), 1, figsize=(14, 4.5 * len(data)), squeeze=False)
  for ax, (dataset, per_row) in zip(axes[:, 0], data.items()):
    names = [r for r in rows() if r in per_row]
    for offset, (metric, colour) in enumerate((("linear", "tab:blue"), ("knn", "tab:orange"))):
      means = [100 * statistics.fmean(per_row[r].get(metric, [0])) for r in names]
      errs = [100 * statistics.stdev(per_row[r][metric]) if len(per_row[r].get(metric, [])) > 1
              else 0 for r in names]
      ax.bar([i + 0.4 * offset for i in range(len(names))], means, 0.4, yerr=errs, color=colour,
             label=f"{metric} (pretrained)", capsize=2)
    for base, style in (("raw pixels", "--"), ("random init", ":")):
      for metric, colour in (("linear", "tab:blue"), ("knn", "tab:orange")):
        values = per_row.get(base, {}).get(metric)
        if values:
          ax.axhline(100 * statistics.fmean(values), color=colour, linestyle=style,
                     label=f"{metric}: {base}")
    ax.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=45, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: every method and loss (bars: mean ± std over seeds)", pad=26)
    lows = [100 * min(v) for r in per_row.values() for k, v in r.items() if k in ("linear", "knn")]
    ax.set_ylim(max(0, min(lows, default=0) - 5), 100)
    ax.legend(fontsize=7, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.0))  # above the bars
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--quick", action="store_true", help="one seed, four cells, digits, 80 steps")
  parser.add_argument("--table", action="store_true", help="only print the table, write the PNG")
  parser.add_argument("--datasets", default=",".join(DATASETS))
  parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
  parser.add_argument("--rows", default="", help="comma-separated subset of rows (default: all)")
  parser.add_argument("--workroot", default=os.path.join(ROOT, "runs", "bench_methods"))
  args = parser.parse_args()
  global OUT
  steps = None
  if args.quick:
    OUT = OUT.replace(".json", "_quick.json")
    datasets, seeds, selected, steps = ("digits",), (0,), list(QUICK_ROWS), 80
  else:
    datasets = tuple(args.datasets.split(","))
    seeds = tuple(int(s) for s in args.seeds.split(","))
    selected = args.rows.split(",") if args.rows else rows()
  # Seed-major, so a partial run already has every row once.
  cells = [(f"{dataset}/{row}/{seed}", *overrides(dataset, row, seed, steps),
            os.path.join(args.workroot, dataset, row.replace(":", "_"), f"seed{seed}"))
           for seed in seeds for dataset in datasets for row in selected]
  record = load(OUT) if args.table else run_cells(cells, OUT)
  print(table(record))
  plot(record, OUT.replace(".json", ".png"))


if __name__ == "__main__":
  main()
