"""Image runs (``data_kind == "image"``): the image pipeline, and evaluation by the protocol.

``prepare`` builds the ``TrainSetup`` from the dataset's facts, the training stream (Grain over the
TFDS data source, resumable) and ``ImageEvaluator``: the kNN monitor during training and, at the end,
``jaxcl.evaluate.protocol`` (kNN + linear probe) on the pretrained encoder next to the random-init
encoder and raw pixels, the online probe's accuracy, and the metric-learning retrieval scores on the
classes never trained on (``data.train_classes``). Sequence runs use the same evaluator
(``tasks.sequence``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxcl import data, evaluate, report
from jaxcl.evaluate import protocol
from jaxcl.evaluate.linear import describe_protocol
from jaxcl.experiment import parts
from jaxcl.experiment.tasks.base import EvaluatorBase
from jaxcl.train import TrainSetup
from jaxcl.train.online_probe import OnlineProbe


def prepare(config: ml_collections.ConfigDict, workdir: str, mesh_: jax.sharding.Mesh):
  """(setup, evaluator, ``iterator(start_state)``) of an image (or sequence) run."""
  del workdir
  info = data.info(config.data)
  setup = parts.build_setup(config, mesh_, info)
  return (setup, ImageEvaluator(config, setup, info),
          lambda start_state: data_iterator(config, start_state=start_state))


def data_iterator(config: ml_collections.ConfigDict, *, start_state: Any = None):
  """This process's slice of the training stream, restored to ``start_state`` if given."""
  it = data.train_iterator(config.data, seed=config.seed, global_batch_size=config.batch_size,
                           process_index=jax.process_index(), process_count=jax.process_count())
  if start_state is not None:
    it.set_state(start_state)
  return it


class ImageEvaluator(EvaluatorBase):
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
      out["online_probe_test"] = probe_accuracy(probe, test_f, test[1])
    return out

  def _features(self, timings: dict[str, float], rep: str, features_fn, train, test):
    def both():
      kw = dict(batch_size=self.batch_size(), mesh=self.mesh)
      bar = lambda split: f"{rep}: {split} features" if self._is_main else None  # noqa: E731
      return (evaluate.extract_features(features_fn, train[0], progress=bar("train"), **kw),
              evaluate.extract_features(features_fn, test[0], progress=bar("test"), **kw))
    return self._timed(timings, f"{rep}/extract", both)

  def _score(self, timings: dict[str, float], rep: str, train_f, test_f, train, test) -> dict:
    """The protocol (``jaxcl.evaluate.protocol.evaluate_features``), each part a timed phase."""
    e = self.config.eval
    return protocol.evaluate_features(
        train_f, train[1], test_f, test[1], knn_k=e.knn_k, knn_temperature=e.knn_temperature,
        linear=e.linear_probe, num_classes=self.info.num_classes,
        extra_knn_k=e.get("knn_extra_k", 0), mesh=self.mesh, phase=self._clock(timings, rep))

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

  def protocol(self, train, test) -> dict:
    """What the final table measured and how: kNN's k and temperature, the probe's solver and L2
    grid, the split sizes."""
    e, d = self.config.eval, self.config.data
    out = {"knn_k": e.knn_k, "knn_temperature": e.knn_temperature,
           "splits": {d.train_split: len(train[1]), d.eval_split: len(test[1])}}
    if e.get("knn_extra_k"):
      out["knn_extra_k"] = e.knn_extra_k
    if e.linear_probe:
      out["linear_probe"] = describe_protocol(len(train[1]))
    return out

  def final(self, method: nnx.Module, *, workdir: str, is_main: bool,
            probe: dict | None = None) -> dict:
    """kNN + linear probe of ``method`` (and the baselines); one timed line per phase.

    The wall time of each phase (``load splits``, ``<representation>/extract``, ``/knn``,
    ``/linear probe``, ``random init/setup``, ...), ``other`` and the total go to
    ``result['eval_seconds']`` (hence ``results.json``). ``probe``: the online probe's state, whose
    test accuracy becomes the pretrained row's ``online_probe`` column.
    """
    e = self.config.eval
    if not e.final:
      return {}
    timings = self._begin(is_main)
    train, test = self._timed(timings, "load splits", self.arrays)  # ~0 s if the monitor loaded them
    train_f, test_f = self._features(timings, "pretrained", method, train, test)
    out = self._score(timings, "pretrained", train_f, test_f, train, test)
    if probe is not None:
      out["online_probe"] = self._timed(timings, "pretrained/online probe", probe_accuracy, probe,
                                        test_f, test[1])
    signals = train[0].ndim == 3  # [N, T, C] sequences: the raw baseline is the signal itself
    raw_name = "raw signal" if signals else "raw pixels"
    names = {"pretrained": f"{self.config.method.name} (pretrained)",
             "random_init": "random init (same encoder)", "raw_pixels": raw_name}
    rows = {names["pretrained"]: out}
    unseen = {"pretrained": self._unseen(timings, "pretrained", train_f, test_f)}
    result = dict(out)
    if e.baselines:
      fresh = self._fresh(timings, "random init")
      rand_f = self._features(timings, "random init", fresh, train, test)
      rand = self._score(timings, "random init", *rand_f, train, test)
      raw_f = self._timed(timings, f"{raw_name}/flatten",
                          lambda: (protocol.flat_pixels(train[0]), protocol.flat_pixels(test[0])))
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
    self._finish(result, table, timings, workdir=workdir, protocol=self.protocol(train, test),
                 what=f"{self.config.data.name}: {len(train[1])} train / {len(test[1])} test "
                      f"{'signals' if signals else 'images'}")
    if is_main and e.embedding_map:
      report.plot_embedding_map(test_f, test[1], os.path.join(workdir, "tsne.png"),
                                class_names=list(self.info.class_names),
                                title=f"{self.config.method.name}: test embeddings")
    return result


def probe_accuracy(probe: dict, features: np.ndarray, labels: np.ndarray) -> float:
  """Accuracy of the online probe's linear head on ``features``."""
  logits = OnlineProbe.logits(jax.device_get(probe), np.asarray(features, np.float32))
  return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))
