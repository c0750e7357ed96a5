"""``jaxcl plan``: what global batch fits per device, for each way of computing the loss.

For an experiment config, a device count and a memory budget per device, ``plan`` compiles the real
train step of ``jaxcl train`` (the method, encoder, optimiser and sharding the config describes) for
abstract inputs (``jax.ShapeDtypeStruct``: no data, nothing trained, nothing allocated) and reads XLA's
compiled memory analysis of one device's program. It does so for each loss mode:

* ``allgather``: the plain loss; each device all-gathers every embedding and holds an
  [N / devices, N] logit block (``method.loss_block_size=0``);
* ``ring``: the memory-linear tiled loss (``method.loss_block_size=B``); in the sharded step its tiles
  of B rows travel round a ``ppermute`` ring, so no device holds more than B x B logits;
* ``grad_cache``: gradient caching (``train.grad_cache_chunks=k``) with the plain loss: the encoder's
  activations of one chunk at a time;
* ``grad_cache_ring``: both.

Over a ladder of global batch sizes (per device: ``k * 2^i`` rows) it binary-searches the largest that
fits ``memory_bytes`` per device, so each mode costs a handful of compilations. The numbers are the
compiler's estimate for the backend it ran on (normally XLA:CPU with simulated devices): GPU and TPU
compilers fuse, schedule and rematerialise differently, and a runtime adds its own workspace, so keep a
margin; ``benchmarks/plan_accuracy.py`` measures the estimate against real peaks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

MODES = ("allgather", "ring", "grad_cache", "grad_cache_ring")
DEFAULT_BLOCK_SIZE = 1024
DEFAULT_CHUNKS = 4
MAX_ROWS_PER_DEVICE = 1 << 16


@dataclasses.dataclass
class StepMemory:
  """One compiled step's per-device memory (bytes) and work, as XLA reports it."""
  batch: int            # global batch
  arguments: int        # train state shards + the batch shard
  outputs: int          # new state + metrics
  aliased: int          # outputs written in place of donated arguments (the state)
  temporaries: int      # activations, gradients, logits: everything the step allocates inside
  generated_code: int   # the compiled program itself
  flops: float | None   # XLA's count for one device's program (a loop body counted once)

  @property
  def peak(self) -> int:
    """Bytes live at once on one device: inputs, outputs not written in place, temporaries, code."""
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.generated_code


def _mode_overrides(mode: str, *, block_size: int, chunks: int) -> dict[str, int]:
  ring = mode in ("ring", "grad_cache_ring")
  cached = mode.startswith("grad_cache")
  return {"method.loss_block_size": block_size if ring else 0,
          "train.grad_cache_chunks": chunks if cached else 0}


def _with(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  for path, value in overrides.items():
    section, _, field = path.rpartition(".")
    node = c
    for part in [p for p in section.split(".") if p]:
      node = node[part]
    node[field] = value
  return c


def supported_modes(config: ml_collections.ConfigDict, method_cls: type) -> tuple[str, ...]:
  """The modes ``config``'s method can run: the ring needs ``method.loss_block_size``, gradient
  caching the method's ``embed`` / ``loss_from_embeddings`` hooks."""
  from jaxcl.train import grad_cache  # pylint: disable=g-import-not-at-top
  ring = "loss_block_size" in config.method
  cached = grad_cache.supports(method_cls)
  return tuple(m for m in MODES if (ring or "ring" not in m) and (cached or "grad_cache" not in m))


def _info(config: ml_collections.ConfigDict):
  """The dataset's shape facts; a dataset that is not prepared here is described from the config."""
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  try:
    return data.info(config.data)
  except (ValueError, OSError, KeyError):
    size = int(config.data.get("image_size") or config.augment.size)
    return data.DataInfo(image_shape=(size, size, 3), num_classes=1000,
                         class_names=tuple(f"class {i}" for i in range(1000)), num_train=0,
                         num_test=0)


def _per_device_bytes(tree) -> int:
  return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                 for x in jax.tree.leaves(tree)))


