"""Evaluation of a representation: weighted kNN monitor, linear probe, feature extraction, baselines.

Public API::

  knn_accuracy(train_feats, train_labels, test_feats, test_labels, *, k=200, temperature=0.1,
               num_classes=None, batch_size=None) -> float
  knn_predict(...same args...) -> np.ndarray[int]            (per-test-row predicted class)
  linear_probe(train_feats, train_labels, test_feats, test_labels, *, l2=None, ...) -> float
  fit_linear_probe(train_feats, train_labels, *, l2=None, ...) -> LinearProbe   (evaluate_linear.py)
  extract_features(features_fn, images, *, batch_size=256, mesh=None) -> np.ndarray [N, F]
  evaluate_features(train_feats, train_labels, test_feats, test_labels, *, knn_k=200,
                    knn_temperature=0.1, linear=True, ...) -> {"knn": float, "linear": float}
  evaluate_representation(features_fn, (train_images, train_labels), (test_images, test_labels), *,
                          knn_k=200, knn_temperature=0.1, linear=True, batch_size=256, mesh=None)
      -> {"knn": float, "linear": float}        (omit "linear" with linear=False: the in-training monitor)
  raw_pixel_baseline((train_images, train_labels), (test_images, test_labels), ...) -> same dict
  format_table({"raw pixels": {"knn": .969, "linear": .970}, "random init": {...}, ...}) -> str

``features_fn`` is either a callable ``float images [B, H, W, C] in [0, 1] -> [B, F]`` (a pure
function; it is jitted here) or an ``nnx.Module`` / its bound method such as ``method.features``
(split into graph and state so the weights are jit arguments, not baked-in constants); see
``evaluate_extract.py``. The linear probe lives in ``evaluate_linear.py``. Accuracies are fractions
in [0, 1]; ``format_table`` prints them as percentages.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.evaluate_extract import extract_features
from jaxcl.evaluate_linear import DEFAULT_L2_GRID, LinearProbe, fit_linear_probe, linear_probe

__all__ = [
    "DEFAULT_L2_GRID", "LinearProbe", "evaluate_features", "evaluate_representation",
    "extract_features", "fit_linear_probe", "format_table", "knn_accuracy", "knn_predict", "linear_probe",
    "raw_pixel_baseline",
]

# Largest similarity block [test rows, train rows] materialised at once when batch_size is None
# (2^26 float32 = 256 MiB): ImageNet's 1.28M train rows give 52 test rows per chunk.
_KNN_BLOCK_ELEMENTS = 1 << 26


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_predict_chunk(train_n, train_labels, test_chunk, temperature, *, k, num_classes):
  test_n = _l2_normalize(test_chunk)
  # HIGHEST: near-tied neighbours must rank the same on GPU (TF32) as on CPU.
  sim = jnp.matmul(test_n, train_n.T, precision=jax.lax.Precision.HIGHEST)
  # top_k returns the lower train index first among equal similarities.
  top_sim, top_idx = jax.lax.top_k(sim, k)
  weights = jnp.exp(top_sim / temperature)
  rows = jnp.arange(test_chunk.shape[0])[:, None]
  votes = jnp.zeros((test_chunk.shape[0], num_classes), weights.dtype)
  votes = votes.at[rows, train_labels[top_idx]].add(weights)
  return jnp.argmax(votes, axis=-1)  # ties between classes go to the lower class index


def _as_features(feats, labels, name):
  feats = np.asarray(feats)
  labels = np.asarray(labels)
  if feats.ndim < 2 or labels.ndim != 1 or len(feats) != len(labels):
    raise ValueError(
        f"{name}: expected features [N, D] and labels [N], got {feats.shape} and {labels.shape}."
    )
  if len(feats) == 0:
    raise ValueError(f"{name}: no examples.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name}_labels must be integers, got dtype {labels.dtype}.")
  return feats.reshape(len(feats), -1).astype(np.float32), labels.astype(np.int32)


def knn_predict(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray | None = None,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
  """Predicted class of each test row by the weighted kNN vote of Wu et al. 2018 (see knn_accuracy).

  ``test_labels`` is only used to infer ``num_classes``; it may be None when that is given.
  """
  xtr, ytr = _as_features(train_feats, train_labels, "train")
  xte = np.asarray(test_feats, np.float32).reshape(len(test_feats), -1)
  if xte.shape[1] != xtr.shape[1]:
    raise ValueError(f"train and test feature widths differ: {xtr.shape[1]} vs {xte.shape[1]}.")
  if num_classes is None:
    top = ytr.max() if test_labels is None else max(ytr.max(), np.max(test_labels))
    num_classes = int(top) + 1
  if ytr.min() < 0 or ytr.max() >= num_classes:
    raise ValueError(f"train_labels must lie in [0, num_classes={num_classes}).")
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}.")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  k = min(int(k), len(xtr))
  if batch_size is None:
    batch_size = max(1, min(1024, _KNN_BLOCK_ELEMENTS // len(xtr)))
  batch_size = max(1, min(int(batch_size), len(xte)))

  train_n = _l2_normalize(jnp.asarray(xtr))
  ytr_dev = jnp.asarray(ytr)
  preds = []
  # Fixed-size chunks (last one zero-padded) so the whole test set runs one compiled program.
  for start in range(0, len(xte), batch_size):
    chunk = xte[start : start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n, chunk.shape[1]), np.float32)])
    pred = _knn_predict_chunk(
        train_n, ytr_dev, jnp.asarray(chunk), jnp.float32(temperature), k=k,
        num_classes=num_classes,
    )
    preds.append(np.asarray(pred)[:n])
  return np.concatenate(preds)


def knn_accuracy(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int | None = None,
) -> float:
  """Weighted k-nearest-neighbour accuracy, the monitor of Wu et al. 2018 (InstDisc, Sec. 3.4).

  Features are L2-normalised; each test row takes its ``k`` most cosine-similar train rows
  ``N_k`` and predicts ``argmax_c sum_{i in N_k, y_i = c} exp(s_i / temperature)``. This is the
  k=200, temperature=0.1 monitor of the MoCo / SimCLR / solo-learn benchmarks.

  Args:
    train_feats: [N, D] train ("memory bank") features.
    train_labels: [N] integer labels in ``[0, num_classes)``.
    test_feats: [M, D] query features.
    test_labels: [M] integer labels.
    k: neighbours; clipped to N.
    temperature: softmax temperature of the vote weights (> 0).
    num_classes: default ``max(all labels) + 1``.
    batch_size: test rows per chunk (memory is ``batch_size * N`` floats); default keeps a chunk
      under 256 MiB. Ties in similarity go to the lower train index, ties in votes to the lower class.

  Returns:
    Top-1 accuracy on the test set, in [0, 1].
  """
  _, yte = _as_features(test_feats, test_labels, "test")
  pred = knn_predict(
      train_feats, train_labels, test_feats, yte, k=k, temperature=temperature,
      num_classes=num_classes, batch_size=batch_size,
  )
  return float(np.mean(pred == yte))


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
) -> dict[str, float]:
  """kNN (and, with ``linear=True``, linear-probe) accuracy of precomputed features.

  Returns:
    ``{"knn": acc}`` or ``{"knn": acc, "linear": acc}``, accuracies in [0, 1].
  """
  result = {
      "knn": knn_accuracy(
          train_feats, train_labels, test_feats, test_labels, k=knn_k,
          temperature=knn_temperature, num_classes=num_classes,
      )
  }
  if linear:
    result["linear"] = linear_probe(
        train_feats, train_labels, test_feats, test_labels, num_classes=num_classes,
        **dict(linear_kwargs or {}),
    )
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

  def flat(images):
    images = np.asarray(images)
    x = images.reshape(len(images), -1).astype(np.float32)
    return x / 255.0 if np.issubdtype(images.dtype, np.integer) else x

  return evaluate_features(
      flat(train[0]), train[1], flat(test[0]), test[1], knn_k=knn_k,
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
