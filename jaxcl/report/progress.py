"""A progress bar for the training loop: step, loss, examples/s (img/s for images) and ETA on one
line (tqdm)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

class ProgressBar:
  """A tqdm bar showing step, loss, examples/s and ETA.

  examples/s (shown as ``<unit>/s``) is measured between consecutive ``update`` calls (so the
  first call, which includes compilation, does not drag the figure down for the rest of the run) and
  smoothed.

  Args:
    total_steps: the step the run ends at.
    batch_size: global examples per step.
    initial_step: the step a resumed run starts from.
    enabled: False draws nothing (non-zero processes).
    unit: what one example of the batch is, shown as ``<unit>/s``: "img" for images, "examples"
      for text pairs or sequences.
    smoothing: weight of the newest examples/s measurement.
    file: stream to draw on (default stderr).
  """

  def __init__(self, total_steps: int, *, batch_size: int, initial_step: int = 0,
               enabled: bool = True, unit: str = "img", smoothing: float = 0.3, file: Any = None):
    from tqdm.auto import tqdm

    self.batch_size = int(batch_size)
    self.smoothing = smoothing
    self.unit = unit
    self._step = int(initial_step)
    self._time = None
    self._per_s = None
    self._bar = tqdm(
        total=int(total_steps), initial=int(initial_step), disable=not enabled, unit="step",
        dynamic_ncols=True, smoothing=smoothing,
        # a file log (not a terminal) would otherwise get a line every 0.1 s
        mininterval=0.1 if _is_tty() else 30.0, file=file,
    )

  def update(self, step: int, *, loss: Any = None, **scalars: Any) -> None:
    """Moves the bar to ``step`` and shows ``loss`` and any other ``scalars`` next to examples/s."""
    step = int(step)
    now = time.perf_counter()
    if self._time is not None and step > self._step:
      rate = (step - self._step) * self.batch_size / max(now - self._time, 1e-9)
      old = self._per_s
      self._per_s = rate if old is None else old + self.smoothing * (rate - old)
    postfix = {}
    if loss is not None:
      postfix["loss"] = f"{float(np.asarray(loss)):.4f}"
    for name, value in scalars.items():
      postfix[name] = f"{float(np.asarray(value)):.4g}"
    if self._per_s is not None:
      postfix[f"{self.unit}/s"] = f"{self._per_s:,.0f}"
    self._bar.set_postfix(postfix, refresh=False)
    self._bar.update(step - self._step)
    self._step, self._time = step, now

  @property
  def examples_per_second(self) -> float | None:
    return self._per_s

  def write(self, message: str) -> None:
    if not self._bar.disable:
      self._bar.write(message)

  def close(self) -> None:
    self._bar.close()

  def __enter__(self) -> ProgressBar:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _is_tty() -> bool:
  import sys

  return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