def _flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend reports it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  value = (cost or {}).get("flops")
  return float(value) if value is not None and value >= 0 else None


def analyse(compiled, batch: int) -> StepMemory:
  """A compiled step's memory analysis and FLOPs (per device) as a ``StepMemory``."""
  m = compiled.memory_analysis()
  return StepMemory(batch=batch, arguments=int(m.argument_size_in_bytes),
                    outputs=int(m.output_size_in_bytes), aliased=int(m.alias_size_in_bytes),
                    temporaries=int(m.temp_size_in_bytes),
                    generated_code=int(m.generated_code_size_in_bytes), flops=_flops(compiled))


class Planner:
  """Compiles ``config``'s train step on a mesh of ``devices`` for abstract batches (see module doc).

  Args:
    config: the experiment config (image and sequence methods).
    devices: the mesh size (the process must see at least this many devices).
  """

  def __init__(self, config: ml_collections.ConfigDict, devices: int):
    from jaxcl import methods  # pylint: disable=g-import-not-at-top
    if config.method.name in methods.TEXT_METHODS:
      raise ValueError(f"method.name={config.method.name!r}: jaxcl plan covers the image and sequence "
                       "methods; text towers are not planned yet.")
    if jax.device_count() < devices:
      raise ValueError(f"--devices={devices}: this process sees {jax.device_count()} devices; "
                       "`jaxcl plan` sets XLA_FLAGS itself, so run it from the command line.")
    self.config, self.devices = config, devices
    self.info = _info(config)
    from jaxcl.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    self.mesh = mesh_lib.make_mesh(devices)
    self._state_cache: dict[tuple, Any] = {}

  def _setup(self, c: ml_collections.ConfigDict):
    from jaxcl.experiment import parts, run  # pylint: disable=g-import-not-at-top
    run.apply_compute_dtype(c)
    return parts.build_setup(c, self.mesh, self.info)

  def config_for(self, mode: str, batch: int, *, block_size: int, chunks: int):
    c = _with(self.config, {**_mode_overrides(mode, block_size=block_size, chunks=chunks),
                            "batch_size": batch, "train.num_devices": self.devices})
    from jaxcl.experiment import validation  # pylint: disable=g-import-not-at-top
    validation.validate(c, num_devices=self.devices, check_data=False)
    return c

  def state_bytes(self, mode: str = "allgather", *, block_size: int = DEFAULT_BLOCK_SIZE,
                  chunks: int = DEFAULT_CHUNKS) -> dict[str, int]:
    """Per-device bytes of the train state's parts (params, opt_state, the method's rest)."""
    c = self.config_for(mode, self.devices * max(chunks, 1), block_size=block_size, chunks=chunks)
    setup = self._setup(c)
    self.method_cls = setup.method_cls
    state = setup.abstract_state
    return {part: _per_device_bytes(state[part]) for part in state
            if part in ("params", "opt_state", "rest")}

  def step(self, mode: str, batch: int, *, block_size: int = DEFAULT_BLOCK_SIZE,
           chunks: int = DEFAULT_CHUNKS) -> StepMemory:
    """Compiles the train step of ``mode`` at global ``batch`` and returns its memory analysis."""
    from jaxcl.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    c = self.config_for(mode, batch, block_size=block_size, chunks=chunks)
    setup = self._setup(c)
    rows = mesh_lib.batch_sharding(self.mesh)
    abstract_batch = {"image": jax.ShapeDtypeStruct((batch, *self.info.image_shape), np.uint8,
                                                    sharding=rows),
                      "label": jax.ShapeDtypeStruct((batch,), np.int32, sharding=rows)}
    return analyse(setup.step_fn().lower(setup.abstract_state, abstract_batch).compile(), batch)

  def loss_temporaries(self, mode: str, batch: int, *, block_size: int = DEFAULT_BLOCK_SIZE) -> int | None:
    """Per-device temporaries of the loss and its gradient alone, on [batch, D] embeddings sharded
    over the mesh (the two-view losses of SimCLR and SupCon; None for other methods)."""
    m = self.config.method
    if "proj_out_dim" not in m or "loss" not in m:
      return None
    from jaxcl.methods import image  # pylint: disable=g-import-not-at-top
    c = _with(self.config, {"method.loss_block_size": block_size if "ring" in mode else 0})
    objective = image.two_view_objective(c.method)
    labels = jax.ShapeDtypeStruct((batch,), np.int32, sharding=jax.NamedSharding(self.mesh,
                                                                                   jax.P("data")))
    emb = jax.ShapeDtypeStruct((batch, int(m.proj_out_dim)), np.float32,
                               sharding=jax.NamedSharding(self.mesh, jax.P("data")))
    row = jax.P("data")
    fn = jax.shard_map(lambda a, b, y: objective.fn(a, b, y, axis_name="data"), mesh=self.mesh,
                       in_specs=(row, row, row), out_specs=jax.P())
    compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(emb, emb, labels).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def ladder(devices: int, chunks: int, max_rows_per_device: int = MAX_ROWS_PER_DEVICE) -> list[int]:
  """Global batches ``devices * k * 2^i`` (k = ``chunks`` or 1) up to ``max_rows_per_device`` rows."""
  step = max(chunks, 1)
  out, rows = [], step
  while rows <= max_rows_per_device:
    out.append(devices * rows)
    rows *= 2
  return out


