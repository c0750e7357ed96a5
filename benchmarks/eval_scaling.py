"""Cost of evaluation as the train set grows: kNN and the linear probe, old protocol vs new.

Synthetic features (10 Gaussian class clusters; only the cost is measured, the accuracy is printed
as a sanity check), n train rows in {1k, 10k, 60k}, d in {128, 2048}, test rows = min(n / 6, 10k).
Each cell runs in a fresh process (peak RSS is per process) and is written to the JSON as soon as it
finishes; a rerun skips finished cells, so the benchmark can be run in pieces under a time budget.

* ``knn``: ``knn_accuracy`` (k=200, test set in chunks, one device: the path is the same old and new).
* ``probe_old``: the k-fold protocol at every size (``cv_max_examples`` = inf: 6 L2 x 5 folds + refit,
  full-batch L-BFGS on standardised features).
* ``probe_new``: the default protocol (k-fold up to 5,000 rows, above it one stratified 10% validation
  split, early-stopped warm-started grid, chunked objective).

1.28M x 2048 is not run on a 2-core CPU: its memory is estimated from the compiled programs
(``memory_analysis``) plus the feature arrays (``--estimate``).

  python benchmarks/eval_scaling.py --budget-s 300 --cell-timeout-s 150
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _subprocess  # noqa: E402

NS = (1000, 10000, 60000)
DS = (128, 2048)
TASKS = ("knn", "probe_new", "probe_old")


def _features(n, d, seed):
  import numpy as np

  rng = np.random.default_rng(seed)
  centers = np.random.default_rng(123).normal(size=(10, d)).astype(np.float32)
  y = rng.integers(0, 10, size=n).astype(np.int32)
  return rng.normal(size=(n, d)).astype(np.float32) * 4.0 + centers[y], y


def _child(cell: dict) -> dict:
  from jaxcl import evaluate

  n, d, task = cell["n"], cell["d"], cell["task"]
  x, y = _features(n, d, 0)
  xt, yt = _features(min(n // 6, 10000), d, 1)
  _subprocess.reset_peak_rss()
  base = _subprocess.rss_bytes()
  t0 = time.perf_counter()
  if task == "knn":
    acc = evaluate.knn_accuracy(x, y, xt, yt, k=200, temperature=0.1)
  else:
    kw = {"cv_max_examples": 10**12} if task == "probe_old" else {}
    probe = evaluate.fit_linear_probe(x, y, **kw)
    acc = probe.accuracy(xt, yt)
  seconds = time.perf_counter() - t0
  return {"ok": True, "seconds": round(seconds, 2), "accuracy": round(float(acc), 4),
          "peak_rss_gb": round(_subprocess.peak_rss_bytes() / 2**30, 3),
          "peak_above_inputs_gb": round((_subprocess.peak_rss_bytes() - base) / 2**30, 3)}


def _estimate(n: int, d: int, classes: int = 1000) -> dict:
  """Compiled memory of the new probe's chunked solver and one kNN chunk at n x d (nothing runs)."""
  import jax
  import jax.numpy as jnp

  from jaxcl.evaluate import knn, linear

  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)  # noqa: E731
  params = {"w": f32(d, classes), "b": f32(classes)}
  probe = linear._fit_softmax_regression_chunked.lower(  # pylint: disable=protected-access
      f32(n, d), i32(n), f32(n), f32(d), f32(d), f32(), f32(), params, max_iter=1000,
      chunk=linear.CHUNK_ROWS).compile().memory_analysis()
  chunk = max(1, min(1024, knn._KNN_BLOCK_ELEMENTS // n))  # pylint: disable=protected-access
  knn_mem = knn._knn_predict_chunk.lower(  # pylint: disable=protected-access
      f32(n, d), i32(n), f32(chunk, d), f32(), k=200, num_classes=classes).compile().memory_analysis()
  gb = lambda b: round(b / 2**30, 2)  # noqa: E731
  feats = n * d * 4
  return {"n": n, "d": d, "classes": classes, "features_gb": gb(feats),
          "probe_temp_gb": gb(probe.temp_size_in_bytes), "knn_chunk_rows": chunk,
          "knn_temp_gb": gb(knn_mem.temp_size_in_bytes),
          # host features + device copy + standardisation stats/weights + compiled temporaries
          "probe_total_gb": gb(2 * feats + probe.temp_size_in_bytes + 3 * d * classes * 4),
          "knn_total_gb": gb(2 * feats + knn_mem.temp_size_in_bytes)}


def _plot(results: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(DS), figsize=(10, 4), sharey=True)
  for ax, d in zip(axes, DS):
    for task in TASKS:
      pts = [(c["n"], c["seconds"]) for c in results["cells"].values()
             if c.get("ok") and c["d"] == d and c["task"] == task]
      if pts:
        ax.plot(*zip(*sorted(pts)), marker="o", label=task)
    ax.set(xscale="log", yscale="log", xlabel="train rows n", title=f"d = {d}")
    ax.grid(True, alpha=0.3)
  axes[0].set_ylabel("seconds (2-core CPU)")
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--child", help=argparse.SUPPRESS)
  p.add_argument("--budget-s", type=float, default=300.0, help="stop starting cells after this")
  p.add_argument("--cell-timeout-s", type=float, default=150.0)
  p.add_argument("--estimate", action="store_true", help="also estimate 1.28M x 2048 memory")
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "eval_scaling"))
  args = p.parse_args(argv)
  if args.child:
    cell = json.loads(args.child)
    out = _estimate(cell["n"], cell["d"]) if cell.get("estimate") else _child(cell)
    print(json.dumps(out))
    return
  path = args.out + ".json"
  results = json.load(open(path)) if os.path.exists(path) else {"cells": {}}
  results["command"] = "python benchmarks/eval_scaling.py " + " ".join(argv or sys.argv[1:])
  start = time.perf_counter()

  def save():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(results, f, indent=2)

  cells = [{"n": n, "d": d, "task": t} for d in DS for n in NS for t in TASKS]  # d=128 first
  for cell in cells:
    key = f"{cell['task']}/n={cell['n']}/d={cell['d']}"
    done = results["cells"].get(key)
    if done is not None and (done.get("ok") or "timeout" in done.get("error", "")):
      continue  # finished (or known to exceed the cell timeout) in an earlier run
    if time.perf_counter() - start > args.budget_s:
      print(f"budget spent; {key} and later cells left for a rerun", flush=True)
      break
    rec = _subprocess.run_child(__file__, cell, timeout_s=args.cell_timeout_s)
    results["cells"][key] = {**cell, **rec}
    print(key, rec, flush=True)
    save()
  if args.estimate and "estimate_1.28M_x_2048" not in results:
    rec = _subprocess.run_child(__file__, {"estimate": True, "n": 1_281_167, "d": 2048},
                                timeout_s=args.cell_timeout_s)
    results["estimate_1.28M_x_2048"] = rec
    print("estimate", rec, flush=True)
    save()
  _plot(results, args.out + ".png")


if __name__ == "__main__":
  main()
