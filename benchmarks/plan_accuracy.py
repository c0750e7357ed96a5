"""How close ``jaxcl plan``'s compiled-memory estimate is to the memory a train step really takes.

For each loss mode and a few global batches that run on this machine, a fresh process (memory
high-water marks are per process) builds the real train step of ``jaxcl train`` for the config, compiles
it once, reads the same ``compiled.memory_analysis()`` that ``jaxcl plan`` reads, then runs it on real
arrays and measures:

* on CPU (every simulated device shares the host's memory): the rise of the process's resident memory
  (VmHWM after resetting it) above what it held just before the step, with the state and the batch
  already resident. The estimate of that rise is the step's working set beyond its inputs, summed over
  the devices: ``devices x (outputs - aliased + temporaries)``. The first call and a later call are
  both reported (XLA:CPU's allocator keeps memory from the first for the next).
* on a GPU: the device allocator's ``peak_bytes_in_use`` against the plan's per-device peak
  (arguments + outputs - aliased + temporaries + code).

``ratio`` = measured / estimated: above 1, the plan is optimistic by that factor.

  python benchmarks/plan_accuracy.py                       # CPU, 8 simulated devices (~10 min)
  python benchmarks/plan_accuracy.py --quick               # two cells (CI's dry run)
  python benchmarks/plan_accuracy.py --devices 1 --batches 256,1024 --config configs/simclr_cifar10.py  # GPU

Writes benchmarks/results/plan_accuracy.json (``--out`` changes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _subprocess  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "results", "plan_accuracy.json")


def _child(cfg: dict) -> dict:
  if cfg["platform"] == "cpu":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={cfg['devices']}").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxcl import experiment  # pylint: disable=g-import-not-at-top
  from jaxcl.experiment import plan  # pylint: disable=g-import-not-at-top
  from jaxcl.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  path, _, arg = cfg["config"].partition(":")
  config = experiment.load_config_file(path, arg or None)
  planner = plan.Planner(config, cfg["devices"])
  c = planner.config_for(cfg["mode"], cfg["batch"], block_size=cfg["block_size"], chunks=cfg["chunks"])
  setup = planner._setup(c)  # pylint: disable=protected-access
  state = setup.init_state()
  rng = np.random.default_rng(0)
  batch = mesh_lib.shard_batch(
      {"image": rng.integers(0, 256, (cfg["batch"], *planner.info.image_shape), dtype=np.uint8),
       "label": rng.integers(0, max(planner.info.num_classes, 1), (cfg["batch"],), dtype=np.int32)},
      planner.mesh)
  compiled = setup.step_fn().lower(state, batch).compile()
  est = plan.analyse(compiled, cfg["batch"])
  devices = planner.mesh.devices.flatten().tolist()
  on_cpu = devices[0].platform == "cpu"
  rec = {"ok": True, "platform": devices[0].platform, "device_kind": devices[0].device_kind,
         "estimate_per_device": {"arguments": est.arguments, "outputs": est.outputs,
                                 "aliased": est.aliased, "temporaries": est.temporaries,
                                 "generated_code": est.generated_code, "peak": est.peak}}
  jax.block_until_ready(state)
  calls = []
  for _ in range(3):
    if on_cpu:
      base = _subprocess.rss_bytes()
      _subprocess.reset_peak_rss()
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - t0
    if on_cpu:
      calls.append({"rise_bytes": _subprocess.peak_rss_bytes() - base, "seconds": seconds})
    else:
      calls.append({"peak_bytes": max(d.memory_stats()["peak_bytes_in_use"] for d in devices),
                    "seconds": seconds})
  rec["calls"] = calls
  if on_cpu:
    working = len(devices) * (est.outputs - est.aliased + est.temporaries)
    rec["estimate_bytes"] = working
    rec["measured_first_bytes"] = calls[0]["rise_bytes"]
    rec["measured_later_bytes"] = statistics.median(c["rise_bytes"] for c in calls[1:])
    rec["what"] = "process RSS rise during the step vs devices x (outputs - aliased + temporaries)"
  else:
    rec["estimate_bytes"] = est.peak
    rec["measured_first_bytes"] = rec["measured_later_bytes"] = calls[-1]["peak_bytes"]
    rec["what"] = "device peak_bytes_in_use vs the plan's per-device peak"
  rec["ratio_first"] = rec["measured_first_bytes"] / max(rec["estimate_bytes"], 1)
  rec["ratio_later"] = rec["measured_later_bytes"] / max(rec["estimate_bytes"], 1)
  return rec


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--child", help=argparse.SUPPRESS)
  p.add_argument("--config", default=os.path.join(ROOT, "configs", "simclr_digits.py"))
  p.add_argument("--devices", type=int, default=8)
  p.add_argument("--platform", default="cpu", help="cpu (simulated devices) or gpu/tpu (real ones)")
  p.add_argument("--modes", default="allgather,ring,grad_cache")
  p.add_argument("--batches", default="256,1024,4096")
  p.add_argument("--block_size", type=int, default=128)
  p.add_argument("--chunks", type=int, default=4)
  p.add_argument("--quick", action="store_true", help="two small cells (the dry run)")
  p.add_argument("--timeout_s", type=float, default=900)
  p.add_argument("--out", default=OUT)
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(_child(json.loads(args.child))), flush=True)
    return
  modes, batches = args.modes.split(","), [int(b) for b in args.batches.split(",")]
  if args.quick:
    modes, batches = modes[:2], [batches[0]]
  cells = []
  for mode in modes:
    for batch in batches:
      payload = {"config": args.config, "devices": args.devices, "platform": args.platform,
                 "mode": mode, "batch": batch, "block_size": args.block_size, "chunks": args.chunks}
      rec = _subprocess.run_child(os.path.abspath(__file__), payload, timeout_s=args.timeout_s)
      rec.update(mode=mode, batch=batch)
      cells.append(rec)
      if rec.get("ok"):
        print(f"{mode} batch {batch}: estimated {rec['estimate_bytes'] / 2**20:,.1f} MiB, measured "
              f"{rec['measured_first_bytes'] / 2**20:,.1f} (first call) / "
              f"{rec['measured_later_bytes'] / 2**20:,.1f} MiB (later): ratio "
              f"{rec['ratio_first']:.2f} / {rec['ratio_later']:.2f}", flush=True)
      else:
        print(f"{mode} batch {batch}: FAILED {rec.get('error')}", flush=True)
  ok = [c for c in cells if c.get("ok")]
  out = {"config": os.path.relpath(args.config, ROOT) if os.path.isabs(args.config) else args.config,
         "devices": args.devices, "platform": ok[0]["platform"] if ok else args.platform,
         "device_kind": ok[0]["device_kind"] if ok else None,
         "machine": platform.processor() or platform.machine(), "block_size": args.block_size,
         "chunks": args.chunks, "cells": cells,
         "ratio_first": {"min": min((c["ratio_first"] for c in ok), default=None),
                         "max": max((c["ratio_first"] for c in ok), default=None)},
         "ratio_later": {"min": min((c["ratio_later"] for c in ok), default=None),
                         "max": max((c["ratio_later"] for c in ok), default=None)}}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=2)
  print(f"ratio measured / estimated: first call {out['ratio_first']}, later calls "
        f"{out['ratio_later']} -> {args.out}")
  if not ok:
    sys.exit(1)


if __name__ == "__main__":
  main()