def largest_fitting(measure, batches: list[int], budget: int) -> tuple[StepMemory | None,
                                                                       list[StepMemory]]:
  """Binary search over ``batches`` (ascending) for the largest whose ``measure(batch).peak`` fits.

  Returns (the largest fitting step or None, every step compiled on the way, by batch).
  """
  seen: dict[int, StepMemory] = {}

  def get(i: int) -> StepMemory:
    if batches[i] not in seen:
      seen[batches[i]] = measure(batches[i])
    return seen[batches[i]]

  lo, hi = 0, len(batches) - 1
  if get(lo).peak > budget:
    return None, [seen[b] for b in sorted(seen)]
  while lo < hi:  # invariant: batches[lo] fits
    mid = (lo + hi + 1) // 2
    if get(mid).peak <= budget:
      lo = mid
    else:
      hi = mid - 1
  return get(lo), [seen[b] for b in sorted(seen)]


def plan(config: ml_collections.ConfigDict, *, devices: int, memory_bytes: int,
         modes: tuple[str, ...] | None = None, block_size: int | None = None,
         chunks: int = DEFAULT_CHUNKS, max_rows_per_device: int = MAX_ROWS_PER_DEVICE,
         progress=None) -> dict[str, Any]:
  """The largest global batch that fits ``memory_bytes`` per device, for each loss mode.

  Args:
    config: the experiment config.
    devices: mesh size (the process must see that many devices: ``jaxcl plan`` simulates them).
    memory_bytes: the memory one device has for the step.
    modes: which of ``MODES`` (default: every mode the method supports).
    block_size: the ring's tile rows (default: the config's ``method.loss_block_size``, else 1024).
    chunks: gradient caching's chunks per device batch.
    max_rows_per_device: the top of the ladder.
    progress: called with one line per compilation, if given.

  Returns:
    ``{"backend", "devices", "memory_bytes", "modes": {mode: {"largest_batch", "fits": StepMemory
    dict or None, "steps": [StepMemory dicts], "loss_temporaries", ...}}, "state_bytes"}``.
  """
  planner = Planner(config, devices)
  block_size = block_size or int(config.method.get("loss_block_size", 0)) or DEFAULT_BLOCK_SIZE
  state_bytes = planner.state_bytes(block_size=block_size, chunks=chunks)
  available = supported_modes(config, planner.method_cls)
  modes = tuple(modes or available)
  for mode in modes:
    if mode not in available:
      raise ValueError(f"--modes: {mode!r} is not available for method {config.method.name!r} "
                       f"(it supports {', '.join(available)}).")
  out = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
         "devices": devices, "memory_bytes": memory_bytes, "block_size": block_size,
         "chunks": chunks, "method": config.method.name, "model": config.model.name,
         "data": config.data.name, "image_shape": list(planner.info.image_shape),
         "state_bytes": state_bytes, "modes": {}}
  for mode in modes:
    k = chunks if mode.startswith("grad_cache") else 1

    def measure(batch: int, mode=mode) -> StepMemory:
      step = planner.step(mode, batch, block_size=block_size, chunks=chunks)
      if progress:
        progress(f"  {mode}: global batch {batch:,} -> {step.peak / 2**30:.3f} GiB per device")
      return step

    fits, steps = largest_fitting(measure, ladder(devices, k, max_rows_per_device), memory_bytes)
    row = {"largest_batch": fits.batch if fits else None,
           "fits": dataclasses.asdict(fits) | {"peak": fits.peak} if fits else None,
           "steps": [dataclasses.asdict(s) | {"peak": s.peak} for s in steps]}
    if fits:
      row["loss_temporaries"] = planner.loss_temporaries(mode, fits.batch, block_size=block_size)
    out["modes"][mode] = row
  return out


