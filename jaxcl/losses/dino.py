"""DINO's self-distillation objective (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers", Algorithm 1 and Sec. 3.1).

The teacher's output is centred and sharpened, ``P_t = softmax((g_t(x) - C) / tau_t)``; the student's is
``P_s = softmax(g_s(x') / tau_s)``; the loss is the cross-entropy ``H(P_t, P_s) = -sum P_t log P_s``
averaged over every (teacher view, student view) pair of different views, as the official code's
``DINOLoss`` does with multi-crop (teacher: the global views; student: all views). The centre ``C`` is
an EMA of the teacher's batch means (``dino_center`` gives the batch mean over every device); centring
keeps one dimension from dominating, sharpening keeps the output from going uniform.

Per-row quantities: inside ``jax.shard_map`` the local sums are ``psum``-ed, so every device returns
the loss of the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective


def _views(x: ArrayLike, name: str) -> jax.Array:
  x = checks.as_float(x, name)
  if x.ndim != 3:
    raise ValueError(f"{name} must have shape [views, batch, prototypes], got shape {tuple(x.shape)}.")
  return x


def dino_loss(
    student: ArrayLike,
    teacher: ArrayLike,
    center: ArrayLike,
    *,
    student_temperature: float = 0.1,
    teacher_temperature: float | jax.Array = 0.04,
    axis_name: str | None = None,
) -> jax.Array:
  """DINO's loss: ``mean over pairs (i != j) and rows of H(P_t(teacher_i), P_s(student_j))``.

  Args:
    student: [Vs, N, K] student logits of every view (the global views first, then the local ones).
    teacher: [Vt, N, K] teacher logits of the global views (view i is the student's view i), Vt <= Vs.
      Gradients are stopped here, as ``t.detach()`` in the paper's pseudocode.
    center: [K] the centre C (an EMA of ``dino_center``).
    student_temperature: tau_s (0.1).
    teacher_temperature: tau_t (0.04-0.07, warmed up by the caller); may be a traced scalar.
    axis_name: mesh axis of the batch inside ``jax.shard_map``: the mean is over the global batch.

  Returns:
    Scalar float32 loss of the global batch.
  """
  s = _views(student, "student")
  t = jax.lax.stop_gradient(_views(teacher, "teacher"))
  c = jax.lax.stop_gradient(checks.as_float(center, "center"))
  vs, vt = s.shape[0], t.shape[0]
  if t.shape[1:] != s.shape[1:] or not 1 <= vt <= vs or vs < 2:
    raise ValueError(f"teacher [Vt, N, K] must match student [Vs, N, K] in N and K with 1 <= Vt <= Vs "
                     f"and Vs >= 2; got teacher {tuple(t.shape)}, student {tuple(s.shape)}.")
  if c.shape != (s.shape[2],):
    raise ValueError(f"center must have shape [K] = [{s.shape[2]}], got {tuple(c.shape)}.")
  checks.positive(student_temperature, "student_temperature")
  checks.positive(teacher_temperature, "teacher_temperature")
  q = jax.nn.softmax((t - c) / teacher_temperature, axis=-1)
  log_p = jax.nn.log_softmax(s / student_temperature, axis=-1)
  cross = -jnp.einsum("tnk,snk->tsn", q, log_p)  # [Vt, Vs, N]
  other = ~jnp.eye(vt, vs, dtype=bool)
  pairs = vt * vs - vt
  per_row = jnp.sum(jnp.where(other[:, :, None], cross, 0.0), axis=(0, 1)) / pairs
  return collective.global_mean(per_row, axis_name)


def dino_center(teacher: ArrayLike, *, axis_name: str | None = None) -> jax.Array:
  """The batch centre ``mean over views and the global batch of the teacher logits``, [K].

  DINO updates ``C <- m C + (1 - m) dino_center(teacher)`` after each step (m = 0.9).
  """
  t = jax.lax.stop_gradient(_views(teacher, "teacher"))
  rows = t.shape[0] * t.shape[1] * collective.axis_size(axis_name)
  return collective.psum(jnp.sum(t, axis=(0, 1)), axis_name) / rows
