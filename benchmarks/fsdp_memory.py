"""Per-device memory of the train state and of the step, replicated vs FSDP, on 8 simulated devices.

For each model (CLIP with a ViT-B/16 image tower and a 512-wide, 12-layer text tower; BYOL with a
ResNet-50 and its EMA target) and each layout (``train.fsdp`` off / on), the script builds the real
``TrainSetup`` of ``jaxcl train`` at 224 px and reports:

* the bytes one device holds of parameters, optimizer state and the method's other state (EMA target,
  BatchNorm statistics), from the state's shardings (exact, no run needed);
* the compiled step's per-device memory (``compiled.memory_analysis()``: temporaries, arguments,
  outputs) for a global batch of ``--batch`` images, the step's peak beyond its inputs.

Nothing is trained: the state is abstract and the step is only compiled, so it runs on a 2-core CPU
(about 5 minutes; each finished cell is written at once and a rerun skips it)::

  python benchmarks/fsdp_memory.py            # writes benchmarks/results/fsdp_memory.json
  python benchmarks/fsdp_memory.py --table    # the README table from the JSON
  python benchmarks/fsdp_memory.py --smoke    # both models' smoke configs at 32 px, temporary --out

Target (issue 19): FSDP's per-device state at most 1/6 of the replicated state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)

OUT = os.path.join(ROOT, "benchmarks", "results", "fsdp_memory.json")
MODELS = ("clip_vit_b16", "byol_resnet50")
LAYOUTS = ("replicated", "fsdp")
MB = 2 ** 20


def _config(model: str, fsdp: bool, batch: int, size: int, smoke: bool):
  from jaxcl import experiment, models  # pylint: disable=g-import-not-at-top
  arg = "smoke" if smoke else None  # the configs' own tiny models
  if model == "clip_vit_b16":
    c = experiment.load_config_file(os.path.join(ROOT, "configs", "clip_cifar10.py"), arg)
    c.unlock()
    if not smoke:
      c.model = models.default_config("vit_base")
      c.model.patch_size = 16
      c.method.update(embed_dim=512, text_width=512, text_depth=12, text_heads=8)
  else:
    c = experiment.load_config_file(os.path.join(ROOT, "configs", "byol_imagenet.py"), arg)
    c.unlock()
  c.data.image_size = size
  c.augment.size = size
  c.batch_size = batch
  c.train.fsdp = fsdp
  c.eval.online_probe = False
  return c


def measure(model: str, layout: str, batch: int, smoke: bool = False) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxcl import data, experiment  # pylint: disable=g-import-not-at-top
  from jaxcl.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  size = 32 if smoke else 224
  c = _config(model, layout == "fsdp", batch, size, smoke)
  info = data.DataInfo(image_shape=(size, size, 3), num_classes=1000,
                       class_names=tuple(f"class {i}" for i in range(1000)), num_train=0, num_test=0)
  mesh = mesh_lib.make_mesh(8)
  experiment.run.apply_compute_dtype(c)
  setup = experiment.run.build_setup(c, mesh, info)

  def per_device_bytes(tree) -> int:
    return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                   for x in jax.tree.leaves(tree)))

  state = setup.abstract_state
  parts = {part: per_device_bytes(state[part]) for part in ("params", "opt_state", "rest")}
  replicated_total = sum(int(np.prod(x.shape)) * x.dtype.itemsize
                         for part in ("params", "opt_state", "rest") for x in jax.tree.leaves(state[part]))
  batch_abstract = {"image": jax.ShapeDtypeStruct((batch, size, size, 3), np.uint8,
                                                  sharding=mesh_lib.batch_sharding(mesh)),
                    "label": jax.ShapeDtypeStruct((batch,), np.int32,
                                                  sharding=mesh_lib.batch_sharding(mesh))}
  compiled = setup.step_fn().lower(state, batch_abstract).compile()
  mem = compiled.memory_analysis()
  return {"state_bytes_per_device": parts, "state_total_per_device": sum(parts.values()),
          "state_total_unsharded": replicated_total,
          "step_temp_bytes": int(mem.temp_size_in_bytes),
          "step_argument_bytes": int(mem.argument_size_in_bytes),
          "step_output_bytes": int(mem.output_size_in_bytes),
          "parameters": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"])))}


def table(record: dict) -> str:
  lines = ["| model | layout | params + optimizer + targets per device (MB) | of which params | "
           "step temporaries per device (MB) | state vs replicated |",
           "|---|---|---:|---:|---:|---:|"]
  for model in MODELS:
    cells = record["cells"]
    base = cells.get(f"{model}/replicated")
    for layout in LAYOUTS:
      m = cells.get(f"{model}/{layout}")
      if not m:
        continue
      ratio = (f"1/{base['state_total_per_device'] / m['state_total_per_device']:.1f}"
               if base and layout == "fsdp" else "1")
      lines.append(f"| {model} ({m['parameters'] / 1e6:.0f} M params) | {layout} | "
                   f"{m['state_total_per_device'] / MB:,.0f} | "
                   f"{m['state_bytes_per_device']['params'] / MB:,.0f} | {m['step_temp_bytes'] / MB:,.0f} "
                   f"| {ratio} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=64, help="global batch (8 per device)")
  parser.add_argument("--table", action="store_true", help="print the README table and exit")
  _cli.add_flags(parser, OUT)
  args = parser.parse_args()
  _cli.out_path(args, OUT)
  if args.smoke:
    args.batch = 8
  record = _cli.load(args.out, args.fresh, {"cells": {}})
  if args.table:
    print(table(record))
    return
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax  # pylint: disable=g-import-not-at-top
  record.update(machine=platform.processor() or platform.machine(), jax=jax.__version__,
                devices=8, batch=args.batch)
  for model in MODELS:
    for layout in LAYOUTS:
      key = f"{model}/{layout}"
      if key in record["cells"]:
        continue
      print(f"{key} ...", flush=True)
      record["cells"][key] = measure(model, layout, args.batch, args.smoke)
      with open(args.out + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
      os.replace(args.out + ".tmp", args.out)
      print(f"{key}: {record['cells'][key]['state_total_per_device'] / MB:,.0f} MB state per device",
            flush=True)
  print(table(record))


if __name__ == "__main__":
  main()
