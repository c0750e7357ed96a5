r"""SimCLR's two trends on digits, over seeds: the NT-Xent temperature, and the batch size at fixed epochs.

  python benchmarks/sweeps.py                 # both sweeps, 3 seeds, resumable cell by cell
  python benchmarks/sweeps.py --table         # only the table and the PNG from the JSON

* Temperature (SimCLR, Chen et al. 2020, Table 5: the optimum lies between the extremes): 0.05, 0.1,
  0.2, 0.5, 1.0 with the default job's everything else.
* Batch size at a fixed number of epochs (SimCLR Fig. 9: larger batches help, most when training is
  short): 64 ... 1024, each for ``--epochs`` passes over the 1,257 training digits (steps = epochs x
  1,257 / batch), learning rate scaled by sqrt(batch / 256) (SimCLR's appendix B.1 rule for short
  training), warm-up 10% of the steps.

Each cell is ``jaxcl train`` in a fresh process (``benchmarks/methods.py``'s runner); results go to
``benchmarks/results/sweeps.json`` as each cell finishes and ``sweeps.png``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import methods  # noqa: E402  (benchmarks/methods.py: the cell runner)

TEMPERATURES = (0.05, 0.1, 0.2, 0.5, 1.0)
BATCHES = (64, 128, 256, 512, 1024)
TRAIN_DIGITS = 1257
OUT = os.path.join(methods.ROOT, "benchmarks", "results", "sweeps.json")
CONFIG = os.path.join(methods.ROOT, "configs", "simclr_digits.py")


def cells(seeds, epochs: int, workroot: str):
  for seed in seeds:
    base = [f"--config.seed={seed}", *methods.COMMON_FLAGS, "--config.eval.baselines=False",
            *methods.TABLE_ENCODER]
    for t in TEMPERATURES:
      yield (f"temperature/{t}/{seed}", CONFIG, [*base, f"--config.method.temperature={t}"],
             os.path.join(workroot, f"temperature_{t}", f"seed{seed}"))
    for b in BATCHES:
      steps = max(1, round(epochs * TRAIN_DIGITS / b))
      yield (f"batch/{b}/{seed}", CONFIG,
             [*base, f"--config.batch_size={b}", f"--config.steps={steps}",
              "--config.optim.lr_scaling=sqrt", "--config.optim.base_batch_size=256",
              "--config.optim.warmup_steps=0", "--config.optim.warmup_fraction=0.1",
              f"--config.train.log_every={max(1, min(25, steps // 4))}"],
             os.path.join(workroot, f"batch_{b}", f"seed{seed}"))


def summary(record: dict) -> dict:
  """``{sweep: {value: {metric: [over seeds]}}}``."""
  out: dict = {}
  for key, cell in record["cells"].items():
    if cell.get("ok"):
      sweep, value, _ = key.split("/")
      slot = out.setdefault(sweep, {}).setdefault(float(value), {})
      for m in ("knn", "knn_k200", "linear"):
        slot.setdefault(m, []).append(cell[m])
  return out


def table(record: dict) -> str:
  lines = []
  for sweep, per_value in summary(record).items():
    lines += [f"\n**{sweep}** (digits, SimCLR; mean ± std over seeds, %)\n",
              f"| {sweep} | seeds | kNN k=20 | kNN k=200 | linear |", "|---:|---:|---:|---:|---:|"]
    for value in sorted(per_value):
      m = per_value[value]
      lines.append(f"| {value:g} | {len(m['knn'])} | {methods.stat(m['knn'])} | "
                   f"{methods.stat(m['knn_k200'])} | {methods.stat(m['linear'])} |")
  return "\n".join(lines)


def plot(record: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = summary(record)
  fig, axes = plt.subplots(1, max(1, len(data)), figsize=(6 * max(1, len(data)), 4), squeeze=False)
  for ax, (sweep, per_value) in zip(axes[0], sorted(data.items(), reverse=True)):
    xs = sorted(per_value)
    for metric in ("knn", "linear"):
      means = [100 * statistics.fmean(per_value[x][metric]) for x in xs]
      errs = [100 * statistics.stdev(per_value[x][metric]) if len(per_value[x][metric]) > 1 else 0
              for x in xs]
      ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=metric)
    ax.set_xscale("log", base=2 if sweep == "batch" else 10)
    ax.set_xlabel(sweep)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"SimCLR on digits: {sweep} sweep")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--table", action="store_true", help="only print the table, write the PNG")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--epochs", type=int, default=30, help="passes over the train set per batch size")
  parser.add_argument("--workroot", default=os.path.join(methods.ROOT, "runs", "bench_sweeps"))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  record = (methods.load(OUT) if args.table
            else methods.run_cells(cells(seeds, args.epochs, args.workroot), OUT))
  print(table(record))
  plot(record, OUT.replace(".json", ".png"))


if __name__ == "__main__":
  main()
