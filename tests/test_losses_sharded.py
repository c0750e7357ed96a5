"""Every loss with axis_name, on 8 simulated devices: value and gradients equal the single-device call.

Two ways of differentiating are checked, both against ``jax.grad`` of the single-device loss on the
concatenated global batch:
* from outside: ``jax.grad`` of the ``shard_map``-ed loss (inputs sharded on dim 0);
* from inside: ``jax.grad`` inside ``shard_map`` w.r.t. a replicated linear map applied to each
  device's rows (``in_specs=P()``), as the trainer differentiates a replicated model.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerance import assert_close_to_scale, reordered_rtol

import jaxcl.losses as L

P = jax.P
N, D_IN, D = 16, 6, 8  # 16 global rows: 2 per device
_rng = np.random.RandomState(1)
X = [(_rng.randn(N, D) * _rng.uniform(0.5, 2.0, (N, 1))).astype(np.float32) for _ in range(2)]
X[1] = (X[0] + 0.8 * X[1]).astype(np.float32)
QUEUE = _rng.randn(32, D).astype(np.float32)  # 4 queue rows per device
LABELS = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 4, 5, 2, 3, 6, 0], np.int32)
W = (_rng.randn(D_IN, D) / np.sqrt(D_IN)).astype(np.float32)
RAW = [_rng.randn(N, D_IN).astype(np.float32) for _ in range(2)]
RAW_QUEUE = _rng.randn(32, D_IN).astype(np.float32)


def _jepa_loss_of_rows(a, b, labels, *, axis_name=None):
  """``jepa_loss`` of [N, 8] rows seen as 1 target block of 2 tokens of 4 features, the block holding
  the first token always and the second where the label is > 1 (blocks of 1 or 2 tokens)."""
  masks = jnp.stack([labels >= 0, labels > 1], axis=-1)[:, None]
  return L.jepa_loss(a.reshape(-1, 1, 2, 4), b.reshape(-1, 2, 4), masks, axis_name=axis_name)


# (name, loss, float inputs, int inputs, kwargs)
CASES = [
    ("nt_xent", L.nt_xent, 2, False, dict(temperature=0.2)),
    ("info_nce", L.info_nce, 2, False, dict(temperature=0.1)),
    ("clip_loss", L.clip_loss, 2, False, dict(logit_scale=14.0)),
    ("sigmoid_loss", L.sigmoid_loss, 2, False, dict(logit_scale=10.0, logit_bias=-5.0)),
    ("dcl", L.dcl, 2, False, dict(temperature=0.1)),
    ("dclw", L.dcl, 2, False, dict(temperature=0.1, weight_sigma=0.5)),
    ("hcl", L.hard_negative_nt_xent, 2, False, dict(temperature=0.5, beta=1.0, tau_plus=0.1)),
    ("supcon", L.supcon, 1, True, dict(temperature=0.1)),
    ("batch_hard_triplet", L.batch_hard_triplet, 1, True, dict(margin=1.0)),
    ("batch_semi_hard_triplet", L.batch_semi_hard_triplet, 1, True, dict(margin=1.0)),
    ("moco_infonce", L.moco_infonce, 3, False, dict(temperature=0.2)),
    ("barlow_twins", L.barlow_twins, 2, False, dict(lambda_offdiag=5e-3)),
    ("vicreg", L.vicreg, 2, False, {}),
    ("jepa_loss", _jepa_loss_of_rows, 2, True, {}),
]
IDS = [c[0] for c in CASES]


def _inputs(num_float, raw=False):
  if raw:
    return tuple(RAW[:2][:num_float] + ([RAW_QUEUE] if num_float == 3 else []))
  return tuple(X[:num_float] + ([QUEUE] if num_float == 3 else []))


def _put(mesh, tree, spec=P("data")):
  # The mesh's axis is Explicit: shard_map wants its inputs already laid out as in_specs says.
  return jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))


# 16 rows x 8 dims: the largest reordered sums have 2N x D = 256 terms and a loss's gradient goes
# through about 3 dependent sums (similarities, log-sum-exp, back-propagation): 1e-5 of scale.
RTOL = reordered_rtol(2 * N * D, sums=3, margin=3.0)


def _assert_close(got, want, what):
  assert_close_to_scale(got, want, rtol=RTOL, err_msg=what)


@pytest.mark.parametrize("name,fn,num_float,uses_labels,kwargs", CASES, ids=IDS)
def test_grad_of_shard_mapped_loss_equals_single_device(mesh, name, fn, num_float, uses_labels,
                                                        kwargs):
  floats = _inputs(num_float)
  ints = (LABELS,) if uses_labels else ()

  def loss(fl, it, axis_name=None):
    return fn(*fl, *it, axis_name=axis_name, **kwargs)

  want_value, want_grads = jax.jit(jax.value_and_grad(loss))(floats, ints)
  sharded = jax.shard_map(
      functools.partial(loss, axis_name="data"),
      mesh=mesh,
      in_specs=(P("data"), P("data")),
      out_specs=P(),
  )
  got_value, got_grads = jax.jit(jax.value_and_grad(sharded))(_put(mesh, floats), _put(mesh, ints))
  _assert_close(got_value, want_value, f"{name} value")
  for i, (g, w) in enumerate(zip(got_grads, want_grads)):
    assert np.abs(w).max() > 0, f"{name}: zero reference gradient for input {i}"
    _assert_close(g, w, f"{name} grad of input {i}")


@pytest.mark.parametrize("name,fn,num_float,uses_labels,kwargs", CASES, ids=IDS)
def test_grad_inside_shard_map_wrt_replicated_params(mesh, name, fn, num_float, uses_labels, kwargs):
  raw = _inputs(num_float, raw=True)
  ints = (LABELS,) if uses_labels else ()

  def loss(w, xs, it, axis_name=None):
    return fn(*[x @ w for x in xs], *it, axis_name=axis_name, **kwargs)

  want_value, want_grad = jax.jit(jax.value_and_grad(loss))(W, raw, ints)

  def per_device(w, xs, it):
    # The replicated parameter's gradient comes out already summed over devices.
    return jax.value_and_grad(functools.partial(loss, axis_name="data"))(w, xs, it)

  sharded = jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P())
  )
  got_value, got_grad = jax.jit(sharded)(_put(mesh, W, P()), _put(mesh, raw), _put(mesh, ints))
  _assert_close(got_value, want_value, f"{name} value")
  assert np.abs(want_grad).max() > 0
  _assert_close(got_grad, want_grad, f"{name} grad of replicated params")


def _metrics(a, b, axis_name=None):
  return {
      "alignment": L.alignment(a, b, axis_name=axis_name),
      "uniformity": L.uniformity(a, axis_name=axis_name),
      "rankme": L.rankme(a, axis_name=axis_name),
      "embedding_std": L.embedding_std(a, axis_name=axis_name),
      "positive_top1": L.positive_top1(a, b, axis_name=axis_name),
  }


def test_sharded_metrics_equal_single_device(mesh):
  want = jax.jit(_metrics)(X[0], X[1])
  sharded = jax.shard_map(
      functools.partial(_metrics, axis_name="data"), mesh=mesh, in_specs=P("data"), out_specs=P()
  )
  got = jax.jit(sharded)(*_put(mesh, (X[0], X[1])))
  assert 0 < float(want["positive_top1"]) < 1  # some hits, some misses: the offsets matter
  for name in want:
    _assert_close(got[name], want[name], name)


def test_one_row_per_device_is_enough_globally(mesh):
  a, b = X[0][:8], X[1][:8]
  sharded = jax.shard_map(
      functools.partial(L.nt_xent, axis_name="data"), mesh=mesh, in_specs=P("data"), out_specs=P()
  )
  np.testing.assert_allclose(jax.jit(sharded)(*_put(mesh, (a, b))), L.nt_xent(a, b), rtol=1e-5)


def test_per_row_losses_average_with_pmean(mesh):
  # BYOL / SimSiam / margin losses return the local mean; pmean of equal shards is the global mean.
  def per_device(p, z):
    return jax.lax.pmean(L.byol_loss(p, z), "data")

  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=P())
  got, grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(*_put(mesh, (X[0], X[1])))
  want, want_grads = jax.value_and_grad(L.byol_loss, argnums=(0, 1))(X[0], X[1])
  _assert_close(got, want, "loss")
  for g, w in zip(grads, want_grads):
    _assert_close(g, w, "gradient")


def _every_loss(a, b, queue, labels):
  return {
      "nt_xent": L.nt_xent(a, b),
      "info_nce": L.info_nce(a, b),
      "clip_loss": L.clip_loss(a, b, logit_scale=10.0),
      "sigmoid_loss": L.sigmoid_loss(a, b, logit_scale=10.0, logit_bias=-5.0),
      "dcl": L.dcl(a, b, weight_sigma=0.5),
      "hard_negative_nt_xent": L.hard_negative_nt_xent(a, b),
      "supcon": L.supcon(a, labels),
      "moco_infonce": L.moco_infonce(a, b, queue),
      "contrastive_margin": L.contrastive_margin(a, b, labels > 1),
      "triplet_margin": L.triplet_margin(a, b, b[::-1]),
      "batch_hard_triplet": L.batch_hard_triplet(a, labels),
      "batch_semi_hard_triplet": L.batch_semi_hard_triplet(a, labels),
      "byol_loss": L.byol_loss(a, b),
      "negative_cosine": L.negative_cosine(a, b),
      "barlow_twins": L.barlow_twins(a, b),
      "vicreg": L.vicreg(a, b),
      "jepa_loss": _jepa_loss_of_rows(a, b, labels),
      "retrieval_infonce": L.retrieval_infonce(a, b, b[::-1][:, None], positive_keys=labels,
                                               symmetric=True),
      "alignment": L.alignment(a, b),
      "uniformity": L.uniformity(a),
      "rankme": L.rankme(a),
      "embedding_std": L.embedding_std(a),
      "positive_top1": L.positive_top1(a, b),
  }


def test_global_batch_sharded_over_explicit_mesh_without_shard_map(mesh):
  # Plain jit over a batch sharded on an Explicit axis (no axis_name): same values and gradients.
  def total(a, b, queue, labels):
    losses = _every_loss(a, b, queue, labels)
    return sum(losses.values()), losses

  args = (X[0], X[1], QUEUE, LABELS)
  fn = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True))
  (want_total, want), want_grads = fn(*args)
  with jax.set_mesh(mesh):
    (got_total, got), got_grads = fn(*_put(mesh, args))
  # The sequence losses take [B, S, K, D] inputs, DINO's [views, B, K]: tests/test_cpc.py and
  # tests/test_dino.py cover them the same way.
  assert set(got) == set(L.__all__) - {"cpc_infonce", "cpc_accuracy", "dino_loss"}
  for name in got:
    _assert_close(got[name], want[name], name)
  _assert_close(got_total, want_total, "total")
  for g, w in zip(got_grads, want_grads):
    _assert_close(g, w, "gradient")
