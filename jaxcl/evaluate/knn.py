"""Weighted k-nearest-neighbour accuracy (Wu et al. 2018), the monitor of the SSL benchmarks.

Memory is bounded by the chunk size: the test set is scored ``batch_size`` rows at a time against the
whole train set (a [batch_size, N] similarity block). With a ``mesh`` the train features are sharded
over its data axis: each device holds N / devices rows, takes its own top-k of the chunk, and the
devices' candidates are all-gathered and merged by a second top-k. The merge keeps the unsharded tie
order (shards are contiguous, so equal similarities still go to the lower train index), so sharded
and unsharded predictions are the same.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

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


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "mesh", "axis"))
def _knn_predict_chunk_sharded(train_n, train_labels, train_valid, test_chunk, temperature, *, k,
                               num_classes, mesh, axis):
  """The same vote with ``train_*`` sharded over ``axis``: per-device top-k, then a merged top-k."""
  test_n = _l2_normalize(test_chunk)
  local_n = train_n.shape[0] // mesh.shape[axis]
  local_k = min(k, local_n)

  def local_top(train_block, label_block, valid_block, queries):
    sim = jnp.matmul(queries, train_block.T, precision=jax.lax.Precision.HIGHEST)
    sim = jnp.where(valid_block[None, :], sim, -jnp.inf)  # padding rows never win
    top_sim, top_idx = jax.lax.top_k(sim, local_k)
    top_lab = label_block[top_idx]
    # Device order == train order (contiguous shards), so the merged ties keep the lower index first.
    gather = lambda t: jnp.moveaxis(jax.lax.all_gather(t, axis), 0, 1).reshape(t.shape[0], -1)  # noqa: E731
    return gather(top_sim), gather(top_lab)

  cand_sim, cand_lab = jax.shard_map(
      local_top, mesh=mesh, in_specs=(jax.P(axis), jax.P(axis), jax.P(axis), jax.P()),
      out_specs=(jax.P(), jax.P()), check_vma=False,
  )(train_n, train_labels, train_valid, test_n)
  top_sim, pos = jax.lax.top_k(cand_sim, k)
  top_lab = jnp.take_along_axis(cand_lab, pos, axis=1)
  weights = jnp.exp(top_sim / temperature)
  rows = jnp.arange(test_chunk.shape[0])[:, None]
  votes = jnp.zeros((test_chunk.shape[0], num_classes), weights.dtype)
  votes = votes.at[rows, top_lab].add(weights)
  return jnp.argmax(votes, axis=-1)


def _shard_rows(x: np.ndarray, mesh: jax.sharding.Mesh, axis: str) -> jax.Array:
  """Puts ``x`` on ``mesh`` split over ``axis`` on dim 0 (``len(x)`` divisible by its size)."""
  sharding = jax.sharding.NamedSharding(mesh, jax.P(axis))
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


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
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str = "data",
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
  devices = 1
  if mesh is not None:
    if data_axis not in mesh.shape:
      raise ValueError(f"mesh has no axis {data_axis!r} (axes: {tuple(mesh.shape)}); set data_axis.")
    devices = mesh.shape[data_axis]
  if batch_size is None:  # the similarity block per device stays under _KNN_BLOCK_ELEMENTS
    batch_size = max(1, min(1024, _KNN_BLOCK_ELEMENTS * devices // len(xtr)))
  batch_size = max(1, min(int(batch_size), len(xte)))

  if mesh is None:
    train_n = _l2_normalize(jnp.asarray(xtr))
    ytr_dev = jnp.asarray(ytr)
    score = functools.partial(_knn_predict_chunk, train_n, ytr_dev)
  else:
    pad = -len(xtr) % devices
    valid = np.arange(len(xtr) + pad) < len(xtr)
    xtr_p = np.concatenate([xtr, np.zeros((pad, xtr.shape[1]), np.float32)]) if pad else xtr
    ytr_p = np.concatenate([ytr, np.zeros(pad, np.int32)]) if pad else ytr
    with jax.set_mesh(mesh):
      train_n = jax.jit(_l2_normalize)(_shard_rows(xtr_p, mesh, data_axis))
      args = (train_n, _shard_rows(ytr_p, mesh, data_axis), _shard_rows(valid, mesh, data_axis))
    score = functools.partial(_knn_predict_chunk_sharded, *args, mesh=mesh, axis=data_axis)
  preds = []
  # Fixed-size chunks (last one zero-padded) so the whole test set runs one compiled program.
  for start in range(0, len(xte), batch_size):
    chunk = xte[start : start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n, chunk.shape[1]), np.float32)])
    pred = score(jnp.asarray(chunk), jnp.float32(temperature), k=k, num_classes=num_classes)
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
    mesh: jax.sharding.Mesh | None = None,
    data_axis: str = "data",
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
      under 256 MiB per device. Ties in similarity go to the lower train index, ties in votes to
      the lower class.
    mesh: optional mesh; the train features are then sharded over ``data_axis`` (per-device top-k,
      merged), for memory banks that do not fit one device. Same predictions as without.
    data_axis: the mesh axis the train rows are split over.

  Returns:
    Top-1 accuracy on the test set, in [0, 1].
  """
  _, yte = _as_features(test_feats, test_labels, "test")
  pred = knn_predict(
      train_feats, train_labels, test_feats, yte, k=k, temperature=temperature,
      num_classes=num_classes, batch_size=batch_size, mesh=mesh, data_axis=data_axis,
  )
  return float(np.mean(pred == yte))


