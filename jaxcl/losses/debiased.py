"""NT-Xent variants that reshape the negative term: decoupled (DCL/DCLW) and hard-negative (HCL).

Same two-view layout and cross-device recipe as ``nt_xent`` (see ``jaxcl.losses.contrastive``): 2N
anchors ``[z1; z2]``, each anchor's positive is its other view, its negatives the 2N - 2 other views of
the global batch. Both work in log space so they stay finite at temperature 0.01.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def dcl(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.1,
    weight_sigma: float | None = None,
    axis_name: str | None = None,
) -> jax.Array:
  """Decoupled contrastive loss L_DC (Yeh et al. 2022), or DCLW when ``weight_sigma`` is set.

  For anchor i with positive p(i) and cosine similarities ``s``:
  ``l_i = -w_i * s_{i,p(i)} / t + log sum_{k in negatives(i)} exp(s_ik / t)``: the positive is removed
  from the denominator (the "decoupling"). DCL has ``w_i = 1``; DCLW weights each positive pair by
  ``w_i = 2 - N * softmax_j(s_{j,p(j)} / sigma)_i`` over the N pairs of the global batch (the paper's
  von Mises-Fisher weighting as the widely used reference code, raminnakhli/Decoupled-Contrastive-
  Learning, writes it; its gradient is not stopped, as there). The loss is the mean over all 2N
  anchors, i.e. the average of that code's one-way ``DCL(z1, z2)`` and ``DCL(z2, z1)``.

  Args:
    z1: [N, D] first view (this device's rows under ``axis_name``).
    z2: [N, D] second view, row i paired with ``z1[i]``.
    temperature: t > 0.
    weight_sigma: sigma > 0 of DCLW's weighting (the paper uses 0.5); None for plain DCL.
    axis_name: mesh axis to gather negatives over, inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x1 = checks.embeddings(z1, "z1", axis_name=axis_name)
  x2 = checks.embeddings(z2, "z2", axis_name=axis_name)
  checks.same_shape(x1, x2, "z1", "z2")
  checks.positive(temperature, "temperature")
  if weight_sigma is not None:
    checks.positive(weight_sigma, "weight_sigma")
  logits, positive, _, is_negative = ops.two_view_logits(x1, x2, temperature, axis_name)
  positive_logit = jnp.take_along_axis(logits, positive[:, None], axis=-1)[:, 0]
  if weight_sigma is not None:
    # Pair similarity from the logits (t * logit = cos) so both views share one weight.
    pair_cos = positive_logit[: x1.shape[0]] * temperature
    log_norm = jax.nn.logsumexp(collective.gather(pair_cos, axis_name) / weight_sigma)
    big_n = logits.shape[1] // 2
    weight = 2.0 - big_n * jnp.exp(pair_cos / weight_sigma - log_norm)
    positive_logit = positive_logit * jnp.concatenate([weight, weight])
  per_anchor = ops.masked_logsumexp(logits, is_negative) - positive_logit
  return collective.psum(jnp.sum(per_anchor), axis_name) / logits.shape[1]


def hard_negative_nt_xent(
    z1: ArrayLike,
    z2: ArrayLike,
    *,
    temperature: float = 0.5,
    beta: float = 1.0,
    tau_plus: float = 0.1,
    axis_name: str | None = None,
) -> jax.Array:
  """Hard-negative contrastive loss with debiasing (Robinson et al. 2021, as in the official HCL code).

  With ``pos = exp(s_ip / t)``, ``neg_k = exp(s_ik / t)`` over the M = 2N - 2 negatives and importance
  weights ``neg_k ** beta``:
  ``Ng = max((M * sum_k neg_k^(1+beta) / sum_k neg_k^beta - tau_plus * M * pos) / (1 - tau_plus),
  M * exp(-1 / t))`` and ``l_i = -log(pos / (pos + Ng))``; mean over the 2N anchors. ``beta = 0`` and
  ``tau_plus = 0`` give NT-Xent (up to the clamp). Computed in log space, so no ``exp(1/t)`` overflows.

  Args:
    z1: [N, D] first view (this device's rows under ``axis_name``).
    z2: [N, D] second view, row i paired with ``z1[i]``.
    temperature: t > 0.
    beta: concentration on hard negatives, >= 0.
    tau_plus: class prior (probability that a "negative" shares the anchor's class), in [0, 1).
    axis_name: mesh axis to gather negatives over, inside ``jax.shard_map``.

  Returns:
    Scalar float32 loss of the global batch.
  """
  x1 = checks.embeddings(z1, "z1", axis_name=axis_name)
  x2 = checks.embeddings(z2, "z2", axis_name=axis_name)
  checks.same_shape(x1, x2, "z1", "z2")
  checks.positive(temperature, "temperature")
  checks.in_range(beta, "beta", 0.0, float("inf"))
  checks.in_range(tau_plus, "tau_plus", 0.0, 1.0)
  logits, positive, _, is_negative = ops.two_view_logits(x1, x2, temperature, axis_name)
  num_neg = logits.shape[1] - 2
  log_pos = jnp.take_along_axis(logits, positive[:, None], axis=-1)[:, 0]
  # log of the importance-reweighted negative mass M * E_w[neg].
  log_reweighted = (
      jnp.log(num_neg)
      + ops.masked_logsumexp((1.0 + beta) * logits, is_negative)
      - ops.masked_logsumexp(beta * logits, is_negative)
  )
  # log(reweighted - tau_plus * M * pos), -inf where the debiased estimate is not positive.
  # (log(0) = -inf when tau_plus = 0, which leaves the reweighted mass unchanged.)
  ratio = jnp.log(tau_plus * num_neg) + log_pos - log_reweighted
  valid = ratio < 0
  log_debiased = jnp.where(
      valid, log_reweighted + jnp.log1p(-jnp.exp(jnp.where(valid, ratio, -1.0))), -jnp.inf
  )
  log_ng = jnp.maximum(
      log_debiased - jnp.log1p(-tau_plus), jnp.log(num_neg) - 1.0 / temperature
  )
  per_anchor = jax.nn.softplus(log_ng - log_pos)
  return collective.psum(jnp.sum(per_anchor), axis_name) / logits.shape[1]
