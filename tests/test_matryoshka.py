"""The Matryoshka wrapper (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss) against a NumPy
reference of the retrieval InfoNCE summed over renormalised prefixes, and 8 devices == 1 with
gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import losses

N, H, D, T = 16, 2, 12, 0.05
DIMS, WEIGHTS = (12, 6, 3), (1.0, 0.5, 2.0)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_infonce(q, p, negs, t):
  """DPR's in-batch + hard-negative InfoNCE from the equation (every row's negatives are candidates)."""
  q, p, negs = _unit(q), _unit(p), _unit(negs).reshape(-1, q.shape[1])
  logits = np.concatenate([q @ p.T, q @ negs.T], axis=1) / t
  m = logits.max(1, keepdims=True)
  lse = np.log(np.exp(logits - m).sum(1)) + m[:, 0]
  return float(np.mean(lse - np.diag(logits)))


def numpy_matryoshka(q, p, negs, dims, weights, t):
  return sum(w * numpy_infonce(q[:, :d], p[:, :d], negs[..., :d], t) for d, w in zip(dims, weights))


@pytest.fixture(scope="module")
def embeddings():
  rng = np.random.default_rng(0)
  return tuple(rng.normal(size=s).astype(np.float32) for s in ((N, D), (N, D), (N, H, D)))


def test_matches_numpy_reference(embeddings):
  loss = losses.matryoshka(losses.retrieval_infonce, DIMS, WEIGHTS)
  got = jax.jit(lambda q, p, n: loss(q, p, n, temperature=T))(*embeddings)
  want = numpy_matryoshka(*(e.astype(np.float64) for e in embeddings), DIMS, WEIGHTS, T)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Default weights are 1; one prefix of the full size is the plain loss.
  plain = losses.retrieval_infonce(*embeddings, temperature=T)
  np.testing.assert_allclose(losses.matryoshka(losses.retrieval_infonce, (D,))(
      *embeddings, temperature=T), plain, rtol=1e-6)


def test_8_devices_equal_1_with_gradients(embeddings):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  loss = losses.matryoshka(losses.retrieval_infonce, DIMS, WEIGHTS)

  def sharded(q, p, n):
    fn = jax.shard_map(functools.partial(loss, temperature=T, axis_name="data"), mesh=mesh,
                       in_specs=(jax.P("data"),) * 3, out_specs=jax.P())
    return fn(q, p, n)

  single = jax.jit(jax.value_and_grad(lambda q, p, n: loss(q, p, n, temperature=T), argnums=(0, 1, 2)))
  many = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))
  want, want_grads = single(*embeddings)
  with jax.set_mesh(mesh):
    put = [jax.device_put(e, jax.sharding.NamedSharding(mesh, jax.P("data"))) for e in embeddings]
    got, got_grads = many(*put)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6)


def test_bad_dims_name_the_field():
  with pytest.raises(ValueError, match=r"method.matryoshka_dims=\(8, 8\)"):
    losses.matryoshka(losses.retrieval_infonce, (8, 8))
  with pytest.raises(ValueError, match="only 12 dimensions"):
    losses.matryoshka(losses.retrieval_infonce, (16, 8))(jnp.ones((2, 12)), jnp.ones((2, 12)))
