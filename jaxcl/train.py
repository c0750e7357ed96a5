"""``train_and_evaluate(config, workdir)``: the one training loop, for every method and every mesh.

Order of a run: validate the config (no compilation yet) -> mesh -> method state built already
sharded -> resume from the newest complete checkpoint in ``workdir`` (else ``train.init_checkpoint``,
else from scratch) -> jitted, donated steps with logging, the kNN monitor, async checkpoints and the
divergence guard -> final checkpoint, exported encoder, kNN + linear probe next to the random-init
encoder and raw pixels, curves and a t-SNE map.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxcl import checkpoint as ckpt_lib
from jaxcl import config_validation, grad_cache, optim, parallel
from jaxcl.train_step import make_train_step


class NonFiniteError(FloatingPointError):
  """The loss or a gradient became NaN/inf and ``train.on_nonfinite='stop'``."""


def _keys(seed: int) -> dict[str, jax.Array]:
  # Independent streams from the one seed; resume needs no stored RNG.
  root = jax.random.key(seed)
  return {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "train", "eval"))}


def _data_info(config):
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  return data.info(config.data)


def _create_method(config, info, init_key):
  from jaxcl import methods  # pylint: disable=g-import-not-at-top
  return methods.create(config, image_shape=tuple(info.image_shape), num_classes=info.num_classes,
                        class_names=list(info.class_names), rngs=nnx.Rngs(init_key))


def apply_compute_dtype(config: ml_collections.ConfigDict) -> None:
  """``train.compute_dtype='bfloat16'`` runs the encoder in bfloat16 (parameters stay float32)."""
  if config.train.compute_dtype != "float32" and "dtype" in config.model:
    with config.unlocked():
      config.model.dtype = config.train.compute_dtype


class Setup:
  """Everything built from a config before the first step: mesh, method, optimizer, state."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *, info=None):
    self.config, self.mesh = config, mesh
    self.info = info if info is not None else _data_info(config)
    self.keys = _keys(config.seed)
    init_key = self.keys["init"]
    abstract = nnx.eval_shape(lambda: _create_method(config, self.info, init_key))
    self.method_cls = type(abstract)
    self.trainable = self.method_cls.trainable
    self.graphdef, params, sharded, rest = nnx.split(
        abstract, self.trainable, parallel.SHARDED_VARIABLES, ...)
    self.specs = {"sharded": parallel.state_specs(sharded), "rest": parallel.state_specs(rest)}
    self.tx, self.schedule = optim.make_optimizer(
        config.optim, total_steps=config.steps, global_batch_size=config.batch_size)

    def init():
      model = _create_method(config, self.info, init_key)
      _, p, s, r = nnx.split(model, self.trainable, parallel.SHARDED_VARIABLES, ...)
      return {"step": jnp.zeros((), jnp.int32), "params": p, "sharded": s, "rest": r,
              "opt_state": self.tx.init(p),
              "guard": {"nonfinite_count": jnp.zeros((), jnp.int32),
                        "first_nonfinite_step": jnp.full((), -1, jnp.int32)}}

    self._init = init
    abstract_state = jax.eval_shape(init)
    named = lambda spec: jax.sharding.NamedSharding(mesh, spec)  # noqa: E731
    repl = parallel.replicated(mesh)
    self.shardings = jax.tree.map(lambda _: repl, abstract_state)
    self.shardings["sharded"] = jax.tree.map(named, self.specs["sharded"])
    self.shardings["rest"] = jax.tree.map(named, self.specs["rest"])
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, self.shardings)

  def init_state(self) -> dict:
    """The initial train state, created directly with its shardings (no host copy of the weights)."""
    return jax.jit(self._init, out_shardings=self.shardings)()

  def method(self, state: dict) -> nnx.Module:
    """The method module holding ``state``'s arrays (for evaluation and export)."""
    return nnx.merge(self.graphdef, state["params"], state["sharded"], state["rest"])

  def step_fn(self):
    t = self.config.train
    step = make_train_step(
        graphdef=self.graphdef, trainable=self.trainable, tx=self.tx, schedule=self.schedule,
        mesh=self.mesh, state_specs=self.specs, train_key=self.keys["train"],
        total_steps=self.config.steps, grad_cache_chunks=t.grad_cache_chunks)
    batch_sharding = parallel.batch_sharding(self.mesh)
    return jax.jit(step, donate_argnums=(0,), in_shardings=(self.shardings, batch_sharding),
                   out_shardings=(self.shardings, parallel.replicated(self.mesh)))


