"""Input pipeline throughput: examples per second of jaxcl.data.train_iterator, 0 vs 2 workers, 32 px.

Measures the real Grain pipeline (TFDS array_record source -> global shuffle -> decode -> batch) on
  * digits, the embedded dataset (1,257 train images, 32x32x1), and
  * a synthetic CIFAR-like set (10,000 random 32x32x3 images) prepared through the same cifar10
    builder a user's cifar-10-python.tar.gz goes through (the tarball is written to a temp dir),
and sets it beside the training step's consumption rate (images/s): measured with
`--measure_train` (a short jaxcl.train run on digits), else read from
benchmarks/results/train_throughput.json (written by the trainer's benchmark) when present.
A ratio above 1 means the host feeds the step faster than the step consumes.

  python benchmarks/input_pipeline.py [--batches 40] [--measure_train]
  python benchmarks/input_pipeline.py --smoke   # 2 batches of 16, 500 synthetic images, temp --out

Writes benchmarks/results/input_pipeline.json.
"""

import argparse
import io
import json
import os
import pickle
import platform
import sys
import tarfile
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cli  # noqa: E402  (--out / --fresh / --smoke)
import jaxcl.data as data  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OUT = os.path.join(RESULTS, "input_pipeline.json")


def synthetic_cifar(manual_dir: str, *, per_batch: int = 2000, test_size: int = 1000) -> None:
  """Writes a cifar-10-python.tar.gz of random images with the real file layout."""
  rng = np.random.default_rng(0)
  names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
  with tarfile.open(os.path.join(manual_dir, "cifar-10-python.tar.gz"), "w:gz") as tar:
    def add(name, obj):
      payload = pickle.dumps(obj)
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
    add("batches.meta", {b"label_names": [n.encode() for n in names]})
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test_size)]:
      add(name, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]})


def measure(cfg, *, num_workers: int, global_batch_size: int, batches: int, warmup: int) -> dict:
  cfg = cfg.copy_and_resolve_references()
  cfg.num_workers = num_workers
  start = time.perf_counter()
  it = data.train_iterator(cfg, seed=0, global_batch_size=global_batch_size)
  try:
    for _ in range(warmup):  # Includes starting the worker processes.
      batch = next(it)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(it)
    elapsed = time.perf_counter() - start
  finally:
    if hasattr(it, "close"):
      it.close()
  return {"dataset": cfg.name, "image_shape": list(batch["image"].shape[1:]),
          "num_workers": num_workers, "global_batch_size": global_batch_size,
          "batches_timed": batches, "startup_seconds": round(startup, 3),
          "examples_per_second": round(batches * global_batch_size / elapsed, 1)}


def measure_train(data_dir: str, *, steps: int, batch_size: int = 256) -> dict:
  """images/s of a short SimCLR + SmallCNN run on digits through jaxcl.train (excludes compile)."""
  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  c = experiment.base(method="simclr", dataset="digits", encoder="small_cnn", recipe="simclr",
                      crop_size=32, batch_size=batch_size, steps=steps)
  experiment.smoke(c, batch_size=batch_size, steps=steps)
  c.data.data_dir = data_dir
  c.data.read_threads = 2
  c.data.prefetch_buffer_size = 4
  with tempfile.TemporaryDirectory() as workdir:
    result = experiment.train_and_evaluate(c, workdir)
  return {"source": "measured: jaxcl.experiment.train_and_evaluate, simclr + small_cnn, digits 32 px, "
                    f"global batch {batch_size}, {steps} steps",
          "images_per_second": float(result["images_per_second"])}


def read_train_throughput() -> dict | None:
  path = os.path.join(RESULTS, "train_throughput.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    found = json.load(f)
  rates = []

  def walk(node, where):
    if isinstance(node, dict):
      for key, value in node.items():
        if key in ("images_per_second", "examples_per_second") and isinstance(value, (int, float)):
          rates.append((value, where))
        walk(value, where + [str(node.get("name", key))])
    elif isinstance(node, list):
      for i, value in enumerate(node):
        walk(value, where + [str(i)])

  walk(found, [])
  if not rates:
    return None
  # The fastest configuration is the one most likely to be input-bound.
  rate, where = max(rates)
  return {"source": f"{path} ({'/'.join(where) or 'top level'})", "images_per_second": rate}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, default=40, help="timed batches per configuration")
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--measure_train", action="store_true")
  parser.add_argument("--train_steps", type=int, default=30)
  _cli.add_flags(parser, OUT)  # --fresh changes nothing: every run measures everything
  args = parser.parse_args()
  _cli.out_path(args, OUT)
  cifar_images = 10_000
  if args.smoke:  # every path (both datasets, 0 and 2 workers, the short training run), tiny
    args.batches, args.warmup, args.batch_size, args.measure_train, args.train_steps = 2, 1, 16, True, 3
    cifar_images = 500

  with tempfile.TemporaryDirectory() as tmp:
    digits = data.default_config("digits")
    digits.data_dir = os.path.join(tmp, "tfds")
    data.prepare(digits, progress=False)
    cifar = data.default_config("cifar10")
    cifar.data_dir = digits.data_dir
    cifar.manual_dir = tmp
    synthetic_cifar(tmp, per_batch=cifar_images // 5, test_size=cifar_images // 10)
    data.prepare(cifar, progress=False)

    results = []
    for cfg in (digits, cifar):
      for workers in (0, 2):
        r = measure(cfg, num_workers=workers, global_batch_size=args.batch_size,
                    batches=args.batches, warmup=args.warmup)
        if cfg.name == "cifar10":
          r["dataset"] = f"cifar10 (synthetic, {cifar_images:,} images)"
        print(json.dumps(r))
        results.append(r)
    train_rate = measure_train(digits.data_dir, steps=args.train_steps,
                               batch_size=args.batch_size) if args.measure_train \
        else read_train_throughput()

  if train_rate:
    for r in results:
      r["ratio_to_train_step"] = round(r["examples_per_second"] / train_rate["images_per_second"], 2)
      print(f"{r['dataset']}, {r['num_workers']} workers: {r['examples_per_second']:.0f} "
            f"examples/s = {r['ratio_to_train_step']}x the training step's "
            f"{train_rate['images_per_second']:.0f} images/s")
  else:
    print("No training rate: run with --measure_train, or the trainer's benchmark first.")
  out = {
      "benchmark": "input_pipeline",
      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "host": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
               "platform": platform.platform(),
               "python": platform.python_version()},
      "note": "Grain train_iterator on TFDS array_record; read_threads=2, prefetch 4 batches; "
              "uint8 batches, no augmentation (that runs on the accelerator inside the step).",
      "results": results,
      "train_step": train_rate,
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
