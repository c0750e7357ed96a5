"""``train_and_evaluate(config, workdir)`` and ``evaluate_checkpoint``: a config turned into its parts.

This is where the experiment config is read. Order of a run: validate the config (no compilation yet)
-> mesh -> method factory, optimiser, ``TrainSetup`` -> resume from the newest complete checkpoint in
``workdir`` (else ``train.init_checkpoint``, else from scratch) -> ``jaxcl.train.fit`` with the kNN
monitor -> final checkpoint, exported encoder, kNN + linear probe next to the random-init encoder and
raw pixels, curves and a t-SNE map. Everything below takes plain arguments.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import ml_collections
from flax import nnx

from jaxcl import data, evaluate, methods, report
from jaxcl.experiment import validation
from jaxcl.train import Checkpointer, TrainSetup, checkpoint, fit, grad_cache, mesh, optim


def apply_compute_dtype(config: ml_collections.ConfigDict) -> None:
  """``train.compute_dtype='bfloat16'`` runs the encoder in bfloat16 (parameters stay float32)."""
  if config.train.compute_dtype != "float32" and "dtype" in config.model:
    with config.unlocked():
      config.model.dtype = config.train.compute_dtype


def build_setup(config: ml_collections.ConfigDict, mesh_: jax.sharding.Mesh,
                info: data.DataInfo) -> TrainSetup:
  """The ``TrainSetup`` a config describes: its method, optimiser and schedule on ``mesh_``."""
  create = functools.partial(methods.create, config, image_shape=tuple(info.image_shape),
                             num_classes=info.num_classes, class_names=list(info.class_names))
  tx, schedule = optim.make_optimizer(config.optim, total_steps=config.steps,
                                      global_batch_size=config.batch_size)
  setup = TrainSetup(lambda rngs: create(rngs=rngs), mesh=mesh_, tx=tx, schedule=schedule,
                     seed=config.seed, total_steps=config.steps,
                     grad_cache_chunks=config.train.grad_cache_chunks)
  chunks = config.train.grad_cache_chunks
  if chunks > 1 and not grad_cache.supports(setup.method_cls):
    raise ValueError(
        f"config.train.grad_cache_chunks={chunks}: method {config.method.name!r} does not implement "
        "embed() and loss_from_embeddings(); set train.grad_cache_chunks=0 or use a method that "
        "supports gradient caching (simclr, supcon).")
  return setup


def _prepare(config: ml_collections.ConfigDict) -> tuple[TrainSetup, data.DataInfo]:
  mesh_ = mesh.make_mesh(config.train.num_devices or None)
  validation.validate(config, num_devices=mesh_.size, process_count=jax.process_count())
  apply_compute_dtype(config)
  info = data.info(config.data)
  return build_setup(config, mesh_, info), info


def data_iterator(config: ml_collections.ConfigDict, *, start_state: Any = None):
  """This process's slice of the training stream, restored to ``start_state`` if given."""
  it = data.train_iterator(config.data, seed=config.seed, global_batch_size=config.batch_size,
                           process_index=jax.process_index(), process_count=jax.process_count())
  if start_state is not None:
    it.set_state(start_state)
  return it


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pretrains ``config.method`` on ``config.data``, then evaluates the encoder.

  Args:
    config: the experiment config (``configs/*.py``); validated before anything is compiled.
    workdir: where checkpoints, metrics, pictures and the exported encoder go. A workdir holding a
      checkpoint resumes from its newest complete one and continues exactly.

  Returns:
    Final metrics: ``{"step", "loss", "knn", "linear", "random_init": {...}, "raw_pixels": {...},
    "train_seconds", "images_per_second", ...}``.
  """
  workdir = os.path.abspath(workdir)
  t = config.train
  setup, info = _prepare(config)
  is_main = jax.process_index() == 0

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints,
                              keep_every=t.keep_every, async_save=t.async_checkpoint)
  start = checkpointer.latest_step()
  data_state = None
  if start is not None:
    state, data_state, _ = checkpointer.restore(setup.abstract_state, step=start)
  else:
    start = 0
    state = setup.init_state()
    if t.init_checkpoint:
      other = Checkpointer(t.init_checkpoint, async_save=False)
      state = setup.with_weights_of(state, other.restore(setup.abstract_state)[0])
      other.close()

  if is_main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  writer = report.MetricsWriter(workdir, enabled=is_main, resume_step=start)
  if start == 0:
    writer.write_text("config", str(config))

  end = min(t.stop_at, config.steps) if t.stop_at else config.steps
  it = data_iterator(config, start_state=data_state) if start < end else None
  if it is not None and data_state is None and start > 0:
    # The process count changed since the save: replay the stream up to `start` (rare, slow path).
    for _ in range(start):
      next(it)
  evaluator = Evaluator(config, setup, info)
  knn_every = config.eval.knn_every

  def monitor(step: int, state: dict) -> dict[str, float]:
    if knn_every and step % knn_every == 0 and step < config.steps:
      return {"knn_monitor": evaluator.knn(setup.method(state))}
    return {}

  run = fit(setup, state, it, start=start, end=end, total_steps=config.steps,
            batch_size=config.batch_size, checkpointer=checkpointer, writer=writer,
            log_every=t.log_every, checkpoint_every=t.checkpoint_every,
            on_nonfinite=t.on_nonfinite, monitor=monitor, progress=is_main and t.progress,
            checkpoint_meta={"method": config.method.name, "data": config.data.name})
  state = run.state
  step = int(jax.device_get(state["step"]))
  if t.stop_at and t.stop_at < config.steps:
    checkpointer.close()
    writer.close()
    return {"step": step, **run.metrics, "stopped_at": t.stop_at}
  result: dict[str, Any] = {"step": step, **run.metrics, "train_seconds": round(run.train_seconds, 2)}
  if run.images_per_second is not None:
    result["images_per_second"] = run.images_per_second

  method = setup.method(state)
  if t.export_encoder:
    _export_encoder(method, config, workdir)
  result.update(evaluator.final(method, workdir=workdir, is_main=is_main))
  writer.write(config.steps, {k: v for k, v in result.items() if isinstance(v, float)})
  writer.close()
  checkpointer.close()
  if is_main:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(result, f, indent=2, default=float)
    if os.path.exists(writer.path):
      try:
        report.plot_curves(writer.path, os.path.join(workdir, "curves.png"), title=config.method.name)
      except ValueError:
        pass  # no metrics yet (a run resumed at its last step)
  return result


def _export_encoder(method: nnx.Module, config: ml_collections.ConfigDict, workdir: str) -> None:
  encoder = getattr(method, "encoder", method)
  params = nnx.state(encoder, nnx.Param)
  stats = nnx.state(encoder, nnx.BatchStat)
  checkpoint.export_params(os.path.join(workdir, "encoder"), {"params": params, "batch_stats": stats},
                           meta={"model": config.model.to_dict(), "method": config.method.name,
                                 "out_dim": getattr(encoder, "out_dim", None),
                                 "image_size": config.data.image_size})


class Evaluator:
  """kNN monitor during training; kNN + linear probe + baselines at the end (``config.eval``)."""

  def __init__(self, config: ml_collections.ConfigDict, setup: TrainSetup, info: data.DataInfo):
    self.config, self.setup, self.info, self.mesh = config, setup, info, setup.mesh
    self._arrays = None

  def arrays(self):
    if self._arrays is None:
      d = self.config.data
      train = data.load_arrays(d, d.train_split)
      test = data.load_arrays(d, d.eval_split)
      e = self.config.eval
      if e.max_train_examples:
        train = tuple(a[:e.max_train_examples] for a in train)
      if e.max_test_examples:
        test = tuple(a[:e.max_test_examples] for a in test)
      self._arrays = train, test
    return self._arrays

  def _batch_size(self) -> int:
    n = self.mesh.size
    return max(n, self.config.eval.batch_size // n * n)

  def knn(self, method: nnx.Module) -> float:
    train, test = self.arrays()
    e = self.config.eval
    out = evaluate.evaluate_representation(
        method, train, test, knn_k=e.knn_k, knn_temperature=e.knn_temperature, linear=False,
        batch_size=self._batch_size(), mesh=self.mesh, num_classes=self.info.num_classes)
    return out["knn"]

  def final(self, method: nnx.Module, *, workdir: str, is_main: bool) -> dict:
    e = self.config.eval
    if not e.final:
      return {}
    train, test = self.arrays()
    kw = dict(knn_k=e.knn_k, knn_temperature=e.knn_temperature,
              num_classes=self.info.num_classes)
    feats = functools.partial(evaluate.extract_features, batch_size=self._batch_size(), mesh=self.mesh)
    train_f, test_f = feats(method, train[0]), feats(method, test[0])
    out = evaluate.evaluate_features(train_f, train[1], test_f, test[1], linear=e.linear_probe, **kw)
    rows = {f"{self.config.method.name} (pretrained)": out}
    result = dict(out)
    if e.baselines:
      # Initialisation is deterministic: this is exactly the encoder the run started from.
      fresh = self.setup.method(self.setup.init_state())
      rand = evaluate.evaluate_representation(fresh, train, test, linear=e.linear_probe,
                                              batch_size=self._batch_size(), mesh=self.mesh, **kw)
      raw = evaluate.raw_pixel_baseline(train, test, linear=e.linear_probe, **kw)
      rows["random init (same encoder)"] = rand
      rows["raw pixels"] = raw
      result["random_init"], result["raw_pixels"] = rand, raw
    table = evaluate.format_table(rows, column_titles={"knn": f"kNN (k={e.knn_k})"})
    result["table"] = table
    if is_main:
      print(f"\n{self.config.data.name}: {len(train[1])} train / {len(test[1])} test images\n{table}\n",
            flush=True)
      with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
      if e.embedding_map:
        report.plot_embedding_map(test_f, test[1], os.path.join(workdir, "tsne.png"),
                                  class_names=list(self.info.class_names),
                                  title=f"{self.config.method.name}: test embeddings")
    return result


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *,
                        step: int | None = None) -> dict[str, Any]:
  """``jaxcl eval``: kNN + linear probe (and baselines) of a checkpoint in ``workdir``.

  Args:
    config: the config the run was trained with.
    workdir: the run directory.
    step: which checkpoint (default: the newest complete one).

  Returns:
    The evaluation metrics, as the end of ``train_and_evaluate`` reports them.
  """
  workdir = os.path.abspath(workdir)
  setup, info = _prepare(config)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  state, _, meta = checkpointer.restore(setup.abstract_state, step=step)
  checkpointer.close()
  with config.unlocked():
    config.eval.final = True
  result = Evaluator(config, setup, info).final(setup.method(state), workdir=workdir,
                                          is_main=jax.process_index() == 0)
  result["step"] = int(meta.get("step", -1))
  return result
