"""What a user sees of a run: metrics files, a progress bar and pictures.

Public API::

  MetricsWriter(workdir, *, enabled=True, resume_step=None)
      .write(step, {"loss": 1.2, ...})    -> appends to workdir/metrics.jsonl and TensorBoard events
      .write_text(tag, text)              -> e.g. the config, to TensorBoard's text tab
      .close()                            (also a context manager)
  read_metrics(metrics_jsonl_path) -> {key: (steps np.ndarray, values np.ndarray)}
  ProgressBar(total_steps, *, batch_size, initial_step=0, enabled=True)
      .update(step, loss=..., **scalars)  -> step, loss, images/s and ETA on one line
      .write(message)                     -> print without breaking the bar
      .close()
  plot_curves(metrics_jsonl_path, out_png, *, keys=None) -> out_png
  plot_embedding_map(features, labels, out_png, *, method="tsne", class_names=None,
                     max_points=2000, seed=0) -> out_png

Pass ``enabled=jax.process_index() == 0`` so only one process of a multi-host run writes files and
draws the bar. TensorBoard events come from tensorboardX, which does not need TensorFlow;
``tensorboard --logdir WORKDIR`` reads them. Pictures are drawn on a bare ``matplotlib.figure.Figure``
(no pyplot state, no display needed).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
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


class ProgressBar:
  """A tqdm bar showing step, loss, images/s and ETA.

  images/s is measured between consecutive ``update`` calls (so the first call, which includes
  compilation, does not drag the figure down for the rest of the run) and smoothed.

  Args:
    total_steps: the step the run ends at.
    batch_size: global images per step.
    initial_step: the step a resumed run starts from.
    enabled: False draws nothing (non-zero processes).
    smoothing: weight of the newest images/s measurement.
    file: stream to draw on (default stderr).
  """

  def __init__(self, total_steps: int, *, batch_size: int, initial_step: int = 0,
               enabled: bool = True, smoothing: float = 0.3, file: Any = None):
    from tqdm.auto import tqdm

    self.batch_size = int(batch_size)
    self.smoothing = smoothing
    self._step = int(initial_step)
    self._time = None
    self._images_per_s = None
    self._bar = tqdm(
        total=int(total_steps), initial=int(initial_step), disable=not enabled, unit="step",
        dynamic_ncols=True, smoothing=smoothing,
        # a file log (not a terminal) would otherwise get a line every 0.1 s
        mininterval=0.1 if _is_tty() else 30.0, file=file,
    )

  def update(self, step: int, *, loss: Any = None, **scalars: Any) -> None:
    """Moves the bar to ``step`` and shows ``loss`` and any other ``scalars`` next to images/s."""
    step = int(step)
    now = time.perf_counter()
    if self._time is not None and step > self._step:
      rate = (step - self._step) * self.batch_size / max(now - self._time, 1e-9)
      old = self._images_per_s
      self._images_per_s = rate if old is None else old + self.smoothing * (rate - old)
    postfix = {}
    if loss is not None:
      postfix["loss"] = f"{float(np.asarray(loss)):.4f}"
    for name, value in scalars.items():
      postfix[name] = f"{float(np.asarray(value)):.4g}"
    if self._images_per_s is not None:
      postfix["img/s"] = f"{self._images_per_s:,.0f}"
    self._bar.set_postfix(postfix, refresh=False)
    self._bar.update(step - self._step)
    self._step, self._time = step, now

  @property
  def images_per_second(self) -> float | None:
    return self._images_per_s

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


def plot_curves(
    metrics_jsonl_path: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
  """Draws each metric of a metrics.jsonl against step, one panel per metric, into a PNG.

  Args:
    metrics_jsonl_path: written by ``MetricsWriter``.
    out_png: output path.
    keys: metrics to draw, in order; default: every metric logged at two or more steps, ``loss``
      first, at most 12.
    title: figure title (e.g. the config name).

  Returns:
    ``out_png`` as a string.
  """
  from matplotlib.figure import Figure

  series = read_metrics(metrics_jsonl_path)
  if keys is None:
    # One-off values (final accuracies, train_seconds) are not curves: leave them to results.json.
    curves = [k for k in series if len(series[k][0]) >= 2] or list(series)
    keys = sorted(curves, key=lambda k: (k != "loss", k))[:12]
  missing = [k for k in keys if k not in series]
  if missing:
    raise ValueError(f"keys {missing} not in {metrics_jsonl_path} (it has {sorted(series)}).")
  if not keys:
    raise ValueError(f"{metrics_jsonl_path} has no metrics to plot.")
  cols = min(3, len(keys))
  rows = math.ceil(len(keys) / cols)
  fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
  for i, key in enumerate(keys):
    ax = fig.add_subplot(rows, cols, i + 1)
    steps, values = series[key]
    ax.plot(steps, values, marker="o" if len(steps) <= 20 else None, markersize=3, linewidth=1.2)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.savefig(out_png, dpi=110)
  return os.fspath(out_png)


def plot_embedding_map(
    features: np.ndarray,
    labels: np.ndarray,
    out_png: str | os.PathLike,
    *,
    method: str = "tsne",
    class_names: Sequence[str] | None = None,
    max_points: int = 2000,
    seed: int = 0,
    title: str | None = None,
    threads: int | None = 1,
) -> str:
  """A 2-D map of embeddings coloured by class (t-SNE, van der Maaten & Hinton 2008, or PCA).

  Args:
    features: [N, D] embeddings (e.g. the test set's ``method.features``).
    labels: [N] integer classes.
    out_png: output path.
    method: "tsne" (sklearn, after PCA to 50 dims, the usual speed-up) or "pca" (instant).
    class_names: legend names per class index; default the indices.
    max_points: random subsample size (fixed ``seed``) so t-SNE takes seconds.
    seed: subsample and t-SNE seed.
    title: figure title.
    threads: OpenMP threads for t-SNE; None uses the library default. One thread is the default
      because Barnes-Hut t-SNE's OpenMP loops collapse on a busy host (540 digits: 2 s with one
      thread, 97 s with the default on a 2-core machine at load 17).

  Returns:
    ``out_png`` as a string.
  """
  from matplotlib.figure import Figure
  from sklearn.decomposition import PCA
  from threadpoolctl import threadpool_limits

  if method not in ("tsne", "pca"):
    raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}.")
  x = np.asarray(features, np.float32).reshape(len(features), -1)
  y = np.asarray(labels)
  if len(x) != len(y) or len(x) < 3:
    raise ValueError(f"need >= 3 features with one label each, got {x.shape} and {y.shape}.")
  rng = np.random.default_rng(seed)
  if len(x) > max_points:
    keep = np.sort(rng.choice(len(x), max_points, replace=False))
    x, y = x[keep], y[keep]
  x = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x)
  if method == "tsne":
    from sklearn.manifold import TSNE

    with threadpool_limits(limits=threads):
      xy = TSNE(
          n_components=2, init="pca", perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed,
      ).fit_transform(x)
  else:
    xy = x[:, :2] if x.shape[1] >= 2 else np.c_[x, np.zeros(len(x))]

  classes = np.unique(y)
  fig = Figure(figsize=(7.5, 6.5), layout="constrained")
  ax = fig.add_subplot()
  cmap = _class_colors(len(classes))
  for i, c in enumerate(classes):
    sel = y == c
    name = class_names[c] if class_names is not None else str(c)
    ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=cmap[i], label=name, alpha=0.8, linewidths=0)
  ax.set_xticks([])
  ax.set_yticks([])
  if len(classes) <= 20:
    ax.legend(markerscale=2.5, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)
  ax.set_title(title or f"{'t-SNE' if method == 'tsne' else 'PCA'} of {len(x)} embeddings")
  fig.savefig(out_png, dpi=110)
  return os.fspath(out_png)


def _class_colors(n: int) -> list:
  from matplotlib import colormaps

  cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
  return [cmap(i) if n <= 20 else cmap(i / max(n - 1, 1)) for i in range(n)]
