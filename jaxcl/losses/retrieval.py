"""The dense-retrieval InfoNCE: each query against every document of the global batch and its hard
negatives (Karpukhin et al. 2020, DPR, eq. 2; Xiong et al. 2021, ANCE; Wang et al. 2022, E5).

For query i with positive document p_i and hard negatives n_i1..n_iH, on L2-normalised vectors,

  l_i = -log exp(q_i.p_i / t) / (sum_j exp(q_i.p_j / t) + sum_{j,h} exp(q_i.n_jh / t))

where j runs over every row of the global batch (every device's rows): the other queries' positives
and *every* query's hard negatives are candidates, as in DPR's "in-batch + BM25 negatives". With
``symmetric=True`` the document-to-query direction (each positive against every query) is averaged in.

Two masks make the candidate set honest, both only in the exact (dense) form:

* ``positive_keys``: rows whose positives are the same document (two queries answered by one
  function, or one query with two stored pairs) are not each other's negatives.
* ``negatives_valid``: rows with fewer stored negatives than H pad the rest; padding never counts.

The memory-linear form (``block_size``) runs the candidates through the ring of
``jaxcl.losses.blockwise_core`` (positives once, each of the H negative slots once) and merges the
per-row log-sum-exps; it applies neither mask, so give every row H real negatives and distinct
positives when you use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.losses import checks, collective, ops


def retrieval_infonce(
    query: ArrayLike,
    positive: ArrayLike,
    negatives: ArrayLike | None = None,
    *,
    temperature: ArrayLike = 0.05,
    negatives_valid: ArrayLike | None = None,
    positive_keys: ArrayLike | None = None,
    symmetric: bool = False,
    axis_name: str | None = None,
    block_size: int | None = None,
) -> jax.Array:
  """InfoNCE of queries against the global batch's positives plus every row's hard negatives.

  Args:
    query: [n, D] query embeddings (this device's rows inside ``shard_map``).
    positive: [n, D] embeddings of each query's relevant document.
    negatives: optional [n, H, D] hard-negative document embeddings of each row.
    temperature: softmax temperature t > 0 (a traced value when learned).
    negatives_valid: optional [n, H] bool, False for padded negatives (dense form only).
    positive_keys: optional [n] int ids of each row's positive document; rows sharing one are not
      each other's negatives (dense form only).
    symmetric: also average in the document-to-query loss (each positive against every query).
    axis_name: mesh axis to gather over, inside ``jax.shard_map``; None on one device.
    block_size: if set, the memory-linear ring form (``jaxcl.losses.blockwise.retrieval_infonce``);
      the masks are then not applied.

  Returns:
    Scalar float32 loss of the global batch.
  """
  q = checks.embeddings(query, "query", axis_name=axis_name)
  p = checks.embeddings(positive, "positive", axis_name=axis_name)
  checks.same_shape(q, p, "query", "positive")
  checks.positive(temperature, "temperature")
  checks.block_size(block_size)
  n = q.shape[0]
  if negatives is not None:
    negatives = checks.as_float(negatives, "negatives")
    if negatives.ndim != 3 or negatives.shape[0] != n or negatives.shape[2] != q.shape[1]:
      raise ValueError(f"negatives must have shape [batch, num_negatives, dim] = [{n}, H, "
                       f"{q.shape[1]}], got {tuple(negatives.shape)}.")
  if block_size is not None:
    if negatives_valid is not None or positive_keys is not None:
      raise ValueError("retrieval_infonce with block_size applies no masks: pass neither "
                       "negatives_valid nor positive_keys, or set block_size=None.")
    from jaxcl.losses import blockwise  # pylint: disable=g-import-not-at-top
    return blockwise.retrieval_infonce(q, p, negatives, temperature=temperature,
                                       symmetric=symmetric, block_size=block_size,
                                       axis_name=axis_name)
  scale = 1.0 / jnp.asarray(temperature, jnp.float32)
  q, p = ops.l2_normalize(q), ops.l2_normalize(p)
  all_p = collective.gather(p, axis_name)
  own = jnp.arange(n) + collective.row_offset(n, axis_name)
  keep = None
  if positive_keys is not None:
    keys = jnp.asarray(positive_keys)
    if keys.shape != (n,):
      raise ValueError(f"positive_keys must have shape [{n}], got {tuple(keys.shape)}.")
    all_keys = collective.gather(keys, axis_name)
    keep = ((all_keys[None, :] != keys[:, None])
            | (jnp.arange(all_keys.shape[0])[None, :] == own[:, None]))
  logits = _masked(q @ all_p.T * scale, keep)
  if negatives is not None:
    h = negatives.shape[1]
    negs = collective.gather(ops.l2_normalize(negatives).reshape(n * h, -1), axis_name)
    valid = None
    if negatives_valid is not None:
      valid = jnp.asarray(negatives_valid, bool)
      if valid.shape != (n, h):
        raise ValueError(f"negatives_valid must have shape [{n}, {h}], got {tuple(valid.shape)}.")
      valid = collective.gather(valid.reshape(-1), axis_name)[None, :]
    logits = jnp.concatenate([logits, _masked(q @ negs.T * scale, valid)], axis=1)
  total = jnp.sum(ops.cross_entropy(logits, own))
  if symmetric:
    all_q = collective.gather(q, axis_name)
    total = 0.5 * (total + jnp.sum(ops.cross_entropy(_masked(p @ all_q.T * scale, keep), own)))
  return collective.psum(total, axis_name) / all_p.shape[0]


def _masked(logits: jax.Array, keep: jax.Array | None) -> jax.Array:
  """``logits`` with the entries where ``keep`` is False at -inf (never a candidate)."""
  return logits if keep is None else jnp.where(keep, logits, -jnp.inf)
