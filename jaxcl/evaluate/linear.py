"""Linear probe on frozen features: multinomial logistic regression fitted with L-BFGS in JAX.

This is the standard frozen-feature protocol (SimCLR, Chen et al. 2020, Appendix B.6; the sklearn-style
probe of CLIP, Radford et al. 2021, Sec. 3.2): features are standardised with the *train* mean and
standard deviation, then a softmax classifier ``logits = x W + b`` is fitted by minimising the mean
softmax cross-entropy plus ``l2 / 2 * ||W||^2`` (the bias is not penalised) with full-batch L-BFGS
(``optax.lbfgs`` with its zoom line search). Full-batch L-BFGS has no learning rate, no batch order
and no random initialisation (weights start at zero, or at the previous grid solution), so the probe
is deterministic.

The L2 strength is chosen from a small grid by 5-fold stratified cross-validation on the *train* set
(fixed seed), then the probe is refitted on the whole train set with that strength; the test set is
never looked at until the final score. A fold is expressed as per-example weights on the same arrays,
so every fit (grid, folds and final) runs one compiled program, and the grid is walked from strong to
weak penalty with warm starts. A single 20% held-out split was tried first and picked noticeably worse
strengths on 1,257 digits (its accuracy differences are a handful of examples).

Public API (also re-exported by ``jaxcl.evaluate``)::

  linear_probe(train_feats, train_labels, test_feats, test_labels, *, l2=None, ...) -> float
  fit_linear_probe(train_feats, train_labels, *, l2=None, ...) -> LinearProbe
  LinearProbe.predict(feats) -> np.ndarray[int];  LinearProbe.accuracy(feats, labels) -> float
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

#: L2 strengths tried when ``l2`` is None. With standardised features and a *mean* loss,
#: sklearn's default ``C=1`` on n examples corresponds to ``l2 = 1 / n`` (about 1e-3 for 1,000 images).
DEFAULT_L2_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


@dataclasses.dataclass(frozen=True)
class LinearProbe:
  """A fitted linear probe: standardisation statistics and softmax-regression weights.

  Attributes:
    mean: [D] train feature mean.
    scale: [D] train feature standard deviation (1 where a feature is constant).
    weights: [D, C] weights acting on standardised features.
    bias: [C].
    l2: the L2 strength used for the final fit.
    cv_accuracy: {l2: cross-validated train accuracy} for each grid value tried (empty if ``l2`` was
      given).
  """

  mean: np.ndarray
  scale: np.ndarray
  weights: np.ndarray
  bias: np.ndarray
  l2: float
  cv_accuracy: dict[float, float]

  def logits(self, feats: np.ndarray) -> np.ndarray:
    x = (np.asarray(feats, np.float32).reshape(len(feats), -1) - self.mean) / self.scale
    return x @ self.weights + self.bias

  def predict(self, feats: np.ndarray) -> np.ndarray:
    """Class index per row of ``feats`` ([N, D] raw, unstandardised features)."""
    return np.argmax(self.logits(feats), axis=-1)

  def accuracy(self, feats: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(self.predict(feats) == np.asarray(labels)))


def _check(feats, labels, name):
  feats = np.asarray(feats, np.float32)
  labels = np.asarray(labels)
  if feats.ndim < 2 or labels.ndim != 1 or len(feats) != len(labels):
    raise ValueError(
        f"{name}: expected features [N, D] and labels [N], got {feats.shape} and {labels.shape}."
    )
  if len(feats) == 0:
    raise ValueError(f"{name}: no examples.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name}_labels must be integers, got dtype {labels.dtype}.")
  return feats.reshape(len(feats), -1), labels.astype(np.int32)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _fit_softmax_regression(x, onehot, sample_weight, l2, tol, init, *, max_iter):
  """Minimises weighted mean cross-entropy + l2/2 ||W||^2 by L-BFGS from ``init`` until ||grad|| < tol.

  Returns the parameters and the number of iterations taken.
  """
  total_weight = jnp.sum(sample_weight)

  def objective(params):
    # HIGHEST: TF32/bf16 matmuls on GPUs would make the line search noisy and results device-dependent.
    logits = jnp.matmul(x, params["w"], precision=jax.lax.Precision.HIGHEST) + params["b"]
    ce = optax.softmax_cross_entropy(logits, onehot)
    return jnp.sum(ce * sample_weight) / total_weight + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def not_done(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(
        grad, state, params, value=value, grad=grad, value_fn=objective
    )
    return optax.apply_updates(params, updates), state

  params, state = jax.lax.while_loop(not_done, step, (init, solver.init(init)))
  return params, optax.tree.get(state, "count")


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
  """Fold index in ``[0, folds)`` per example; each class is spread evenly over the folds."""
  rng = np.random.default_rng(seed)
  fold = np.empty(len(labels), np.int32)
  offset = 0
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    # Continue the round-robin across classes so that small classes do not all start at fold 0.
    fold[idx] = (offset + np.arange(len(idx))) % folds
    offset += len(idx)
  return fold


def fit_linear_probe(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    *,
    l2: float | None = None,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    folds: int = 5,
    standardize: bool = True,
    num_classes: int | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    seed: int = 0,
) -> LinearProbe:
  """Fits the frozen-feature linear probe (standardise, then softmax regression + L2 by L-BFGS).

  Args:
    train_feats: [N, D] features (any float dtype; extra trailing dims are flattened).
    train_labels: [N] integer class labels in ``[0, num_classes)``.
    l2: L2 strength on the weights (objective: mean cross-entropy + ``l2 / 2 * ||W||^2``). None picks
      the value of ``l2_grid`` with the best mean accuracy over ``folds``-fold stratified
      cross-validation on the train set (ties go to the stronger penalty), then refits on all of it.
    l2_grid: strengths tried when ``l2`` is None.
    folds: cross-validation folds for choosing ``l2`` (>= 2).
    standardize: standardise features with the train mean / std (the usual protocol); False fits
      the raw features (as CLIP's sklearn probe does).
    num_classes: number of classes; default ``max(train_labels) + 1``.
    max_iter: L-BFGS iteration cap per fit.
    tol: stop when the gradient norm of the objective falls below this.
    seed: seed of the fold assignment (the only randomness).

  Returns:
    The fitted ``LinearProbe``.
  """
  x, y = _check(train_feats, train_labels, "train")
  num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"train_labels must lie in [0, num_classes={num_classes}).")
  if l2 is not None and l2 < 0:
    raise ValueError(f"l2 must be >= 0, got {l2}.")
  if l2 is None and (folds < 2 or folds > len(y)):
    raise ValueError(f"folds must be in [2, {len(y)}] to choose l2, got {folds}; or pass l2=<value>.")
  if l2 is None and not l2_grid:
    raise ValueError("l2_grid must not be empty when l2 is None.")

  if standardize:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    # Constant features (always-black border pixels) carry no information; avoid dividing by zero.
    scale = np.where(scale > 1e-6 * max(float(scale.max()), 1e-30), scale, 1.0)
  else:
    mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
  mean, scale = mean.astype(np.float32), scale.astype(np.float32)
  xs_np = (x - mean) / scale
  xs = jnp.asarray(xs_np)
  onehot = jax.nn.one_hot(jnp.asarray(y), num_classes, dtype=jnp.float32)
  zeros = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

  def fit(weight, strength, init):
    # One compiled program for every fit: folds differ only in sample weights, strengths are traced.
    params, _ = _fit_softmax_regression(
        xs, onehot, jnp.asarray(weight, jnp.float32), jnp.float32(strength), jnp.float32(tol),
        init, max_iter=max_iter,
    )
    return params

  cv_accuracy = {}
  if l2 is None:
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    fold = _stratified_folds(y, folds, seed)
    correct = dict.fromkeys(grid, 0)
    for f in range(folds):
      held = fold == f
      params = zeros
      for strength in grid:  # strong to weak, each fit warm-started from the previous solution
        params = fit(~held, strength, params)
        pred = np.argmax(xs_np[held] @ np.asarray(params["w"]) + np.asarray(params["b"]), -1)
        correct[strength] += int(np.sum(pred == y[held]))
    cv_accuracy = {s: correct[s] / len(y) for s in grid}
    l2 = max(grid, key=lambda s: (cv_accuracy[s], s))
  params = fit(np.ones(len(y), np.float32), l2, zeros)
  return LinearProbe(
      mean=mean, scale=scale, weights=np.asarray(params["w"]), bias=np.asarray(params["b"]),
      l2=float(l2), cv_accuracy=cv_accuracy,
  )


def linear_probe(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    *,
    l2: float | None = None,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    folds: int = 5,
    standardize: bool = True,
    num_classes: int | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    seed: int = 0,
) -> float:
  """Linear-probe test accuracy of frozen features (see ``fit_linear_probe`` for the protocol).

  Args:
    train_feats, train_labels: [N, D] features and [N] labels the probe is fitted on.
    test_feats, test_labels: [M, D] features and [M] labels it is scored on.
    l2, l2_grid, folds, standardize, num_classes, max_iter, tol, seed: as in ``fit_linear_probe``.

  Returns:
    Top-1 accuracy on the test set, in [0, 1].
  """
  xt, yt = _check(test_feats, test_labels, "test")
  if num_classes is None:
    num_classes = int(max(np.max(train_labels), yt.max())) + 1
  probe = fit_linear_probe(
      train_feats, train_labels, l2=l2, l2_grid=l2_grid, folds=folds, standardize=standardize,
      num_classes=num_classes, max_iter=max_iter, tol=tol, seed=seed,
  )
  return probe.accuracy(xt, yt)