def _check_grad_cache(setup: Setup) -> None:
  if setup.config.train.grad_cache_chunks > 1:
    if not grad_cache.supports(setup.method_cls):
      raise ValueError(
          f"config.train.grad_cache_chunks={setup.config.train.grad_cache_chunks}: method "
          f"{setup.config.method.name!r} does not implement embed() and loss_from_embeddings(); set "
          "train.grad_cache_chunks=0 or use a method that supports gradient caching (simclr, supcon).")


def data_iterator(config, *, start_state=None):
  """This process's slice of the training stream, restored to ``start_state`` if given."""
  from jaxcl import data  # pylint: disable=g-import-not-at-top
  it = data.train_iterator(config.data, seed=config.seed, global_batch_size=config.batch_size,
                           process_index=jax.process_index(), process_count=jax.process_count())
  if start_state is not None:
    it.set_state(start_state)
  return it


def _host(metrics: dict) -> dict:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _guard_message(state, checkpointer) -> tuple[int, int]:
  guard = jax.device_get(state["guard"])
  return int(guard["nonfinite_count"]), int(guard["first_nonfinite_step"])


def _restore_init_checkpoint(setup: Setup, state: dict, path: str) -> dict:
  """Initialises parameters from another run's checkpoint (``train.init_checkpoint``)."""
  other = ckpt_lib.Checkpointer(path, async_save=False)
  abstract = dict(setup.abstract_state)
  restored, _, _ = other.restore(abstract)
  other.close()
  return dict(state, params=restored["params"], sharded=restored["sharded"], rest=restored["rest"])


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
  from jaxcl import report  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  t = config.train
  mesh = parallel.make_mesh(t.num_devices or None)
  config_validation.validate(config, num_devices=mesh.size, process_count=jax.process_count())
  apply_compute_dtype(config)
  is_main = jax.process_index() == 0
  setup = Setup(config, mesh)
  _check_grad_cache(setup)

  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints,
                                       keep_every=t.keep_every, async_save=t.async_checkpoint)
  start = checkpointer.latest_step()
  data_state = None
  if start is not None:
    state, data_state, _ = checkpointer.restore(setup.abstract_state, step=start)
  else:
    start = 0
    state = setup.init_state()
    if t.init_checkpoint:
      state = _restore_init_checkpoint(setup, state, t.init_checkpoint)

  if is_main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  writer = report.MetricsWriter(workdir, enabled=is_main, resume_step=start)
  if start == 0:
    writer.write_text("config", str(config))

  it = data_iterator(config, start_state=data_state) if start < config.steps else None
  if it is not None and data_state is None and start > 0:
    # The process count changed since the save: replay the stream up to `start` (rare, slow path).
    for _ in range(start):
      next(it)
  step_fn = setup.step_fn() if start < config.steps else None
  evaluator = _Evaluator(config, setup, mesh)
  bar = report.ProgressBar(config.steps, batch_size=config.batch_size, initial_step=start,
                           enabled=is_main and t.progress)
  last, t0, timed_from = {}, time.perf_counter(), None
  try:
    end = min(t.stop_at, config.steps) if t.stop_at else config.steps
    for step in range(start, end):
      batch = next(it)
      data_state = it.get_state()  # the stream after `step + 1` batches: saved with checkpoint step+1
      state, metrics = step_fn(state, parallel.shard_batch(batch, mesh))
      done = step + 1
      if step == start:
        jax.block_until_ready(metrics)
        timed_from = (time.perf_counter(), done)  # throughput excludes compilation
      log_now = done % t.log_every == 0 or done == config.steps
      save_now = (t.checkpoint_every and done % t.checkpoint_every == 0) or done == end
      if log_now or save_now:
        _check_guard(state, checkpointer, t.on_nonfinite, bar)
      if log_now:
        last = _host(metrics)
        if config.eval.knn_every and done % config.eval.knn_every == 0 and done < config.steps:
          last["knn_monitor"] = evaluator.knn(setup.method(state))
        writer.write(done, last)
        bar.update(done, loss=last["loss"])
      if save_now:
        checkpointer.save(done, state, data_state=data_state,
                          meta={"method": config.method.name, "data": config.data.name})
  finally:
    bar.close()
    checkpointer.wait()  # never exit with a save half-written

  train_seconds = time.perf_counter() - t0
  if t.stop_at and t.stop_at < config.steps:
    checkpointer.close()
    writer.close()
    return {"step": int(jax.device_get(state["step"])), **last, "stopped_at": t.stop_at}
  result: dict[str, Any] = {"step": int(jax.device_get(state["step"])), **last,
                            "train_seconds": round(train_seconds, 2)}
  if timed_from is not None and config.steps - timed_from[1] > 0:
    elapsed = time.perf_counter() - timed_from[0]
    result["images_per_second"] = (config.steps - timed_from[1]) * config.batch_size / elapsed

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


