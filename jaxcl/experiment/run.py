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
import numpy as np
import optax
from flax import nnx

from jaxcl import data, evaluate, methods, models, report
from jaxcl.experiment import captions, describe, retrieval, validation
from jaxcl.experiment.evaluator import EvaluatorBase
from jaxcl.train import Checkpointer, TrainSetup, checkpoint, fit, grad_cache, lock, mesh, optim
from jaxcl.train.online_probe import OnlineProbe
from jaxcl.train.preemption import Preempted


def apply_compute_dtype(config: ml_collections.ConfigDict) -> None:
  """``train.compute_dtype='bfloat16'`` runs the encoder in bfloat16 (parameters stay float32)."""
  if config.train.compute_dtype != "float32" and "dtype" in config.model:
    with config.unlocked():
      config.model.dtype = config.train.compute_dtype


def build_setup(config: ml_collections.ConfigDict, mesh_: jax.sharding.Mesh,
                info: data.DataInfo | None = None, **text: int) -> TrainSetup:
  """The ``TrainSetup`` a config describes: its method, optimiser and schedule on ``mesh_``.

  ``info`` describes an image or sequence dataset; a text method gets its tokenizer's ``vocab_size``
  and ``pad_id`` instead (``jaxcl.experiment.retrieval``).
  """
  facts = text if info is None else dict(image_shape=tuple(info.image_shape),
                                         num_classes=info.num_classes,
                                         class_names=list(info.class_names))
  create = functools.partial(methods.create, config, **facts)
  tx, schedule = optim.make_optimizer(config.optim, total_steps=config.steps,
                                      global_batch_size=config.batch_size)
  probe = None
  if info is not None and config.eval.online_probe and info.num_classes >= 2:  # data with labels
    probe = OnlineProbe(info.num_classes, image_shape=tuple(info.image_shape),
                        tx=optax.adam(config.eval.online_probe_lr),
                        views=config.eval.online_probe_views)
  load = None
  if config.model.get("pretrained"):  # the towers start from a checkpoint's weights
    folder = models.pretrained.read_folder(config.model.pretrained)
    load = functools.partial(models.pretrained.load_into, folder=folder)
  setup = TrainSetup(lambda rngs: create(rngs=rngs), mesh=mesh_, tx=tx, schedule=schedule,
                     seed=config.seed, total_steps=config.steps,
                     grad_cache_chunks=config.train.grad_cache_chunks, online_probe=probe,
                     fsdp_min_size=config.train.fsdp_min_size if config.train.get("fsdp") else 0,
                     load_weights=load)
  chunks = config.train.grad_cache_chunks
  if chunks > 1 and not grad_cache.supports(setup.method_cls):
    raise ValueError(
        f"config.train.grad_cache_chunks={chunks}: method {config.method.name!r} does not implement "
        "embed() and loss_from_embeddings(); set train.grad_cache_chunks=0 or use a method that "
        "supports gradient caching (simclr, supcon, retrieval).")
  return setup


def _prepare(config: ml_collections.ConfigDict, workdir: str):
  """Validated config -> (setup, evaluator, ``iterator(start_state)``) for its kind of data."""
  mesh_ = mesh.make_mesh(config.train.num_devices or None)
  validation.validate(config, num_devices=mesh_.size, process_count=jax.process_count())
  apply_compute_dtype(config)
  if config.method.name in methods.TEXT_METHODS:
    tokens = retrieval.tokenizer(config, workdir)
    setup = build_setup(config, mesh_, vocab_size=tokens.vocab_size, pad_id=tokens.pad_id)
    return setup, retrieval.SearchEvaluator(config, setup, tokens), retrieval.pairs_stream(config,
                                                                                            tokens)
  if captions.is_caption_run(config):  # CLIP/SigLIP on a dataset's own captions
    return captions.prepare(config, workdir, mesh_, build_setup)
  info = data.info(config.data)
  setup = build_setup(config, mesh_, info)
  return (setup, Evaluator(config, setup, info),
          lambda start_state: data_iterator(config, start_state=start_state))


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
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(result, f, indent=2, default=float)
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


