"""Pictures of a run: training curves and a t-SNE map of embeddings, drawn on bare matplotlib figures."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from jaxcl.report.log import read_metrics


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