_UNIT = {"GiB": 2**30, "MiB": 2**20}


def _size(n: int | None, unit: str) -> str:
  return "-" if n is None else f"{n / _UNIT[unit]:,.3f}"


def format_plan(result: dict[str, Any]) -> str:
  """The plan as a table with its caveat (what ``jaxcl plan`` prints)."""
  unit = "GiB" if result["memory_bytes"] >= 2**30 else "MiB"
  size = lambda n: _size(n, unit)  # noqa: E731
  s = result["state_bytes"]
  lines = [
      f"jaxcl plan: {result['method']} / {result['model']} on {result['data']} images "
      f"{'x'.join(map(str, result['image_shape']))}, {result['devices']} devices with "
      f"{size(result['memory_bytes'])} {unit} each (ring block {result['block_size']}, gradient "
      f"caching {result['chunks']} chunks)",
      f"train state per device ({unit}): params {size(s.get('params'))} + optimizer "
      f"{size(s.get('opt_state'))} + other {size(s.get('rest'))}",
      "",
      f"{'mode':<16}{'largest batch':>14}{'per device':>11}{'peak ' + unit:>12}{'state+batch':>12}"
      f"{'temporaries':>12}{'loss temps':>11}{'TFLOPs/step':>12}",
  ]
  for mode, row in result["modes"].items():
    f = row["fits"]
    if f is None:
      smallest = row["steps"][0]
      lines.append(f"{mode:<16}  nothing fits: the smallest batch ({smallest['batch']:,}) needs "
                   f"{size(smallest['peak'])} {unit} per device")
      continue
    flops = "-" if f["flops"] is None else f"{f['flops'] * result['devices'] / 1e12:,.4f}"
    lines.append(
        f"{mode:<16}{f['batch']:>14,}{f['batch'] // result['devices']:>11,}{size(f['peak']):>12}"
        f"{size(f['arguments']):>12}{size(f['temporaries']):>12}{size(row.get('loss_temporaries')):>11}"
        f"{flops:>12}")
  lines += [
      "",
      f"These are XLA's compiled-memory estimates for the {result['backend']} backend this ran on "
      f"({result['device_kind']}), not measurements: a GPU or TPU compiler fuses and schedules "
      "differently and its runtime adds workspace, so keep a margin (benchmarks/plan_accuracy.py "
      "measures the estimate against real peaks). 'largest batch' is the top of the ladder "
      "(per device k x 2^i rows) that fits; 'loss temps' is the loss and its gradient compiled alone; "
      "TFLOPs as XLA counts them (a loop's body once, so the ring's and gradient caching's are low).",
  ]
  return "\n".join(lines)
