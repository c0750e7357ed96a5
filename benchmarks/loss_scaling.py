"""Memory and time of a contrastive loss + gradient as the global batch N grows, four ways.

Methods (all compute the same loss and gradients w.r.t. both embedding matrices):

* ``naive``: the plain jaxcl loss (jnp, N x N logits) on one device under ``jax.value_and_grad``;
* ``allgather``: the plain loss inside ``jax.shard_map`` with ``axis_name`` (each device all-gathers
  the other devices' embeddings and holds an [N/devices, N] logit block: open_clip's local loss);
* ``gspmd``: the plain single-device loss jitted on inputs sharded over the mesh (XLA partitions it);
* ``ring``: jaxcl's memory-linear loss (``block_size`` set) inside ``shard_map``: tiles, online
  log-sum-exp, custom_vjp recomputation and a ``ppermute`` ring.

Every (method, N) runs in a fresh process (memory high-water marks are per process), the methods are
interleaved, and the median over several processes is reported. Each child records the compiled
per-device memory (``compiled.memory_analysis()``: temporaries, arguments, outputs), the peak resident
memory of the process above its baseline (VmHWM after resetting it, once inputs exist and the function
is compiled; on a GPU, the device allocator's peak), and the wall time of loss + gradient.

A configuration whose compiled memory (summed over the process's devices) exceeds ``--run-limit-gb``
is compiled but not run, and one whose predicted time exceeds ``--max-run-s`` (from the previous N,
scaled by 4) is compiled but not timed, so the script never allocates beyond what the machine can
spare; a method stops scaling once its compiled memory exceeds ``--limit-gb`` (20 GB) or it fails.

Usage (CPU, 8 simulated devices; ~25 min on 2 cores)::

  python benchmarks/loss_scaling.py
  python benchmarks/loss_scaling.py --quick                       # small N (512-2048), 1 repeat
  python benchmarks/loss_scaling.py --smoke                       # N=128, d=16, temporary --out
  python benchmarks/loss_scaling.py --max-n 262144 --d 512 --dtype bfloat16 --run-limit-gb 60  # GPU

Writes benchmarks/results/loss_scaling.json and loss_scaling.png (``--out`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)
import _subprocess  # noqa: E402

METHODS = ("naive", "allgather", "gspmd", "ring")
GB = 1e9
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "loss_scaling")  # stem
LOSS_KWARGS = {
    "clip_loss": {"logit_scale": 100.0},
    "sigmoid_loss": {"logit_scale": 10.0, "logit_bias": -10.0},
    "nt_xent": {"temperature": 0.1},
    "info_nce": {"temperature": 0.1},
}


# ----------------------------------------------------------------------------- child process


def _child(cfg: dict) -> dict:
  """Compiles (and, if allowed, runs and times) one (method, N); returns a JSON-able record."""
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={cfg['devices']}"
  ).strip()
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  import functools

  import jax
  import jax.numpy as jnp

  from jaxcl import losses

  method, n, d = cfg["method"], cfg["n"], cfg["d"]
  dtype = jnp.dtype(cfg["dtype"])
  plain = functools.partial(getattr(losses, cfg["loss"]), **LOSS_KWARGS[cfg["loss"]])
  devices = jax.devices()
  row = jax.P("data")

  if method == "naive":
    devices, mesh = devices[:1], None
    sharding = jax.sharding.SingleDeviceSharding(devices[0])
    fn = plain
  else:
    # GSPMD needs Auto axes (XLA chooses the partitioning); the shard_map methods use Explicit.
    kind = jax.sharding.AxisType.Auto if method == "gspmd" else jax.sharding.AxisType.Explicit
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(kind,))
    sharding = jax.NamedSharding(mesh, row)
    if method == "gspmd":
      fn = plain
    else:
      kw = {"axis_name": "data"}
      if method == "ring":
        kw["block_size"] = cfg["block_size"]
      fn = jax.shard_map(
          functools.partial(plain, **kw), mesh=mesh, in_specs=(row, row), out_specs=jax.P()
      )
  step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
  make = jax.jit(
      lambda k: jax.random.normal(k, (2, n, d), jnp.float32).astype(dtype),
      out_shardings=jax.NamedSharding(mesh, jax.P(None, "data")) if method != "naive" else sharding,
  )
  xy = make(jax.random.key(0))
  a, b = jax.device_put(xy[0], sharding), jax.device_put(xy[1], sharding)
  del xy
  shape = jax.ShapeDtypeStruct((n, d), dtype, sharding=sharding)

  t0 = time.perf_counter()
  compiled = step.lower(shape, shape).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  per_device = {
      "temp": int(ma.temp_size_in_bytes),
      "arguments": int(ma.argument_size_in_bytes),
      "outputs": int(ma.output_size_in_bytes),
  }
  total = sum(per_device.values()) * len(devices)
  rec = {
      "ok": True,
      "devices": len(devices),
      "platform": devices[0].platform,
      "compile_s": compile_s,
      "compiled_per_device_bytes": per_device,
      "compiled_total_bytes": total,
      "ran": False,
  }
  if total > cfg["run_limit_bytes"] or cfg["reps"] == 0:
    return rec

  jax.block_until_ready((a, b))
  if not cfg.get("warmup", True):  # one call, timed and reported as is (the slowest cells)
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(a, b))
    rec.update(ran=True, loss=float(out[0]), times_s=[time.perf_counter() - t0], warmup=False)
    rec["time_s"] = rec["times_s"][0]
    return _with_matmul_rate(rec, cfg, mesh, a, b)
  on_gpu = devices[0].platform != "cpu"
  # First call: XLA:CPU's first execution of a looped program leaves memory with the allocator that
  # later calls reuse, so it is recorded apart from the steady state (what a training loop sees).
  base_first = _subprocess.rss_bytes()
  reset_ok = _subprocess.reset_peak_rss()
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(a, b))
  first_s = time.perf_counter() - t0
  first_peak = _subprocess.peak_rss_bytes() - base_first
  base_rss = _subprocess.rss_bytes()
  _subprocess.reset_peak_rss()
  base_dev = sum(dv.memory_stats()["bytes_in_use"] for dv in devices) if on_gpu else 0
  times = []
  for _ in range(cfg["reps"]):
    t0 = time.perf_counter()
    out = compiled(a, b)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  rec.update(
      ran=True,
      loss=float(out[0]),
      times_s=times,
      time_s=statistics.median(times),
      first_call_s=first_s,
      first_call_peak_rss_delta_bytes=first_peak,
      peak_rss_delta_bytes=_subprocess.peak_rss_bytes() - base_rss,
      peak_rss_reset=reset_ok,
  )
  if on_gpu:
    peak = sum(dv.memory_stats()["peak_bytes_in_use"] for dv in devices)
    rec["peak_device_delta_bytes"] = peak - base_dev
  return _with_matmul_rate(rec, cfg, mesh, a, b) if method == "ring" else rec


def _with_matmul_rate(rec: dict, cfg: dict, mesh, a, b) -> dict:
  """Adds, with ``cfg["matmul_tiles"]``, the ring's achieved FLOP rate next to this machine's own.

  The reference is the ring's tile product, [block, d] x [d, block], run ``matmul_tiles`` times on
  every device at once inside one jitted ``fori_loop`` (each tile sliced at a loop-dependent offset so
  nothing is hoisted), timed in the same process right after the loss: the best rate plain matmuls of
  the same shape reach here. The ring's work is counted as 6 N^2 d (forward logits, and the two
  gradient products), not its recomputation of the logits in the backward pass (8 N^2 d).
  """
  tiles = cfg.get("matmul_tiles")
  if not tiles:
    return rec
  import jax
  import jax.numpy as jnp

  block, n, d = cfg["block_size"], cfg["n"], cfg["d"]
  row = jax.P("data")

  def local(x, y):
    nb = x.shape[0] // block

    def body(i, acc):
      xi = jax.lax.dynamic_slice_in_dim(x, (i % nb) * block, block)
      yi = jax.lax.dynamic_slice_in_dim(y, ((i // nb + i) % nb) * block, block)
      return acc + jnp.dot(xi, yi.T, preferred_element_type=jnp.float32)

    # The carry varies over the devices like the body's result (shard_map checks that it matches).
    zero = jnp.zeros((block, block), jnp.float32) + 0.0 * x[0, 0].astype(jnp.float32)
    acc = jax.lax.fori_loop(0, tiles, body, zero)
    return acc.sum(keepdims=True)

  ref = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(row, row), out_specs=row))
  jax.block_until_ready(ref(a, b))
  times = []
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(ref(a, b))
    times.append(time.perf_counter() - t0)
  matmul_flops = 2 * block * block * d * tiles * cfg["devices"]
  rate = matmul_flops / statistics.median(times)
  ring_rate = 6 * n * n * d / rec["time_s"]
  rec.update(matmul_tile_flops_per_s=rate, matmul_times_s=times, ring_flops_per_s=ring_rate,
             ring_fraction_of_matmul=ring_rate / rate)
  return rec


# ----------------------------------------------------------------------------- parent process


def _peak(rec: dict, steady: bool = False) -> float | None:
  """Measured peak memory of a record, or None if it did not run.

  GPU: the device allocator's peak. CPU: the process RSS high-water mark above its baseline, either
  for the first call (baseline before any call: everything the call touches, plus the runtime's
  one-off growth) or, with ``steady``, for later calls (baseline after a warm-up: undercounts
  buffers that the runtime kept from the warm-up and reuses).
  """
  if not rec.get("ran"):
    return None
  if "peak_device_delta_bytes" in rec:
    return rec["peak_device_delta_bytes"]
  return rec["peak_rss_delta_bytes"] if steady else rec["first_call_peak_rss_delta_bytes"]


def _memory(rec: dict) -> tuple[float, str]:
  """Measured peak if the configuration ran, else the compiled estimate (and which it is)."""
  peak = _peak(rec)
  if peak is not None:
    return peak, "measured peak, first call"
  return rec["compiled_total_bytes"], "compiled estimate"


def _aggregate(runs: list[dict]) -> dict:
  good = [r for r in runs if r.get("ok")]
  if not good:
    return {"ok": False, "error": runs[0].get("error", "failed")}
  out = dict(good[0])
  ran = [r for r in good if r.get("ran")]
  out["processes"] = len(good)
  if ran:
    out["time_s"] = statistics.median(r["time_s"] for r in ran)
    out["times_s"] = [r["time_s"] for r in ran]
    for key in ("peak_rss_delta_bytes", "first_call_peak_rss_delta_bytes", "first_call_s"):
      out[key] = statistics.median(r[key] for r in ran)
    if "peak_device_delta_bytes" in ran[0]:
      out["peak_device_delta_bytes"] = statistics.median(r["peak_device_delta_bytes"] for r in ran)
  return out


def _goals(results: dict, args) -> dict:
  """The issue-7 goals, computed from the records (None where a figure is missing)."""
  ring, naive = results.get("ring", {}), results.get("naive", {})
  goals = {}
  n = 32768
  if str(n) in ring and str(n) in naive and ring[str(n)].get("ok") and naive[str(n)].get("ok"):
    rm, rs = _memory(ring[str(n)])
    nm, ns = _memory(naive[str(n)])
    goals["memory_ratio_ring_over_naive_at_32768"] = {
        "value": rm / nm, "goal": "<= 0.125", "ring": f"{rm / GB:.3f} GB ({rs})",
        "naive": f"{nm / GB:.3f} GB ({ns})",
    }
  ratios = {}
  ns_ok = sorted(int(k) for k, v in ring.items() if v.get("ok"))
  for lo, hi in zip(ns_ok, ns_ok[1:]):
    if hi == 2 * lo:
      rec_lo, rec_hi = ring[str(lo)], ring[str(hi)]
      entry = {
          "compiled_temp": rec_hi["compiled_per_device_bytes"]["temp"]
          / max(rec_lo["compiled_per_device_bytes"]["temp"], 1),
          "compiled_total": rec_hi["compiled_total_bytes"] / rec_lo["compiled_total_bytes"],
      }
      if _peak(rec_lo) and _peak(rec_hi):
        entry["measured_peak_first_call"] = _peak(rec_hi) / _peak(rec_lo)
      ratios[f"{hi}/{lo}"] = entry
  goals["ring_memory_doubling_ratios"] = {"value": ratios, "goal": "<= 2.2 (naive: 4.0)"}
  for method, recs in results.items():
    fits = [int(k) for k, v in recs.items() if v.get("ok") and v["compiled_total_bytes"] <= args.limit_gb * GB]
    goals.setdefault("largest_n_within_limit", {})[method] = max(fits) if fits else None
  n = 16384
  if ring.get(str(n), {}).get("time_s") and naive.get(str(n), {}).get("time_s"):
    goals["time_ratio_ring_over_naive_at_16384"] = {
        "value": ring[str(n)]["time_s"] / naive[str(n)]["time_s"], "goal": "<= 1.3"}
  return goals


def _plot(results: dict, args, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
  panels = [
      ("compiled memory, all devices (GB)", lambda r: r["compiled_total_bytes"] / GB),
      ("measured peak memory, first call (GB)", lambda r: (_peak(r) or 0) / GB or None),
      ("loss + gradient time (s)", lambda r: r.get("time_s")),
  ]
  for ax, (title, get) in zip(axes, panels):
    for method, recs in results.items():
      pts = sorted((int(k), get(v), v.get("ran")) for k, v in recs.items() if v.get("ok"))
      pts = [(n, y, ran) for n, y, ran in pts if y]
      if pts:
        color = f"C{METHODS.index(method)}" if method in METHODS else None
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color,
                        label=method)
        # Hollow markers: compiled only (too big or too slow to run here).
        hollow = [(n, y) for n, y, ran in pts if not ran]
        if hollow:
          ax.plot(*zip(*hollow), ls="none", marker="o", mfc="white", mec=line.get_color())
    if "memory" in title:
      ax.axhline(args.limit_gb, color="gray", ls="--", lw=1, label=f"{args.limit_gb:g} GB")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("global batch N")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(title="hollow: compiled, not run", fontsize=8, title_fontsize=8)
  fig.suptitle(f"{args.loss}, d={args.d}, {args.dtype}, {args.devices} devices, block {args.block_size}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--child", help=argparse.SUPPRESS)
  p.add_argument("--replot", action="store_true", help="redraw the PNG from the --out JSON")
  p.add_argument("--quick", action="store_true", help="smoke run: N in 512..2048, 1 repeat")
  p.add_argument("--min-n", type=int, default=4096)
  p.add_argument("--max-n", type=int, default=262144)
  p.add_argument("--d", type=int, default=256)
  p.add_argument("--loss", default="clip_loss", choices=sorted(LOSS_KWARGS))
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--devices", type=int, default=8, help="simulated host devices (CPU)")
  p.add_argument("--block-size", type=int, default=512)
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--runs", type=int, default=3, help="fresh processes per (method, N)")
  p.add_argument("--reps", type=int, default=2, help="timed calls per process, after a warm-up call")
  p.add_argument("--limit-gb", type=float, default=20.0, help="memory budget that defines 'fits'")
  p.add_argument("--run-limit-gb", type=float, default=10.0,
                 help="compile only above this (the machine is shared; never allocate near 24 GB)")
  p.add_argument("--max-run-s", type=float, default=200.0,
                 help="compile only when one call is predicted to take longer than this")
  p.add_argument("--single-run-s", type=float, default=20.0,
                 help="one process, one timed call when a call is predicted to exceed this")
  p.add_argument("--limit", action="store_true",
                 help="the ring at the machine's limit: its FLOP rate against plain tile matmuls at "
                      "N=65,536 (d=256), one call at N=262,144 (d=128), and the compiled memory at "
                      "N=1,048,576 (d=128); resumable, writes <out>_limit.json")
  _cli.add_flags(p, OUT)  # --out is a stem: <out>.json, <out>.png; --fresh: the --limit cells
  args = p.parse_args(argv)
  _cli.out_path(args, OUT)
  if args.child:
    print(json.dumps(_child(json.loads(args.child))))
    return
  if args.replot:
    with open(args.out + ".json") as f:
      record = json.load(f)
    for k, v in record["config"].items():
      setattr(args, k, v)
    record["goals"] = _goals(record["results"], args)
    with open(args.out + ".json", "w") as f:
      json.dump(record, f, indent=1)
    _plot(record["results"], args, args.out + ".png")
    return
  if args.limit:
    _limit(args)
    return
  if args.smoke:
    args.min_n = args.max_n = 128
    args.d, args.runs, args.reps, args.block_size = 16, 1, 1, 8
  elif args.quick:
    args.min_n, args.max_n, args.runs, args.reps = 512, 2048, 1, 1
    args.block_size = min(args.block_size, 128)
    if args.out.endswith("loss_scaling"):
      args.out += "_quick"

  methods = [m for m in args.methods.split(",") if m]
  ns = []
  n = args.min_n
  while n <= args.max_n:
    ns.append(n)
    n *= 2
  results = {m: {} for m in methods}
  alive = list(methods)
  last_time = {}
  started = time.time()
  script = os.path.abspath(__file__)
  for n in ns:
    plan = {}
    for m in alive:
      predicted = 4.0 * last_time[m] if m in last_time else 0.0
      if predicted > args.max_run_s:
        plan[m] = (1, 0, predicted)  # compile only
      elif predicted > args.single_run_s:
        plan[m] = (1, 1, predicted)
      else:
        plan[m] = (args.runs, args.reps, predicted)
    runs = {m: [] for m in alive}
    for r in range(max((v[0] for v in plan.values()), default=0)):
      order = alive[r % len(alive):] + alive[: r % len(alive)]  # interleave, rotating the start
      for m in order:
        procs, reps, predicted = plan[m]
        if r >= procs:
          continue
        cfg = {
            "method": m, "n": n, "d": args.d, "loss": args.loss, "dtype": args.dtype,
            "devices": args.devices, "block_size": args.block_size, "reps": reps,
            "run_limit_bytes": args.run_limit_gb * GB,
        }
        timeout = 300 + (reps + 1) * max(predicted, 10.0) * 2
        rec = _subprocess.run_child(script, cfg, timeout_s=timeout)
        runs[m].append(rec)
        state = "failed: " + rec.get("error", "") if not rec.get("ok") else (
            f"time {rec['time_s']:.3f}s peak {(_peak(rec) or 0) / GB:.3f} GB" if rec.get("ran")
            else "compiled only")
        print(f"[{time.time() - started:7.1f}s] N={n:>7} {m:<9} run {r}: "
              f"compiled {rec.get('compiled_total_bytes', 0) / GB:.3f} GB, {state}", flush=True)
    for m in list(alive):
      agg = _aggregate(runs[m])
      agg["timed_calls_per_process"] = plan[m][1]
      if plan[m][1] == 0 and agg.get("ok"):
        agg["not_run_reason"] = (
            f"predicted {plan[m][2]:.0f} s per call > --max-run-s"
            if agg["compiled_total_bytes"] <= args.run_limit_gb * GB
            else f"compiled memory > --run-limit-gb {args.run_limit_gb:g}")
      elif agg.get("ok") and not agg.get("ran"):
        agg["not_run_reason"] = f"compiled memory > --run-limit-gb {args.run_limit_gb:g}"
      results[m][str(n)] = agg
      if agg.get("time_s"):
        last_time[m] = agg["time_s"]
      if not agg.get("ok") or agg["compiled_total_bytes"] > args.limit_gb * GB:
        alive.remove(m)  # failed or does not fit: larger N will not either

  record = {
      "config": vars(args) | {"ns": ns},
      "machine": {
          "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
      },
      "notes": (
          "memory in bytes; compiled_* from compiled.memory_analysis() per device (total = sum "
          "over the process's devices); RSS deltas are VmHWM minus a VmRSS baseline taken once inputs "
          "exist and the function is compiled; time_s = median over processes of each process's "
          "median timed call. Configurations above --run-limit-gb or predicted slower than "
          "--max-run-s were compiled but not run (see not_run_reason). Every run makes one untimed "
          "warm-up call first. first_call_peak_rss_delta_bytes: the warm-up call's peak above the "
          "baseline taken before it (an upper bound: on XLA:CPU the first execution of the ring's "
          "tile loops also leaves ~10-20 KB per executed tile with the allocator, reused by later "
          "calls); peak_rss_delta_bytes: the timed calls' peak above a baseline taken after the "
          "warm-up, which is NOT a measure of need: XLA:CPU keeps the warm-up's buffers for reuse "
          "(naive loss at N=16384: 0.09 GB here vs 3.34 GB on the first call). Read compiled_* "
          "and first_call_peak_rss_delta_bytes."
      ),
      "results": results,
  }
  record["goals"] = _goals(results, args)
  record["wall_s"] = time.time() - started
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(record, f, indent=1)
  _plot(results, args, args.out + ".png")
  print(json.dumps(record["goals"], indent=1))
  print(f"wrote {args.out}.json and {args.out}.png in {record['wall_s']:.0f} s")


# (N, d, timed calls after a warm-up; 0: compile only; None: one call without a warm-up)
LIMIT_CELLS = ((65536, 256, 1), (262144, 128, None), (1048576, 128, 0))


def _limit(args) -> None:
  """The ring alone at the machine's limit (issue 14), one cell per fresh process, saved as it ends."""
  path = args.out + "_limit.json"
  record = _cli.load(path, args.fresh, {"cells": {}})
  record["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
  record["notes"] = _with_matmul_rate.__doc__.split("\n\n")[1].replace("\n  ", " ").strip()
  for n, d, reps in LIMIT_CELLS:
    key = f"{n}x{d}"
    if record["cells"].get(key, {}).get("ok"):
      print(f"N={n} d={d}: done before, skipped")
      continue
    cfg = {
        "method": "ring", "n": n, "d": d, "loss": args.loss, "dtype": args.dtype,
        "devices": args.devices, "block_size": args.block_size, "reps": 1 if reps is None else reps,
        "warmup": reps is not None, "matmul_tiles": 256 if reps != 0 else 0,
        "run_limit_bytes": 1e15 if reps != 0 else 0,
    }
    started = time.time()
    rec = _subprocess.run_child(os.path.abspath(__file__), cfg, timeout_s=3 * 3600)
    rec["wall_s"] = time.time() - started
    record["cells"][key] = rec
    with open(path, "w") as f:
      json.dump(record, f, indent=1)
    gb = rec.get("compiled_total_bytes", 0) / GB
    state = rec.get("error") or (f"{rec['time_s']:.1f} s, ring at {rec['ring_fraction_of_matmul']:.0%}"
                                 " of the tile matmul rate" if rec.get("ran") else "compiled only")
    print(f"N={n} d={d}: compiled {gb:.2f} GB in all devices; {state}", flush=True)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