class Evaluator(EvaluatorBase):
  """kNN monitor during training; kNN + linear probe + baselines at the end (``config.eval``)."""

  def __init__(self, config: ml_collections.ConfigDict, setup: TrainSetup, info: data.DataInfo):
    super().__init__(config, setup)
    self.info = info
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

  def knn(self, method: nnx.Module) -> float:
    """kNN accuracy of ``method``'s features (train split as memory bank, eval split as queries)."""
    return self.monitor(method)["knn_monitor"]

  def monitor(self, method: nnx.Module, probe: dict | None = None) -> dict[str, float]:
    """The in-training monitor: kNN accuracy, and the online probe's test accuracy if it has one."""
    train, test = self.arrays()
    e = self.config.eval
    feats = functools.partial(evaluate.extract_features, batch_size=self.batch_size(), mesh=self.mesh)
    test_f = feats(method, test[0])
    out = {"knn_monitor": evaluate.knn_accuracy(
        feats(method, train[0]), train[1], test_f, test[1], k=e.knn_k, temperature=e.knn_temperature,
        num_classes=self.info.num_classes, mesh=self.mesh)}
    if probe is not None:
      out["online_probe_test"] = _probe_accuracy(probe, test_f, test[1])
    return out

  def _features(self, timings: dict[str, float], rep: str, features_fn, train, test):
    def both():
      kw = dict(batch_size=self.batch_size(), mesh=self.mesh)
      bar = lambda split: f"{rep}: {split} features" if self._is_main else None  # noqa: E731
      return (evaluate.extract_features(features_fn, train[0], progress=bar("train"), **kw),
              evaluate.extract_features(features_fn, test[0], progress=bar("test"), **kw))
    return self._timed(timings, f"{rep}/extract", both)

  def _score(self, timings: dict[str, float], rep: str, train_f, test_f, train, test) -> dict:
    e = self.config.eval
    out = {"knn": self._timed(
        timings, f"{rep}/knn", evaluate.knn_accuracy, train_f, train[1], test_f, test[1],
        k=e.knn_k, temperature=e.knn_temperature, num_classes=self.info.num_classes, mesh=self.mesh)}
    if e.get("knn_extra_k"):
      out[f"knn_k{e.knn_extra_k}"] = evaluate.knn_accuracy(
          train_f, train[1], test_f, test[1], k=e.knn_extra_k, temperature=e.knn_temperature,
          num_classes=self.info.num_classes, mesh=self.mesh)
    if e.linear_probe:
      out["linear"] = self._timed(timings, f"{rep}/linear probe", evaluate.linear_probe, train_f,
                                  train[1], test_f, test[1], num_classes=self.info.num_classes)
    return out

  def _unseen_end(self) -> int:
    """One past the last class retrieval is scored on: ``train_classes + validation_classes`` when
    tuning (classes the final run trains on), else every class after the trained ones."""
    d = self.config.data
    return d.train_classes + d.validation_classes if d.get("validation_classes") else self.info.num_classes

  def _unseen(self, timings: dict[str, float], rep: str, train_f, test_f) -> dict | None:
    """Retrieval scores over every image of the classes held out of training (``data.train_classes``):
    the metric-learning protocol; None without it."""
    n = self.config.data.get("train_classes", 0)
    if not n:
      return None
    end = self._unseen_end()
    train, test = self.arrays()
    keep_train = (train[1] >= n) & (train[1] < end)
    keep_test = (test[1] >= n) & (test[1] < end)
    features = np.concatenate([np.asarray(train_f)[keep_train], np.asarray(test_f)[keep_test]])
    labels = np.concatenate([train[1][keep_train], test[1][keep_test]])
    return self._timed(timings, f"{rep}/retrieval (unseen classes)", evaluate.retrieval_scores,
                       features, labels, distance=self.config.eval.retrieval_distance)

  def final(self, method: nnx.Module, *, workdir: str, is_main: bool,
            probe: dict | None = None) -> dict:
    """kNN + linear probe of ``method`` (and the baselines); one timed line per phase.

    The wall time of each phase (``<representation>/extract``, ``/knn``, ``/linear probe``) and the
    total go to ``result['eval_seconds']`` (hence ``results.json``). ``probe``: the online probe's
    state, whose test accuracy becomes the pretrained row's ``online_probe`` column.
    """
    e = self.config.eval
    if not e.final:
      return {}
    timings = self._begin(is_main)
    train, test = self._timed(timings, "load splits", self.arrays)  # ~0 s if the monitor loaded them
    train_f, test_f = self._features(timings, "pretrained", method, train, test)
    out = self._score(timings, "pretrained", train_f, test_f, train, test)
    if probe is not None:
      out["online_probe"] = _probe_accuracy(probe, test_f, test[1])
    signals = train[0].ndim == 3  # [N, T, C] sequences: the raw baseline is the signal itself
    raw_name = "raw signal" if signals else "raw pixels"
    names = {"pretrained": f"{self.config.method.name} (pretrained)",
             "random_init": "random init (same encoder)", "raw_pixels": raw_name}
    rows = {names["pretrained"]: out}
    unseen = {"pretrained": self._unseen(timings, "pretrained", train_f, test_f)}
    result = dict(out)
    if e.baselines:
      # Initialisation is deterministic: this is exactly the encoder the run started from.
      fresh = self.setup.method(self.setup.init_state())
      rand_f = self._features(timings, "random init", fresh, train, test)
      rand = self._score(timings, "random init", *rand_f, train, test)
      raw_f = _flat_pixels(train[0]), _flat_pixels(test[0])
      raw = self._score(timings, raw_name, *raw_f, train, test)
      rows[names["random_init"]] = rand
      rows[names["raw_pixels"]] = raw
      result["random_init"], result["raw_pixels"] = rand, raw
      unseen["random_init"] = self._unseen(timings, "random init", *rand_f)
      unseen["raw_pixels"] = self._unseen(timings, raw_name, *raw_f)
    table = evaluate.format_table(rows, column_titles={
        "knn": f"kNN (k={e.knn_k})", f"knn_k{e.get('knn_extra_k')}": f"kNN (k={e.get('knn_extra_k')})",
        "online_probe": "online probe"})
    if unseen["pretrained"] is not None:
      result["unseen_classes"] = unseen
      n = self.config.data.train_classes
      table += (f"\n\nRetrieval on the classes never trained on ({n}..{self._unseen_end() - 1}; "
                f"every image a query against all the others, {e.retrieval_distance} distance):\n\n"
                + evaluate.format_table({names[k]: v for k, v in unseen.items()}, column_titles={
                    "r_precision": "R-precision", "map@r": "MAP@R",
                    **{f"recall@{q}": f"R@{q}" for q in (1, 2, 4, 8)}}))
    self._finish(result, table, timings, workdir=workdir,
                 what=f"{self.config.data.name}: {len(train[1])} train / {len(test[1])} test "
                      f"{'signals' if signals else 'images'}")
    if is_main and e.embedding_map:
      report.plot_embedding_map(test_f, test[1], os.path.join(workdir, "tsne.png"),
                                class_names=list(self.info.class_names),
                                title=f"{self.config.method.name}: test embeddings")
    return result


def _probe_accuracy(probe: dict, features: np.ndarray, labels: np.ndarray) -> float:
  """Accuracy of the online probe's linear head on ``features``."""
  logits = OnlineProbe.logits(jax.device_get(probe), np.asarray(features, np.float32))
  return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


def _flat_pixels(images: np.ndarray) -> np.ndarray:
  """Raw-pixel features: flattened uint8 / 255 (or floats as given), as ``raw_pixel_baseline``."""
  images = np.asarray(images)
  x = images.reshape(len(images), -1).astype(np.float32)
  return x / 255.0 if np.issubdtype(images.dtype, np.integer) else x


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
  method, evaluator, meta, state = restore_method(config, workdir, step=step)
  result = evaluator.final(method, workdir=os.path.abspath(workdir),
                           is_main=jax.process_index() == 0, probe=state.get("probe"))
  result["step"] = int(meta.get("step", -1))
  return result
