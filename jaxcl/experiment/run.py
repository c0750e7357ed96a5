"""``train_and_evaluate(config, workdir)`` and ``evaluate_checkpoint``: a config turned into its parts.

This is where the experiment config is read. Order of a run: validate the config (no compilation yet)
-> mesh -> the task the method's declarations pick (``jaxcl.experiment.tasks``: its data stream,
``TrainSetup`` and evaluator) -> resume from the newest complete checkpoint in ``workdir`` (else
``train.init_checkpoint``, else from scratch) -> ``jaxcl.train.fit`` with the task's monitor -> final
checkpoint, exported encoder, the task's final evaluation, ``results.json``, curves and the report
page. Everything below takes plain arguments; this module knows no kind of run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from flax import nnx

from jaxcl import methods, report
from jaxcl.experiment import describe, tasks, validation
from jaxcl.experiment.parts import build_setup  # noqa: F401  (a public name of this module)
from jaxcl.experiment.tasks.image import data_iterator  # noqa: F401  (a public name of this module)
from jaxcl.train import Checkpointer, checkpoint, fit, lock, mesh
from jaxcl.train.preemption import Preempted


def apply_compute_dtype(config: ml_collections.ConfigDict) -> None:
  """``train.compute_dtype='bfloat16'`` runs the encoder in bfloat16 (parameters stay float32)."""
  if config.train.compute_dtype != "float32" and "dtype" in config.model:
    with config.unlocked():
      config.model.dtype = config.train.compute_dtype


def _prepare(config: ml_collections.ConfigDict, workdir: str):
  """Validated config -> (setup, evaluator, ``iterator(start_state)``) of the task its method's
  declarations pick (``jaxcl.experiment.tasks``)."""
  mesh_ = mesh.make_mesh(config.train.num_devices or None)
  validation.validate(config, num_devices=mesh_.size, process_count=jax.process_count())
  apply_compute_dtype(config)
  return tasks.prepare(config, workdir, mesh_)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pretrains ``config.method`` on ``config.data``, then evaluates the encoder.

  Args:
    config: the experiment config (``configs/*.py``); validated before anything is compiled.
    workdir: where checkpoints, metrics, pictures and the exported encoder go. A workdir holding a
      checkpoint resumes from its newest complete one and continues exactly. The run holds
      ``<workdir>/train.lock`` while it runs (``jaxcl.train.lock``).

  Returns:
    Final metrics: ``{"step", "loss", "knn", "linear", "random_init": {...}, "raw_pixels": {...},
    "train_seconds", "images_per_second" (text runs: "examples_per_second"), ...}``.

  Raises:
    jaxcl.train.lock.WorkdirLocked: another live run holds ``workdir``.
  """
  workdir = os.path.abspath(workdir)
  with lock.hold_workdir(workdir):  # one writer per workdir; released on errors too
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  t = config.train
  setup, evaluator, make_iterator = _prepare(config, workdir)
  is_main = jax.process_index() == 0

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints,
                              keep_every=t.keep_every, async_save=t.async_checkpoint)
  data_state = None
  if checkpointer.latest_step() is not None:  # the newest undamaged one (damaged ones set aside)
    state, data_state, _ = checkpointer.restore(setup.abstract_state)
    start = int(jax.device_get(state["step"]))
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
  it = make_iterator(data_state) if start < end else None
  if it is not None and data_state is None and start > 0:
    # The process count changed since the save: replay the stream up to `start` (rare, slow path).
    for _ in range(start):
      next(it)
  knn_every = config.eval.knn_every
  text_run = config.method.name in methods.TEXT_METHODS  # its examples are text pairs, not images

  def monitor(step: int, state: dict) -> dict[str, float]:
    if knn_every and step % knn_every == 0 and step < config.steps:
      return evaluator.monitor(setup.method(state), state.get("probe"))
    return {}

  try:
    run = fit(setup, state, it, start=start, end=end, total_steps=config.steps,
              batch_size=config.batch_size, checkpointer=checkpointer, writer=writer,
              log_every=t.log_every, checkpoint_every=t.checkpoint_every,
              on_nonfinite=t.on_nonfinite, monitor=monitor, progress=is_main and t.progress,
              checkpoint_meta={"method": config.method.name, "data": config.data.name},
              example_unit="examples" if text_run else "img")
  except Preempted:  # its checkpoint is committed; leave the log complete too
    writer.close()
    checkpointer.close()
    raise
  state = run.state
  step = int(jax.device_get(state["step"]))
  if t.stop_at and t.stop_at < config.steps:
    checkpointer.close()
    writer.close()
    return {"step": step, **run.metrics, "stopped_at": t.stop_at}
  result: dict[str, Any] = {"step": step, **run.metrics, "train_seconds": round(run.train_seconds, 2)}
  if run.examples_per_second is not None:
    result["examples_per_second" if text_run else "images_per_second"] = run.examples_per_second

  method = setup.method(state)
  if t.export_encoder:
    _export_encoder(method, config, workdir)
  result.update(evaluator.final(method, workdir=workdir, is_main=is_main, probe=state.get("probe")))
  writer.write(config.steps, {k: v for k, v in result.items() if isinstance(v, float)})
  writer.close()
  checkpointer.close()
  if is_main:
    write_results(workdir, result, evaluated_by="jaxcl train")
    if os.path.exists(writer.path):
      try:
        report.plot_curves(writer.path, os.path.join(workdir, "curves.png"), title=config.method.name)
      except ValueError:
        pass  # no metrics yet (a run resumed at its last step)
    facts = {"data": config.data.name, "steps": step, "batch size": config.batch_size,
             "training seconds": result.get("train_seconds"),
             "examples per second": result.get("examples_per_second"),
             "images per second": result.get("images_per_second")}
    report.write_report(workdir, title=f"{config.method.name} on {config.data.name}",
                        table=result.get("table", ""), config_text=describe.describe(config),
                        facts={k: v for k, v in facts.items() if v is not None})
  return result


