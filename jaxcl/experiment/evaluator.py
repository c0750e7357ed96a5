"""What the three evaluators of a run share (images: ``run.Evaluator``; text search:
``retrieval.SearchEvaluator``; image-caption recall: ``captions.CaptionEvaluator``): the mesh, the
evaluation batch, and phases timed on one printed line each."""

from __future__ import annotations

import os
import time

import jax
import ml_collections

from jaxcl.train import TrainSetup


class EvaluatorBase:
  """``monitor(method, probe)`` during training and ``final(method, ...)`` at the end, in subclasses."""

  def __init__(self, config: ml_collections.ConfigDict, setup: TrainSetup):
    self.config, self.setup, self.mesh = config, setup, setup.mesh
    self._is_main = jax.process_index() == 0

  def batch_size(self) -> int:
    """Examples per evaluation step: ``eval.batch_size`` rounded down to a multiple of the devices."""
    n = self.mesh.size
    return max(n, self.config.eval.batch_size // n * n)

  def _timed(self, timings: dict[str, float], name: str, fn, *args, **kwargs):
    """Runs one evaluation phase, prints one line with its wall time and records it in ``timings``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - t0, 2)
    if self._is_main:
      print(f"eval: {name}: {timings[name]:.1f}s", flush=True)
    return out

  def _begin(self, is_main: bool) -> dict[str, float]:
    """Starts the final evaluation's clock; returns the dict its phases' wall times go to."""
    self._is_main, self._started = is_main, time.perf_counter()
    return {}

  def _finish(self, result: dict, table: str, timings: dict[str, float], *, what: str,
              workdir: str) -> dict:
    """Adds the total time and the table to ``result``; the main process prints them after ``what``
    (the data evaluated on) and writes the table to ``workdir/results.md``."""
    timings["total"] = round(time.perf_counter() - self._started, 2)
    result["eval_seconds"], result["table"] = timings, table
    if self._is_main:
      print(f"\n{what} (evaluated in {timings['total']:.1f}s)\n{table}\n", flush=True)
      with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    return result
