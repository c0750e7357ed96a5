"""Cost of evaluation as the train set grows: kNN and the linear probe, old protocol vs new.

Synthetic features (10 Gaussian class clusters; only the cost is measured, the accuracy is printed
as a sanity check), n train rows in {1k, 10k, 60k}, d in {128, 2048}, test rows = min(n / 6, 10k).
Each cell runs in a fresh process (peak RSS is per process) and is written to the JSON as soon as it
finishes; a rerun skips finished cells, so the benchmark can be run in pieces under a time budget.

* ``knn``: ``knn_accuracy`` (k=200, test set in chunks, one device: the path is the same old and new).
* ``probe_old``: the k-fold protocol at every size (``cv_max_examples`` = inf: 6 L2 x 5 folds + refit,
  full-batch L-BFGS on standardised features).
* ``probe_new``: the default protocol (k-fold up to 5,000 rows; above it one stratified 10% validation
  split: up to 20,000 rows an early-stopped warm-started L-BFGS grid on a chunked objective, above
  that every L2 strength at once as a head of one mini-batch Adam run).

1.28M x 2048 (1,000 classes) is not run on a 2-core CPU (``--estimate``): its memory comes from the
compiled programs (``memory_analysis``) plus the feature arrays, its time from probe steps and kNN
chunks timed at the full width on 131,072 rows and scaled to the full size.

``--end-to-end`` runs only the real path instead (issue #22: the whole evaluation of the three
representations costs at most half the training time of the default job): the default job, README
command 1 (``configs/simclr_digits.py``, 300 steps at batch 256), trained and evaluated by
``python -m jaxcl train`` in a fresh process on a 60,000 / 10,000-image dataset (MNIST's sizes). No
dataset that large is offline, so ``bench_animal60k`` is made from the real Animal-Shape silhouettes
(``data.name="animal_shapes"``, 8,000 / 2,000 28x28 images): every image once, then seeded random
variants (shift by up to 3 px with zero padding, horizontal flip with probability 1/2) of the same
split's images up to the count. It is stored as a TFDS array_record dataset straight from the
arrays (the path ``jaxcl.data.prepare_folder`` takes, minus writing and decoding image files) in
``WORKROOT/data``, prepared once and reused. Stored at 28 px, it is resized to the config's 32 on the
host, as ``benchmarks/methods.py`` does for animal_shapes. Recorded: ``train_seconds`` and
``eval_seconds`` (per phase and total) from the run's results.json, eval / train, the run's peak RSS
and its accuracy table.

  python benchmarks/eval_scaling.py --budget-s 300 --cell-timeout-s 150
  python benchmarks/eval_scaling.py --end-to-end      # ~3 min on a quiet 2-core CPU (data prepared once)
  python benchmarks/eval_scaling.py --table           # the end-to-end table from the JSON, nothing run
  python benchmarks/eval_scaling.py --smoke           # the three tasks at 600 x 16, temporary --out
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)
import _subprocess  # noqa: E402

NS = (1000, 10000, 60000)
DS = (128, 2048)
TASKS = ("knn", "probe_new", "probe_old")
# --estimate: train rows and probe steps timed at the full width (see _estimate).
MEASURE_ROWS, MEASURE_STEPS = 131072, 8
# The end-to-end cell: MNIST's split sizes, made from Animal-Shape (8,000 / 2,000 images).
E2E_TRAIN, E2E_TEST = 60000, 10000
E2E_MAX_SHIFT = 3
E2E_CONFIG = os.path.join("configs", "simclr_digits.py")  # README command 1, relative to the repo root
REPRESENTATIONS = ("pretrained", "random init", "raw pixels")  # eval_seconds' phase prefixes
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "eval_scaling")  # .json, .png


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


def _estimate(n: int, d: int, classes: int = 1000, n_test: int = 50_000) -> dict:
  """Memory and time of kNN + the probe at n x d with ``classes`` classes (ImageNet's shape).

  Memory: the compiled programs' ``memory_analysis`` at the full shape (nothing that large runs).
  Time: measured at the full width on fewer rows, then scaled. A probe step reads ``batch_rows`` rows
  whatever n is, so its time is measured directly and multiplied by the steps of the default
  protocol (``epochs`` x 90% of n / batch). A kNN test chunk scans every train row, so its time is
  measured against ``MEASURE_ROWS`` train rows and scaled by n / MEASURE_ROWS and by the chunks of
  ``n_test`` queries (ImageNet's 50,000 validation images).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxcl.evaluate import knn, linear

  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)  # noqa: E731
  heads, batch, epochs = len(linear.DEFAULT_L2_GRID), 1024, 30
  steps = int(0.9 * n) // batch
  params = {"w": f32(heads, d, classes), "b": f32(heads, classes)}
  adam = linear._adam(0.03, epochs * steps)  # pylint: disable=protected-access
  opt_state = jax.eval_shape(adam.init, params)
  epoch_kw = dict(lr=0.03, total_steps=epochs * steps)
  probe = linear._minibatch_epoch.lower(  # pylint: disable=protected-access
      params, opt_state, f32(n, d), i32(n), f32(d), f32(d), f32(heads), i32(steps, batch),
      **epoch_kw).compile().memory_analysis()
  chunk = max(1, min(1024, knn._KNN_BLOCK_ELEMENTS // n))  # pylint: disable=protected-access
  knn_mem = knn._knn_predict_chunk.lower(  # pylint: disable=protected-access
      f32(n, d), i32(n), f32(chunk, d), f32(), k=200, num_classes=classes).compile().memory_analysis()

  rng = np.random.default_rng(0)
  rows = MEASURE_ROWS
  x = jnp.asarray(rng.normal(size=(rows, d)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, classes, size=rows).astype(np.int32))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  state = adam.init(zeros)
  const = (x, y, jnp.zeros(d), jnp.ones(d), jnp.full(heads, 1e-4))
  order = jnp.asarray(rng.integers(0, rows, size=(MEASURE_STEPS, batch)).astype(np.int32))
  run = lambda p, s: linear._minibatch_epoch(p, s, *const, order, **epoch_kw)  # noqa: E731
  zeros, state = jax.block_until_ready(run(zeros, state))  # compile
  t0 = time.perf_counter()
  jax.block_until_ready(run(zeros, state))
  step_s = (time.perf_counter() - t0) / MEASURE_STEPS
  queries = jnp.asarray(rng.normal(size=(chunk, d)).astype(np.float32))
  train_n = knn._l2_normalize(x)  # pylint: disable=protected-access
  score = lambda: knn._knn_predict_chunk(  # noqa: E731  pylint: disable=protected-access
      train_n, y, queries, jnp.float32(0.1), k=200, num_classes=classes)
  jax.block_until_ready(score())
  t0 = time.perf_counter()
  jax.block_until_ready(score())
  chunk_s = (time.perf_counter() - t0) * n / rows
  gb = lambda b: round(b / 2**30, 2)  # noqa: E731
  feats = n * d * 4
  return {"n": n, "d": d, "classes": classes, "n_test": n_test, "features_gb": gb(feats),
          "probe_temp_gb": gb(probe.temp_size_in_bytes), "knn_chunk_rows": chunk,
          "knn_temp_gb": gb(knn_mem.temp_size_in_bytes),
          # host features + device copy + weights/Adam moments + compiled temporaries
          "probe_total_gb": gb(2 * feats + probe.temp_size_in_bytes + 3 * heads * d * classes * 4),
          "knn_total_gb": gb(2 * feats + knn_mem.temp_size_in_bytes),
          "probe_step_s": round(step_s, 4), "probe_steps": epochs * steps,
          "probe_hours": round(step_s * epochs * steps / 3600, 2),
          "knn_chunk_s": round(chunk_s, 3), "knn_hours": round(chunk_s * -(-n_test // chunk) / 3600, 2)}


def _variants(images, labels, n: int, seed: int):
  """``n`` images: each of ``images`` once (n >= len), then random shifts/flips of them (NumPy).

  Which source image each row copies is a seeded permutation tiled to ``n``, so every image has
  n / len copies, +-1; below len it is a random subset. A variant is flipped left-right with
  probability 1/2 and shifted by (dy, dx) in [-3, 3]^2, zero-padded.
  """
  import numpy as np

  rng = np.random.default_rng(seed)
  m, side = len(images), images.shape[1]
  src = np.resize(rng.permutation(m), n)
  x, y = images[src].copy(), labels[src].copy()
  is_variant = np.arange(n) >= m
  flip = is_variant & (rng.random(n) < 0.5)
  shift = rng.integers(-E2E_MAX_SHIFT, E2E_MAX_SHIFT + 1, size=(n, 2)) * is_variant[:, None]
  x[flip] = x[flip][:, :, ::-1]
  pad = E2E_MAX_SHIFT
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  for dy in range(-pad, pad + 1):
    for dx in range(-pad, pad + 1):
      rows = (shift[:, 0] == dy) & (shift[:, 1] == dx)
      if dy or dx:
        x[rows] = padded[rows, pad + dy:pad + dy + side, pad + dx:pad + dx + side]
  return x, y


def _prepare_e2e_data(name: str, data_dir: str, n_train: int, n_test: int) -> float | None:
  """Stores the Animal-Shape variants as TFDS array_record dataset ``name`` in data_dir.

  Returns the seconds it took, or None when it was already prepared there.
  """
  import numpy as np
  import tensorflow_datasets as tfds

  from jaxcl import data
  from jaxcl.data import sources
  from jaxcl.data.builders import local

  cfg = data.default_config(name)
  cfg.data_dir = data_dir
  try:
    data.check_prepared(cfg)
    return None
  except (data.NotPreparedError, ValueError):
    pass
  t0 = time.perf_counter()
  source = data.default_config("animal_shapes")  # image_size None: the stored 28 px
  source.data_dir = data_dir  # its first-use preparation stays in the benchmark's folder too
  class_names = data.info(source).class_names
  splits = {}
  for index, (split, n) in enumerate((("train", n_train), ("test", n_test))):
    images, labels = data.load_arrays(source, split)
    splits[split] = _variants(images, labels, n, seed=index)
  side = splits["train"][0].shape[1]

  class BenchAnimals(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Animal-Shape plus shifted/flipped variants, stored as raw uint8 tensors."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"animal_shapes + variants to {n_train} / {n_test} (eval_scaling.py)."}
    code_path = None  # no checksums file (as jaxcl's own builders)

    def _info(self) -> tfds.core.DatasetInfo:
      return tfds.core.DatasetInfo(
          builder=self,
          description=f"Animal-Shape train/test images, each once, plus random shifts (<= "
                      f"{E2E_MAX_SHIFT} px) and flips of them up to {n_train} / {n_test} images.",
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Tensor(shape=(side, side, 1), dtype=np.uint8),
              "label": tfds.features.ClassLabel(names=class_names),
          }),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(*arrays) for split, arrays in splits.items()}

    def _generate_examples(self, images, labels):
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {"image": image, "label": int(label)}

  BenchAnimals.name = name
  sources._build_offline(BenchAnimals, data_dir)  # pylint: disable=protected-access
  return round(time.perf_counter() - t0, 2)


def _e2e_child(cell: dict) -> dict:
  """Prepares the dataset if needed, then ``python -m jaxcl train`` of the default job on it."""
  import resource

  prepare_s = _prepare_e2e_data(cell["name"], cell["data_dir"], cell["n_train"], cell["n_test"])
  workdir = cell["workdir"]
  flags = [f"--config.data.name={cell['name']}", f"--config.data.data_dir={cell['data_dir']}",
           "--config.train.checkpoint_every=0", "--config.eval.embedding_map=False"]
  if cell.get("steps"):
    flags.append(f"--config.steps={cell['steps']}")
  run = _subprocess.jaxcl_train(E2E_CONFIG, flags, workdir, timeout_s=cell["timeout_s"])
  if not run["ok"]:
    return {"ok": False, "error": run["error"], "prepare_seconds": prepare_s}
  result, wall = run["results"], run["wall_s"]
  with open(os.path.join(workdir, "config.json")) as f:
    image_size = json.load(f)["data"]["image_size"]
  ev = dict(result["eval_seconds"])
  total = ev["total"]
  per_rep = {rep: round(sum(v for k, v in ev.items() if k.startswith(rep + "/")), 2)
             for rep in REPRESENTATIONS}
  accuracy = {"pretrained": {k: result[k] for k in ("knn", "linear", "online_probe") if k in result},
              "random init": result.get("random_init"), "raw pixels": result.get("raw_pixels")}
  # ru_maxrss of the waited-for children: here only the jaxcl train process (KiB on Linux).
  peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return {"ok": True, "command": run["command"],
          "n_train": cell["n_train"], "n_test": cell["n_test"], "steps": result["step"],
          "image_size": image_size, "prepare_seconds": prepare_s,
          "train_seconds": result["train_seconds"], "eval_seconds": total,
          "eval_over_train": round(total / result["train_seconds"], 3),
          "eval_seconds_per_representation": per_rep,
          "load_seconds": ev.get("load splits", 0.0),
          # what no phase names: the random-init state, the online probe's accuracy, the table
          "eval_seconds_other": round(total - sum(v for k, v in ev.items() if k != "total"), 2),
          "eval_phases": ev, "run_wall_seconds": round(wall, 1),
          "images_per_second": result.get("images_per_second"),
          "peak_rss_gb": round(peak_kib / 2**20, 2), "accuracy": accuracy,
          "table": result.get("table")}


def _e2e_key(n_train: int, steps: int | None) -> str:
  return f"end_to_end_{n_train // 1000}k" + (f"_steps{steps}" if steps else "")


def _e2e_summary(key: str, rec: dict) -> str:
  """One line: sizes, train and eval seconds (per representation) and the ratio."""
  if not rec.get("ok"):
    return f"{key}: failed: {rec.get('error')}"
  reps = ", ".join(f"{k} {v:.1f}" for k, v in rec["eval_seconds_per_representation"].items())
  return (f"{key}: {rec['n_train']:,} train / {rec['n_test']:,} test, {rec['steps']} steps: train "
          f"{rec['train_seconds']:.1f} s, eval {rec['eval_seconds']:.1f} s ({reps}, other "
          f"{rec['eval_seconds_other']:.1f}), eval / train = {rec['eval_over_train']:.2f} (issue #22: "
          f"<= 0.5), peak RSS {rec['peak_rss_gb']:.2f} GB")


def _e2e_table(results: dict) -> str:
  """Markdown: per end-to-end cell, train s, eval s per representation, total and eval / train."""
  head = ("| cell | train / test images | steps | train s | eval s: load | pretrained | random init "
          "| raw pixels | other | eval s total | eval / train |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  rows = []
  for key in sorted(k for k in results if k.startswith("end_to_end_")):
    r = results[key]
    if not r.get("ok"):
      continue
    reps = " | ".join(f"{r['eval_seconds_per_representation'][k]:.1f}" for k in REPRESENTATIONS)
    load = f"{r['load_seconds']:.1f}" if "load_seconds" in r else "(in other)"
    rows.append(f"| {key} | {r['n_train']:,} / {r['n_test']:,} | {r['steps']} | {r['train_seconds']:.1f} | "
                f"{load} | {reps} | {r['eval_seconds_other']:.1f} | {r['eval_seconds']:.1f} | "
                f"{r['eval_over_train']:.2f} |")
  return "\n".join([head, *rows]) if rows else "(no end-to-end cell measured yet: --end-to-end)"


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
  _cli.add_flags(p, OUT)  # --out is a prefix: <out>.json and <out>.png
  p.add_argument("--end-to-end", action="store_true",
                 help="run only the end-to-end cell: the default job trained and evaluated on 60k "
                 "images")
  p.add_argument("--e2e-timeout-s", type=float, default=1800.0, help="limit of the end-to-end run")
  p.add_argument("--workroot",
                 default=os.path.join(_subprocess.REPO_ROOT, "runs", "bench_eval_scaling"),
                 help="end-to-end: its data dir (WORKROOT/data) and run directories")
  p.add_argument("--table", action="store_true",
                 help="print the end-to-end table from the JSON, run nothing")
  # Smaller end-to-end cells to check the path quickly: --e2e-n 6000 --e2e-steps 20 (test n / 6).
  p.add_argument("--e2e-n", type=int, default=E2E_TRAIN, help=argparse.SUPPRESS)
  p.add_argument("--e2e-steps", type=int, default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    cell = json.loads(args.child)
    if cell.get("estimate"):
      out = _estimate(cell["n"], cell["d"])
    else:
      out = _e2e_child(cell) if cell.get("task") == "end_to_end" else _child(cell)
    print(json.dumps(out))
    return
  _cli.out_path(args, OUT)
  path = args.out + ".json"
  results = _cli.load(path, args.fresh, {"cells": {}})
  command = "python benchmarks/eval_scaling.py " + " ".join(argv or sys.argv[1:])
  start = time.perf_counter()

  def save():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)

  if args.table:
    print(_e2e_table(results))
    return
  if args.end_to_end:
    n_train = args.e2e_n
    n_test = E2E_TEST if n_train == E2E_TRAIN else max(1, n_train // 6)
    key = _e2e_key(n_train, args.e2e_steps)
    if not results.get(key, {}).get("ok"):
      name = f"bench_animal{n_train // 1000}k" if n_train >= 1000 else f"bench_animal{n_train}"
      cell = {"task": "end_to_end", "name": name, "n_train": n_train, "n_test": n_test,
              "steps": args.e2e_steps, "data_dir": os.path.join(args.workroot, "data"),
              "workdir": os.path.join(args.workroot, key), "timeout_s": args.e2e_timeout_s}
      # The child stops its own jaxcl train at timeout_s; the margin covers preparing the dataset.
      rec = _subprocess.run_child(__file__, cell, timeout_s=args.e2e_timeout_s + 900)
      results[key] = {**rec, "benchmark_command": command}
      save()
    else:
      print(f"{key} already measured in {path} (delete that key to measure again)")
    print(_e2e_summary(key, results[key]), flush=True)
    print(_e2e_table(results))
    return
  results["command"] = command

  ns, ds = ((600,), (16,)) if args.smoke else (NS, DS)
  cells = [{"n": n, "d": d, "task": t} for d in ds for n in ns for t in TASKS]  # d=128 first
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
