"""Throughput and peak memory of a SimCLR training step as the global batch grows, with and without
gradient caching (``train.grad_cache_chunks``; Gao et al. 2021).

  python benchmarks/batch_scaling.py [--batches 64,128,256,512] [--chunks 4] [--iters 2]
      [--encoder small_cnn] [--out benchmarks/results/batch_scaling.json]
  python benchmarks/batch_scaling.py --smoke   # the smoke config at batch 16, into a temporary --out

For each global batch B and each mode (plain step; gradient caching with ``--chunks`` chunks per
device batch) it compiles the real jitted train step of ``jaxcl.train`` (SimCLR on digits-shaped 32 px
images, all visible devices) and records:

* ``temp_bytes``: XLA's compiled temporary-buffer size of the step (``memory_analysis``), the memory
  the step needs beyond its inputs and outputs: activations, gradients, logits. Deterministic.
* ``step_s`` / ``images_per_s``: median wall time of ``--iters`` steps after a warm-up step.

Gradient caching keeps only one chunk's activations alive, so its temporary memory should grow with
B / chunks instead of B, at the price of a second forward pass (about 1.3-1.5x the step time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)
from jaxcl import experiment  # noqa: E402
from jaxcl.train import mesh as parallel  # noqa: E402
from jaxcl.data import DataInfo  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "batch_scaling.json")


def measure(batch: int, chunks: int, *, encoder: str, iters: int, smoke: bool = False) -> dict:
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"),
                                  "smoke" if smoke else None)
  c.unlock()
  c.batch_size = batch
  c.train.grad_cache_chunks = chunks
  if encoder != c.model.name:
    c.model = experiment.base(method="simclr", dataset="digits", encoder=encoder, recipe="simclr",
                              crop_size=32, batch_size=batch, steps=1).model
    if "stem" in c.model:
      c.model.stem = "cifar"
  mesh = parallel.make_mesh()
  info = DataInfo(image_shape=(32, 32, 1), num_classes=10, class_names=tuple("0123456789"),
                  num_train=1257, num_test=540)
  setup = experiment.build_setup(c, mesh, info)
  step = setup.step_fn()
  state = setup.init_state()
  rng = np.random.default_rng(0)
  host = {"image": rng.integers(0, 256, (batch, 32, 32, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, (batch,), dtype=np.int32)}
  data = parallel.shard_batch(host, mesh)
  compiled = step.lower(state, data).compile()
  mem = compiled.memory_analysis()
  temp = int(getattr(mem, "temp_size_in_bytes", -1)) if mem is not None else -1
  state, m = step(state, data)
  jax.block_until_ready(m)
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    state, m = step(state, data)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  s = statistics.median(times)
  return {"batch": batch, "grad_cache_chunks": chunks, "temp_bytes": temp, "step_s": s,
          "images_per_s": batch / s, "loss": float(m["loss"])}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="64,128,256,512")
  p.add_argument("--chunks", type=int, default=4)
  p.add_argument("--iters", type=int, default=2)
  p.add_argument("--encoder", default="small_cnn")
  _cli.add_flags(p, OUT)  # --fresh changes nothing: every run measures everything
  args = p.parse_args(argv)
  _cli.out_path(args, OUT)
  if args.smoke:
    args.batches, args.chunks, args.iters = "16", 2, 1
  rows = []
  for batch in [int(b) for b in args.batches.split(",")]:
    for chunks in (0, args.chunks):
      row = measure(batch, chunks, encoder=args.encoder, iters=args.iters, smoke=args.smoke)
      rows.append(row)
      print(json.dumps(row), flush=True)
  out = {"device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
         "encoder": args.encoder, "method": "simclr", "image": "32x32x1", "rows": rows}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
