"""The evaluation protocol: kNN and linear-probe accuracy of precomputed features, of a frozen encoder's
features, and of raw pixels (the floor every representation should beat), and the results table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxcl.evaluate.extract import extract_features
from jaxcl.evaluate.knn import knn_accuracy
from jaxcl.evaluate.linear import linear_probe


def _untimed(name: str, fn: Callable[[], Any]) -> Any:
  del name
  return fn()


def flat_pixels(images: np.ndarray) -> np.ndarray:
  """Raw-pixel features [N, H*W*C]: flattened uint8 / 255, or floats as given (signals)."""
  images = np.asarray(images)
  x = images.reshape(len(images), -1).astype(np.float32)
  return x / 255.0 if np.issubdtype(images.dtype, np.integer) else x


def evaluate_features(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    *,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    linear: bool = True,
    linear_kwargs: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    extra_knn_k: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    phase: Callable[[str, Callable[[], Any]], Any] = _untimed,
) -> dict[str, float]:
  """kNN (and, with ``linear=True``, linear-probe) accuracy of precomputed features.

  Args:
    extra_knn_k: > 0: also kNN with this k, under ``knn_k{extra_knn_k}``.
    mesh: shards the kNN similarity over its devices (``knn_accuracy``).
    phase: ``phase(name, fn)`` runs each part ("knn", "knn k=..", "linear probe") and returns its
      result: a caller's clock (default: runs it).

  Returns:
    ``{"knn": acc}`` or ``{"knn": acc, "linear": acc}`` (and ``knn_k<extra>``), accuracies in [0, 1].
  """
  knn = lambda k: (lambda: knn_accuracy(  # noqa: E731
      train_feats, train_labels, test_feats, test_labels, k=k, temperature=knn_temperature,
      num_classes=num_classes, mesh=mesh))
  result = {"knn": phase("knn", knn(knn_k))}
  if extra_knn_k:
    result[f"knn_k{extra_knn_k}"] = phase(f"knn k={extra_knn_k}", knn(extra_knn_k))
  if linear:
    result["linear"] = phase("linear probe", lambda: linear_probe(
        train_feats, train_labels, test_feats, test_labels, num_classes=num_classes,
        **dict(linear_kwargs or {})))
  return result


def evaluate_representation(
    features_fn: Any,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    linear: bool = True,
    linear_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    mesh: jax.sharding.Mesh | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
  """Extracts frozen features of train and test images and scores them by kNN and linear probe.

  Args:
    features_fn: as in ``extract_features`` (e.g. ``method`` or ``method.features``).
    train: (images [N, H, W, C] uint8, labels [N]); the kNN memory bank and the probe's fitting set.
    test: (images [M, H, W, C] uint8, labels [M]).
    knn_k, knn_temperature: the kNN monitor's k and temperature (Wu et al. 2018: 200, 0.1).
    linear: also fit the linear probe (after training); False for the cheap in-training monitor.
    linear_kwargs: extra arguments of ``linear_probe`` (``l2``, ``l2_grid``, ``max_iter``, ``seed``).
    batch_size, mesh: as in ``extract_features``.
    num_classes: default ``max(all labels) + 1``.

  Returns:
    ``{"knn": acc}`` plus ``"linear"`` when ``linear``; accuracies in [0, 1].
  """
  train_feats = extract_features(features_fn, train[0], batch_size=batch_size, mesh=mesh)
  test_feats = extract_features(features_fn, test[0], batch_size=batch_size, mesh=mesh)
  return evaluate_features(
      train_feats, train[1], test_feats, test[1], knn_k=knn_k, knn_temperature=knn_temperature,
      linear=linear, linear_kwargs=linear_kwargs, num_classes=num_classes,
  )


def raw_pixel_baseline(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    linear: bool = True,
    linear_kwargs: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
  """The same kNN / linear-probe protocol on flattened pixels (uint8 / 255, or floats as given).

  The floor every learned representation should beat: on digits it is already strong.
  """
  return evaluate_features(
      flat_pixels(train[0]), train[1], flat_pixels(test[0]), test[1], knn_k=knn_k,
      knn_temperature=knn_temperature, linear=linear, linear_kwargs=linear_kwargs,
      num_classes=num_classes,
  )


_COLUMN_TITLES = {"knn": "kNN", "linear": "linear probe"}


def format_table(
    rows: Mapping[str, Mapping[str, float]],
    *,
    style: str = "markdown",
    title: str = "representation",
    column_titles: Mapping[str, str] | None = None,
    digits: int = 1,
) -> str:
  """Formats ``{row name: {metric: accuracy in [0, 1]}}`` as a Markdown or plain-text table in %.

  Columns are the metrics in order of first appearance; a row missing a metric shows "-".
  ``column_titles`` renames columns (default: knn -> "kNN", linear -> "linear probe").

  Example::

    format_table({"raw pixels": {"knn": 0.969, "linear": 0.970}})
    # | representation | kNN | linear probe |
    # |---|---:|---:|
    # | raw pixels | 96.9% | 97.0% |
  """
  if style not in ("markdown", "plain"):
    raise ValueError(f"style must be 'markdown' or 'plain', got {style!r}.")
  titles = {**_COLUMN_TITLES, **dict(column_titles or {})}
  keys = list(dict.fromkeys(k for metrics in rows.values() for k in metrics))
  header = [title] + [titles.get(k, k) for k in keys]
  body = [
      [name] + [f"{100 * m[k]:.{digits}f}%" if k in m and m[k] is not None else "-" for k in keys]
      for name, m in rows.items()
  ]
  if style == "markdown":
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(keys)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)
  widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
  fmt = lambda r: "  ".join(  # noqa: E731
      c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
  )
  return "\n".join([fmt(header)] + [fmt(r) for r in body])