def _export_encoder(method: nnx.Module, config: ml_collections.ConfigDict, workdir: str) -> None:
  encoder = method.evaluated_encoder() if hasattr(method, "encoder") else method
  # An EMA teacher's weights are ``Target`` variables; exported, they load as the encoder's parameters.
  params = nnx.state(encoder, (nnx.Param, methods.Target))
  stats = nnx.state(encoder, nnx.BatchStat)
  checkpoint.export_params(os.path.join(workdir, "encoder"), {"params": params, "batch_stats": stats},
                           meta={"model": config.model.to_dict(), "method": config.method.name,
                                 "out_dim": getattr(encoder, "out_dim", None),
                                 "image_size": config.data.image_size})


def restore_method(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None):
  """The trained method of a run: ``(method, evaluator, meta, state)`` from ``workdir``'s newest complete
  checkpoint (or ``step``'s); ``evaluator`` is the run's (it holds a text run's tokenizer)."""
  workdir = os.path.abspath(workdir)
  setup, evaluator, _ = _prepare(config, workdir)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    state, _, meta = checkpointer.restore(setup.abstract_state, step=step)
  finally:
    checkpointer.close()
  return setup.method(state), evaluator, meta, state


def initial_method(config: ml_collections.ConfigDict):
  """``(method, evaluator)`` as a run starts: a pretrained tower's weights (``model.pretrained``), else
  the random init; no workdir is read or written."""
  setup, evaluator, _ = _prepare(config, None)
  return setup.method(setup.init_state()), evaluator


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
  with config.unlocked():
    config.eval.final = True
  workdir = os.path.abspath(workdir)
  method, evaluator, meta, state = restore_method(config, workdir, step=step)
  is_main = jax.process_index() == 0
  result = evaluator.final(method, workdir=workdir, is_main=is_main, probe=state.get("probe"))
  result["step"] = int(meta.get("step", -1))
  if is_main:
    write_results(workdir, result, evaluated_by="jaxcl eval")
  return result


def write_results(workdir: str, result: dict[str, Any], *, evaluated_by: str) -> str:
  """Writes ``result`` to ``workdir/results.json`` and returns its path.

  ``jaxcl eval`` updates the file a finished ``jaxcl train`` wrote: the evaluation's numbers, table,
  protocol and timings replace the earlier ones, the training's own fields (``train_seconds``, the
  last loss, ...) stay, and ``evaluated_by`` / ``step`` say which checkpoint the numbers are of.
  """
  path = os.path.join(workdir, "results.json")
  merged: dict[str, Any] = {}
  if evaluated_by != "jaxcl train" and os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged.update(result, evaluated_by=evaluated_by)
  with open(path + ".tmp", "w") as f:
    json.dump(merged, f, indent=2, default=float)
  os.replace(path + ".tmp", path)
  return path
