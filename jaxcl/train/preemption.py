"""Stopping at a step boundary when the machine is being taken away (SIGTERM) or the user presses Ctrl-C.

Schedulers announce a preemption with SIGTERM and kill the process a grace period later (Kubernetes 30 s
by default, SLURM ``--signal``, TPU maintenance events). ``StopSignals`` turns the signal into a request
that the training loop honours after the step in flight: it saves a checkpoint of that step (model,
optimizer, step, data-iterator state), waits for it to commit and raises ``Preempted``; the command line
turns that into one line and exit status ``PREEMPTED_EXIT_CODE`` (75, ``EX_TEMPFAIL``: "temporary
failure, retry"), or 130 after Ctrl-C.

Every process must save the same step. With one process the signal handler's flag is enough. With
several (``jax.distributed``), JAX's preemption service catches SIGTERM on any process, tells the
others through the coordination service and names a step that all of them reach
(``multihost_utils.reached_preemption_sync_point``); Ctrl-C on a process is forwarded to that service
as a SIGTERM so that the same agreement applies.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

PREEMPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: schedulers and wrappers may retry the same command


class Preempted(Exception):
  """Training stopped on a signal after ``step`` steps, whose checkpoint has been committed."""

  def __init__(self, step: int, signal_name: str, checkpoint_dir: str):
    self.step, self.signal_name, self.checkpoint_dir = step, signal_name, checkpoint_dir
    super().__init__(f"stopped by {signal_name} after step {step}; checkpoint {step} is saved in "
                     f"{checkpoint_dir}. Run the same command again to resume from it.")

  @property
  def exit_code(self) -> int:
    return 130 if self.signal_name == "SIGINT" else PREEMPTED_EXIT_CODE


def _multi_process() -> bool:
  return jax.process_count() > 1


class StopSignals:
  """Context manager: while active, SIGTERM and SIGINT ask the loop to stop after the current step.

  ``requested(step)`` is called once per step by every process with the number of steps done; it is True
  on every process at the same step once a stop was asked for anywhere. A second Ctrl-C while a stop is
  pending interrupts at once (``KeyboardInterrupt``); committed checkpoints are never touched by it.
  Outside the main thread (where Python cannot install handlers) it does nothing.
  """

  def __init__(self, enabled: bool = True):
    self.enabled = enabled and threading.current_thread() is threading.main_thread()
    self.signal_name: str | None = None
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "StopSignals":
    if self.enabled:
      # With several processes JAX's preemption service owns SIGTERM; only Ctrl-C is ours.
      caught = (signal.SIGINT,) if _multi_process() else (signal.SIGTERM, signal.SIGINT)
      for sig in caught:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    del frame
    if signum == signal.SIGINT and self.signal_name is not None:
      raise KeyboardInterrupt  # asked twice: stop now
    self.signal_name = signal.Signals(signum).name
    if _multi_process():
      os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption service agrees a step with the others

  def requested(self, step: int) -> bool:
    if not self.enabled:
      return False
    if _multi_process():
      try:
        reached = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError as err:  # the preemption service is off (jax_enable_preemption_service)
        print(f"jaxcl: warning: no stop on SIGTERM across processes ({err}).", file=sys.stderr)
        self.enabled = False
        return False
      if reached:
        self.signal_name = self.signal_name or "SIGTERM"
      return reached
    return self.signal_name is not None
