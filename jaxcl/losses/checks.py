"""Input validation shared by the losses: shapes, dtypes and hyperparameters, checked at trace time.

Errors a user can cause raise ``ValueError`` naming the argument and what was expected. Values that are
traced (a learned temperature or logit scale) cannot be inspected and are not checked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.losses import collective


def as_float(x: Any, name: str) -> jax.Array:
  """Returns ``x`` as a floating array of at least float32 (bf16/fp16 are upcast for the math)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}.")
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def embeddings(x: Any, name: str, *, axis_name: str | None = None) -> jax.Array:
  """Checks a [N, D] embedding matrix with at least 2 rows in the (global) batch; returns it as float."""
  x = as_float(x, name)
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [batch, dim], got shape {tuple(x.shape)}.")
  rows = x.shape[0] * collective.axis_size(axis_name)
  if rows < 2:
    raise ValueError(
        f"{name} has {rows} row(s) in the batch; a contrastive loss needs at least 2 rows "
        "(use a larger batch)."
    )
  return x


def same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
  if a.shape != b.shape:
    raise ValueError(
        f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
    )


def same_dim(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
  if a.shape[-1] != b.shape[-1]:
    raise ValueError(
        f"{name_a} and {name_b} must have the same embedding dim, got {a.shape[-1]} and {b.shape[-1]}."
    )


def labels(y: Any, rows: int, name: str = "labels") -> jax.Array:
  """Checks integer class labels of shape [rows]."""
  y = jnp.asarray(y)
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array of class ids, got dtype {y.dtype}.")
  if y.shape != (rows,):
    raise ValueError(f"{name} must have shape ({rows},) (one per embedding row), got {tuple(y.shape)}.")
  return y


def _concrete(x: Any) -> float | None:
  if isinstance(x, jax.core.Tracer):
    return None
  arr = np.asarray(x)
  if arr.size != 1:
    raise ValueError(f"expected a scalar, got an array of shape {arr.shape}.")
  return float(arr.reshape(()))


def positive(x: Any, name: str) -> None:
  """Raises unless ``x`` is > 0 (skipped for traced values, e.g. a learned temperature)."""
  try:
    value = _concrete(x)
  except ValueError as e:
    raise ValueError(f"{name} must be a scalar: {e}") from None
  if value is not None and not value > 0:
    raise ValueError(f"{name} must be > 0, got {value}.")


def in_range(x: float, name: str, lo: float, hi: float, *, hi_open: bool = True) -> None:
  value = _concrete(x)
  if value is None:
    return
  ok = lo <= value < hi if hi_open else lo <= value <= hi
  if not ok:
    bracket = ")" if hi_open else "]"
    raise ValueError(f"{name} must be in [{lo}, {hi}{bracket}, got {value}.")


def block_size(b: Any) -> None:
  if b is None:
    return
  if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
    raise ValueError(f"block_size must be None or a positive int, got {b!r}.")