def _check_guard(state, checkpointer, on_nonfinite: str, bar) -> None:
  count, first = _guard_message(state, checkpointer)
  if not count:
    return
  last_good = checkpointer.latest_step()
  where = (f"the last good checkpoint is step {last_good} in {checkpointer.directory}"
           if last_good is not None else "no checkpoint was saved before it")
  if on_nonfinite == "stop":
    raise NonFiniteError(
        f"non-finite loss or gradient in step {first + 1} (its update was not applied); {where}. Lower "
        "optim.lr, add optim.grad_clip_norm, or set train.on_nonfinite='skip' to skip such steps.")
  bar.write(f"warning: {count} non-finite step(s) skipped so far, the first was step {first + 1}.")


def _export_encoder(method, config, workdir: str) -> None:
  encoder = getattr(method, "encoder", method)
  params = nnx.state(encoder, nnx.Param)
  stats = nnx.state(encoder, nnx.BatchStat)
  path = os.path.join(workdir, "encoder")
  ckpt_lib.export_params(path, {"params": params, "batch_stats": stats}, meta={
      "model": config.model.to_dict(), "method": config.method.name,
      "out_dim": getattr(encoder, "out_dim", None), "image_size": config.data.image_size})


class _Evaluator:
  """kNN monitor during training; kNN + linear probe + baselines at the end."""

  def __init__(self, config, setup: Setup, mesh):
    self.config, self.setup, self.mesh = config, setup, mesh
    self._arrays = None

  def arrays(self):
    if self._arrays is None:
      from jaxcl import data  # pylint: disable=g-import-not-at-top
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

  def _batch_size(self):
    n = self.mesh.size
    return max(n, self.config.eval.batch_size // n * n)

  def knn(self, method) -> float:
    from jaxcl import evaluate  # pylint: disable=g-import-not-at-top
    train, test = self.arrays()
    e = self.config.eval
    out = evaluate.evaluate_representation(
        method, train, test, knn_k=e.knn_k, knn_temperature=e.knn_temperature, linear=False,
        batch_size=self._batch_size(), mesh=self.mesh, num_classes=self.setup.info.num_classes)
    return out["knn"]

  def final(self, method, *, workdir: str, is_main: bool) -> dict:
    from jaxcl import evaluate, report  # pylint: disable=g-import-not-at-top
    e = self.config.eval
    if not e.final:
      return {}
    train, test = self.arrays()
    kw = dict(knn_k=e.knn_k, knn_temperature=e.knn_temperature,
              num_classes=self.setup.info.num_classes)
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
                                  class_names=list(self.setup.info.class_names),
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
  mesh = parallel.make_mesh(config.train.num_devices or None)
  config_validation.validate(config, num_devices=mesh.size, process_count=jax.process_count())
  apply_compute_dtype(config)
  setup = Setup(config, mesh)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  state, _, meta = checkpointer.restore(setup.abstract_state, step=step)
  checkpointer.close()
  with config.unlocked():
    config.eval.final = True
  result = _Evaluator(config, setup, mesh).final(setup.method(state), workdir=workdir,
                                                 is_main=jax.process_index() == 0)
  result["step"] = int(meta.get("step", -1))
  return result
