"""``retrieval_infonce``: the NumPy reference of DPR's equation, the ring form, and 8 devices == 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_reference import retrieval_infonce as reference
from tolerance import assert_close_to_scale, reordered_rtol

import jaxcl.losses as L

P = jax.P
N, H, D = 16, 3, 8
_rng = np.random.RandomState(7)
Q = _rng.randn(N, D).astype(np.float32)
POS = (Q + 0.7 * _rng.randn(N, D)).astype(np.float32)
NEG = (Q[:, None] + 1.2 * _rng.randn(N, H, D)).astype(np.float32)
VALID = _rng.rand(N, H) > 0.3
KEYS = np.array([0, 1, 2, 3, 4, 5, 1, 7, 8, 9, 10, 2, 12, 13, 14, 1], np.int32)  # shared positives
RTOL = reordered_rtol(N * (H + 1), sums=3)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("masks", [False, True])
def test_dense_matches_numpy_reference(symmetric, masks):
  kw = dict(negatives_valid=VALID, positive_keys=KEYS) if masks else {}
  got = jax.jit(functools.partial(L.retrieval_infonce, temperature=0.1, symmetric=symmetric, **kw))(
      Q, POS, NEG)
  want = reference(Q, POS, NEG, 0.1, VALID if masks else None, KEYS if masks else None, symmetric)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_without_negatives_it_is_info_nce():
  np.testing.assert_allclose(L.retrieval_infonce(Q, POS, temperature=0.1),
                             L.info_nce(Q, POS, temperature=0.1), rtol=1e-6)
  np.testing.assert_allclose(L.retrieval_infonce(Q, POS, temperature=0.1, symmetric=True),
                             L.clip_loss(Q, POS, logit_scale=10.0), rtol=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_ring_form_equals_dense_with_gradients(symmetric):
  def dense(q, p, n, t):
    return L.retrieval_infonce(q, p, n, temperature=t, symmetric=symmetric)

  def ring(q, p, n, t):
    return L.retrieval_infonce(q, p, n, temperature=t, symmetric=symmetric, block_size=5)

  grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))  # noqa: E731
  want, want_g = grad(dense)(Q, POS, NEG, 0.1)
  got, got_g = grad(ring)(Q, POS, NEG, 0.1)
  assert_close_to_scale(got, want, rtol=RTOL)
  for g, w in zip(got_g, want_g):
    assert_close_to_scale(g, w, rtol=RTOL)


@pytest.mark.parametrize("block_size", [None, 2])
def test_sharded_equals_single_device_with_gradients(mesh, block_size):
  kw = dict(symmetric=True, block_size=block_size)
  if block_size is None:  # masks exist in the dense form only
    kw.update(negatives_valid=VALID, positive_keys=KEYS)
  masks = (kw.pop("negatives_valid", None), kw.pop("positive_keys", None))

  def fn(q, p, n, t, valid, keys, axis_name=None):
    return L.retrieval_infonce(q, p, n, temperature=t, negatives_valid=valid, positive_keys=keys,
                               axis_name=axis_name, **kw)

  want, want_g = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)))(Q, POS, NEG, 0.1, *masks)
  spec = P("data") if masks[0] is not None else P()
  sharded = jax.shard_map(functools.partial(fn, axis_name="data"), mesh=mesh,
                          in_specs=(P("data"), P("data"), P("data"), P(), spec, spec),
                          out_specs=P())
  put = functools.partial(jax.device_put, device=jax.sharding.NamedSharding(mesh, P("data")))
  args = [put(Q), put(POS), put(NEG), jnp.float32(0.1)]
  args += [put(m) if m is not None else None for m in masks]
  got, got_g = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2, 3)))(*args)
  assert_close_to_scale(got, want, rtol=RTOL)
  for g, w in zip(got_g, want_g):
    assert_close_to_scale(g, w, rtol=RTOL)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="negatives must have shape"):
    L.retrieval_infonce(Q, POS, NEG[:, :, :4])
  with pytest.raises(ValueError, match="negatives_valid must have shape"):
    L.retrieval_infonce(Q, POS, NEG, negatives_valid=VALID[:, :2])
  with pytest.raises(ValueError, match="applies no masks"):
    L.retrieval_infonce(Q, POS, NEG, positive_keys=KEYS, block_size=4)
