"""What the tasks' evaluators share: the mesh, the evaluation batch, and the final evaluation's clock.

Every phase of the final evaluation (loading, building the baseline, encoding, searching, probing) runs
through ``_timed``, which prints one line with its wall time; ``_finish`` adds ``other`` (whatever ran
between the phases) and the ``total``, so the phases of ``result["eval_seconds"]`` add up to the total.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

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

  def _clock(self, timings: dict[str, float] | None,
             prefix: str) -> Callable[[str, Callable[[], Any]], Any]:
    """``phase(name, fn)``: runs ``fn()`` as the phase ``prefix/name`` (untimed when ``timings`` is
    None: the in-training monitor)."""
    if timings is None:
      return lambda name, fn: fn()
    return lambda name, fn: self._timed(timings, f"{prefix}/{name}", fn)

  def _fresh(self, timings: dict[str, float], name: str):
    """The method the run started from (initialisation is deterministic), as a timed phase."""
    return self._timed(timings, f"{name}/setup", lambda: self.setup.method(self.setup.init_state()))

  def _begin(self, is_main: bool) -> dict[str, float]:
    """Starts the final evaluation's clock; returns the dict its phases' wall times go to."""
    self._is_main, self._started = is_main, time.perf_counter()
    return {}

  def _finish(self, result: dict, table: str, timings: dict[str, float], *, what: str,
              workdir: str, protocol: dict | None = None) -> dict:
    """Adds the phases' times (with ``other``: the time between them) and the total, the table and
    the ``protocol`` (what was measured how) to ``result``; the main process prints them after
    ``what`` (the data evaluated on) and writes the table to ``workdir/results.md``."""
    total = round(time.perf_counter() - self._started, 2)
    timings["other"] = round(max(0.0, total - sum(timings.values())), 2)
    timings["total"] = round(sum(timings.values()), 2)
    result["eval_seconds"], result["table"] = timings, table
    if protocol is not None:
      result["protocol"] = protocol
    if self._is_main:
      print(f"\n{what} (evaluated in {timings['total']:.1f}s)\n{table}\n", flush=True)
      with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    return result
