"""The one training loop, for every method and every mesh: jitted donated steps, logging, a monitor hook,
async checkpoints and the divergence guard.

It takes plain arguments (a ``TrainSetup``, a data iterator, a ``Checkpointer``, a ``MetricsWriter``)
and knows nothing of configs or evaluation: the caller passes a ``monitor`` for anything measured
during training (the kNN monitor) and evaluates the returned state itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from jaxcl.report import MetricsWriter, ProgressBar
from jaxcl.train import mesh as mesh_lib
from jaxcl.train.checkpoint import Checkpointer
from jaxcl.train.preemption import Preempted, StopSignals
from jaxcl.train.state import TrainSetup

ON_NONFINITE = ("stop", "skip")


class NonFiniteError(FloatingPointError):
  """The loss or a gradient became NaN/inf and ``on_nonfinite='stop'``."""


@dataclasses.dataclass
class FitResult:
  """What ``fit`` returns: the final state and what the host saw of the run."""
  state: dict
  metrics: dict[str, float]        # the last logged metrics
  train_seconds: float             # wall time of the loop, compilation included
  examples_per_second: float | None  # after the first (compiling) step; None for runs of <= 1 step


def _host(metrics: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def check_guard(state: dict, checkpointer: Checkpointer, on_nonfinite: str,
                warn: Callable[[str], None] = print) -> None:
  """Acts on the state's non-finite step counter: raise (``"stop"``) or warn (``"skip"``)."""
  guard = jax.device_get(state["guard"])
  count, first = int(guard["nonfinite_count"]), int(guard["first_nonfinite_step"])
  if not count:
    return
  last_good = checkpointer.latest_step()
  where = (f"the last good checkpoint is step {last_good} in {checkpointer.directory}"
           if last_good is not None else "no checkpoint was saved before it")
  if on_nonfinite == "stop":
    raise NonFiniteError(
        f"non-finite loss or gradient in step {first + 1} (its update was not applied); {where}. Lower "
        "optim.lr, add optim.grad_clip_norm, or set train.on_nonfinite='skip' to skip such steps.")
  warn(f"warning: {count} non-finite step(s) skipped so far, the first was step {first + 1}.")


@contextlib.contextmanager
def _naming_the_save(checkpointer: Checkpointer, step: int | None):
  """An OS error while writing a checkpoint (a full disk, a lost mount) says which one, and which
  complete checkpoint a rerun resumes from."""
  try:
    yield
  except OSError as err:
    last = checkpointer.latest_step()
    what = f"checkpoint {step}" if step is not None else "a checkpoint"
    raise OSError(err.errno, f"cannot write {what} to {checkpointer.directory} ({err.strerror or err})"
                  f"; the last complete one is {last}. Free space or fix the directory, then run the "
                  "same command to resume.") from err


def fit(
    setup: TrainSetup,
    state: dict,
    batches: Iterator[Mapping[str, np.ndarray]],
    *,
    start: int,
    end: int,
    total_steps: int,
    batch_size: int,
    checkpointer: Checkpointer,
    writer: MetricsWriter,
    log_every: int,
    checkpoint_every: int = 0,
    on_nonfinite: str = "stop",
    monitor: Callable[[int, dict], Mapping[str, float]] | None = None,
    checkpoint_meta: Mapping[str, Any] | None = None,
    progress: bool = True,
    stop_on_signals: bool = True,
    example_unit: str = "img",
) -> FitResult:
  """Runs steps ``start .. end-1`` of a ``total_steps`` run from ``state``.

  Args:
    setup: the method's train setup (its jitted step and mesh).
    state: the train state at step ``start`` (fresh or restored).
    batches: this process's slice of each global batch, with ``get_state()`` (Grain), positioned at
      batch ``start``.
    start: the step ``state`` is at.
    end: the step to stop after (``total_steps``, or earlier for a planned stop).
    total_steps: the length of the run (logs, the progress bar, the final log line).
    batch_size: global batch size (examples/s).
    checkpointer: where checkpoints go; saved every ``checkpoint_every`` steps and at ``end``.
    writer: metrics log (``metrics.jsonl`` and TensorBoard).
    log_every: steps between metric lines (and divergence checks).
    checkpoint_every: steps between async checkpoints (0: only at ``end``).
    on_nonfinite: ``"stop"`` raises ``NonFiniteError``; ``"skip"`` warns and carries on.
    monitor: ``monitor(step, state) -> {name: value}`` merged into each logged line.
    checkpoint_meta: JSON facts saved with every checkpoint.
    progress: draw a progress bar (pass False on processes other than 0).
    stop_on_signals: on SIGTERM or Ctrl-C, finish the step in flight, save its checkpoint, wait for
      the commit and raise ``Preempted`` (``jaxcl.train.preemption``); every process stops at the
      same step.
    example_unit: what an example is, for the progress bar's ``<unit>/s`` ("img", "examples").

  Returns:
    A ``FitResult``.

  Raises:
    Preempted: a stop signal arrived; the checkpoint of ``Preempted.step`` is committed.
    NonFiniteError: a non-finite step with ``on_nonfinite='stop'``.
  """
  step_fn = setup.step_fn() if start < end else None
  bar = ProgressBar(total_steps, batch_size=batch_size, initial_step=start, enabled=progress,
                    unit=example_unit)
  last: dict[str, float] = {}
  t0, timed_from = time.perf_counter(), None
  with StopSignals(stop_on_signals) as signals:
    try:
      for step in range(start, end):
        batch = next(batches)
        data_state = batches.get_state()  # the stream after `step + 1` batches: saved with step+1
        state, metrics = step_fn(state, mesh_lib.shard_batch(batch, setup.mesh))
        done = step + 1
        if step == start:
          jax.block_until_ready(metrics)
          timed_from = (time.perf_counter(), done)  # throughput excludes compilation
        stop = signals.requested(done)
        log_now = done % log_every == 0 or done == total_steps
        save_now = (checkpoint_every and done % checkpoint_every == 0) or done == end or stop
        if log_now or save_now:
          check_guard(state, checkpointer, on_nonfinite, bar.write)
        if log_now:
          last = _host(metrics)
          if monitor is not None:
            last.update(monitor(done, state))
          writer.write(done, last)
          bar.update(done, loss=last["loss"])
        if save_now:
          with _naming_the_save(checkpointer, done):
            checkpointer.save(done, state, data_state=data_state, meta=checkpoint_meta)
        if stop:
          with _naming_the_save(checkpointer, done):
            checkpointer.wait()
          raise Preempted(done, signals.signal_name, str(checkpointer.directory))
    finally:
      bar.close()
      with _naming_the_save(checkpointer, None):
        checkpointer.wait()  # never exit with a save half-written
  seconds = time.perf_counter() - t0
  per_second = None
  if timed_from is not None and end - timed_from[1] > 0:
    per_second = (end - timed_from[1]) * batch_size / (time.perf_counter() - timed_from[0])
  return FitResult(state=state, metrics=last, train_seconds=seconds, examples_per_second=per_second)
