"""The run's metrics: ``workdir/metrics.jsonl`` and TensorBoard events (tensorboardX, no TensorFlow)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _scalar(name: str, value: Any) -> float | None:
  """A Python float for JSON; non-finite values become None (JSON has no NaN/inf)."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"metric {name!r} must be a scalar, got shape {array.shape}; reduce it first.")
  x = float(array.reshape(()))
  return x if math.isfinite(x) else None


class MetricsWriter:
  """Writes scalar metrics to ``workdir/metrics.jsonl`` (one JSON object per line) and TensorBoard.

  Each line is ``{"step": int, "time": unix seconds, "<name>": float or null, ...}``; non-finite
  values are written as null (and skipped in TensorBoard), so a diverged loss shows as a gap.

  Args:
    workdir: the run's directory (created if missing). Events go to ``workdir/tensorboard``.
    enabled: False makes every call a no-op (non-zero processes of a multi-host run).
    resume_step: when a run resumes from a checkpoint at this step, lines the killed run wrote for
      later steps are dropped so the file and curves show one consistent history.
  """

  def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(os.fspath(workdir), METRICS_FILE)
    self._file = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None and os.path.exists(self.path):
      self._truncate_after(resume_step)
    self._file = open(self.path, "a", buffering=1)  # line-buffered: tail -f shows each write
    from tensorboardX import SummaryWriter  # import here: protobuf is slow to import

    self._tb = SummaryWriter(logdir=os.path.join(os.fspath(workdir), TENSORBOARD_DIR))

  def _truncate_after(self, step: int) -> None:
    with open(self.path) as f:
      lines = f.readlines()
    kept = []
    for line in lines:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line)
      except (ValueError, KeyError, TypeError):
        pass  # a line cut short by the kill
    with open(self.path, "w") as f:
      f.writelines(kept)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Records scalar ``metrics`` (floats, NumPy or 0-d JAX arrays) at ``step``."""
    if not self.enabled:
      return
    step = int(step)
    values = {name: _scalar(name, v) for name, v in metrics.items()}
    record = {"step": step, "time": round(time.time(), 3), **values}
    self._file.write(json.dumps(record) + "\n")
    for name, v in values.items():
      if v is not None:
        self._tb.add_scalar(name, v, global_step=step)

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    """Shows ``text`` (e.g. the experiment config) in TensorBoard's text tab."""
    if self.enabled:
      self._tb.add_text(tag, text, global_step=step)

  def flush(self) -> None:
    if self.enabled:
      self._file.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.enabled and self._file is not None:
      self._file.close()
      self._tb.close()
      self._file = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads a metrics.jsonl into ``{name: (steps, values)}`` sorted by step.

  When a step appears more than once for a name (a resumed run), the last line wins. Nulls (non-finite
  values) and unparsable lines are skipped.
  """
  series: dict[str, dict[int, float]] = {}
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
        step = int(record["step"])
      except (ValueError, KeyError, TypeError):
        continue
      for name, value in record.items():
        if name in ("step", "time") or not isinstance(value, int | float):
          continue
        series.setdefault(name, {})[step] = float(value)
  out = {}
  for name, points in series.items():
    steps = np.array(sorted(points), dtype=np.int64)
    out[name] = (steps, np.array([points[s] for s in steps], dtype=np.float64))
  return out
