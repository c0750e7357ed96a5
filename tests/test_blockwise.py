"""The memory-linear losses equal the papers' equations, on one device and on a ring of 8.

References are NumPy float64 code written from the papers; reference gradients are central finite
differences of those references (exact to ~1e-9 at these sizes), so nothing here trusts JAX autodiff.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.losses import blockwise

RTOL = 1e-5


# ---------------------------------------------------------------- NumPy references (float64)


def _unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def _lse(x, axis):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def np_nt_xent(z1, z2, p):
  """SimCLR eq. 1: 2N anchors, self excluded, positive = the other view; mean over anchors."""
  z = _unit(np.concatenate([z1, z2]))
  n = z1.shape[0]
  s = z @ z.T / p["temperature"]
  np.fill_diagonal(s, -np.inf)
  pos = np.concatenate([np.arange(n) + n, np.arange(n)])
  return np.mean(_lse(s, 1) - s[np.arange(2 * n), pos])


def np_info_nce(q, k, p):
  """CPC eq. 4: query i against every key, key i positive."""
  s = _unit(q) @ _unit(k).T / p["temperature"]
  return np.mean(_lse(s, 1) - np.diag(s))


def np_clip(a, b, p):
  """CLIP: mean of the image->text and text->image cross-entropies."""
  s = p["logit_scale"] * _unit(a) @ _unit(b).T
  return 0.5 * (np.mean(_lse(s, 1) - np.diag(s)) + np.mean(_lse(s, 0) - np.diag(s)))


def np_sigmoid(a, b, p):
  """SigLIP Algorithm 1: -sum log sigmoid(z * logits) / N, z = 2 I - 1."""
  s = p["logit_scale"] * _unit(a) @ _unit(b).T + p["logit_bias"]
  z = 2.0 * np.eye(a.shape[0]) - 1.0
  return np.sum(np.logaddexp(0.0, -z * s)) / a.shape[0]


def _fd_grad(f, x, eps=1e-6):
  """Central finite differences of a float64 scalar function of the array ``x``."""
  x = np.array(x, np.float64)
  g = np.zeros_like(x)
  flat, gflat = x.reshape(-1), g.reshape(-1)
  for i in range(flat.size):
    old = flat[i]
    flat[i] = old + eps
    hi = f(x)
    flat[i] = old - eps
    lo = f(x)
    flat[i] = old
    gflat[i] = (hi - lo) / (2 * eps)
  return g


def np_value_and_grads(ref, x, y, params):
  """Reference loss and its gradients w.r.t. x, y and every scalar in ``params``."""
  x, y = np.float64(x), np.float64(y)
  params = {k: float(v) for k, v in params.items()}
  value = ref(x, y, params)
  gx = _fd_grad(lambda v: ref(v, y, params), x)
  gy = _fd_grad(lambda v: ref(x, v, params), y)
  gp = {
      k: float(_fd_grad(lambda v, k=k: ref(x, y, params | {k: float(v)}), np.float64(params[k])))
      for k in params
  }
  return value, gx, gy, gp


# ---------------------------------------------------------------- cases

# name -> (loss taking (x, y, params, **kw), NumPy reference, differentiable scalar params)
CASES = {
    "nt_xent": (
        lambda x, y, p, **kw: blockwise.nt_xent(x, y, temperature=p["temperature"], **kw),
        np_nt_xent,
        {"temperature": 0.3},
    ),
    "info_nce": (
        lambda x, y, p, **kw: blockwise.info_nce(x, y, temperature=p["temperature"], **kw),
        np_info_nce,
        {"temperature": 0.2},
    ),
    "clip_loss": (
        lambda x, y, p, **kw: blockwise.clip_loss(x, y, logit_scale=p["logit_scale"], **kw),
        np_clip,
        {"logit_scale": 7.0},
    ),
    "sigmoid_loss": (
        lambda x, y, p, **kw: blockwise.sigmoid_loss(
            x, y, logit_scale=p["logit_scale"], logit_bias=p["logit_bias"], **kw
        ),
        np_sigmoid,
        {"logit_scale": 5.0, "logit_bias": -2.0},
    ),
}


def _data(n, d, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  # Correlated pairs, so positives are not lost in the noise and gradients are not tiny.
  y = (x + 0.7 * rng.normal(size=(n, d))).astype(np.float32)
  return x, y


def _params32(params):
  return {k: jnp.float32(v) for k, v in params.items()}


def _assert_grads(got, want, name):
  # atol scaled to the gradient's size: entries near zero carry float32 rounding of the large ones.
  want = np.asarray(want)
  atol = 1e-6 * max(1.0, float(np.max(np.abs(want))))
  np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=atol, err_msg=name)


def _check(value, grads, ref_out):
  rv, rgx, rgy, rgp = ref_out
  gx, gy, gp = grads
  np.testing.assert_allclose(float(value), rv, rtol=RTOL)
  _assert_grads(gx, rgx, "d/dx")
  _assert_grads(gy, rgy, "d/dy")
  for k in rgp:
    _assert_grads(gp[k], rgp[k], f"d/d{k}")


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(CASES))
def test_single_device_matches_reference(name):
  # 24 pairs in tiles of 5 (NT-Xent tiles 48 views): the last tile is padding-masked.
  loss, ref, params = CASES[name]
  x, y = _data(24, 8)
  fn = jax.jit(jax.value_and_grad(functools.partial(loss, block_size=5), argnums=(0, 1, 2)))
  value, grads = fn(x, y, _params32(params))
  _check(value, grads, np_value_and_grads(ref, x, y, params))


@pytest.mark.parametrize("name", list(CASES))
def test_ring_on_8_devices_matches_reference(name, mesh):
  # 40 pairs = 5 rows per device in tiles of 3: every device pads; gradient taken from outside.
  loss, ref, params = CASES[name]
  x, y = _data(40, 8, seed=1)
  rows = jax.NamedSharding(mesh, jax.P("data"))
  sharded = jax.shard_map(
      functools.partial(loss, block_size=3, axis_name="data"),
      mesh=mesh,
      in_specs=(jax.P("data"), jax.P("data"), jax.P()),
      out_specs=jax.P(),
  )
  fn = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))
  value, grads = fn(jax.device_put(x, rows), jax.device_put(y, rows), _params32(params))
  _check(value, grads, np_value_and_grads(ref, x, y, params))


@pytest.mark.parametrize("name", ["nt_xent", "clip_loss", "sigmoid_loss"])
def test_grad_of_replicated_weights_inside_shard_map(name, mesh):
  # A replicated projection W applied per device, differentiated inside shard_map: the custom_vjp's
  # per-device cotangents must be summed over devices exactly once.
  loss, ref, params = CASES[name]
  x, y = _data(24, 6, seed=2)
  w = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
  rows = jax.NamedSharding(mesh, jax.P("data"))

  def per_device(w, p, x, y):
    fn = lambda w, p: loss(x @ w, y @ w, p, block_size=2, axis_name="data")
    return jax.value_and_grad(fn, argnums=(0, 1))(w, p)

  sharded = jax.shard_map(
      per_device,
      mesh=mesh,
      in_specs=(jax.P(), jax.P(), jax.P("data"), jax.P("data")),
      out_specs=jax.P(),
  )
  value, (gw, gp) = jax.jit(sharded)(w, _params32(params), jax.device_put(x, rows),
                                     jax.device_put(y, rows))
  p64 = {k: float(v) for k, v in params.items()}
  x64, y64 = np.float64(x), np.float64(y)
  np.testing.assert_allclose(float(value), ref(x64 @ w, y64 @ w, p64), rtol=RTOL)
  _assert_grads(gw, _fd_grad(lambda v: ref(x64 @ v, y64 @ v, p64), w), "d/dW")
  for k in params:
    want = _fd_grad(lambda v, k=k: ref(x64 @ w, y64 @ w, p64 | {k: float(v)}), np.float64(p64[k]))
    _assert_grads(gp[k], want, f"d/d{k}")


def test_plain_losses_dispatch_to_blockwise_with_equal_results():
  # The plain jaxcl losses with block_size set must give the plain value and gradients.
  losses = pytest.importorskip("jaxcl.losses")
  x, y = _data(20, 8, seed=4)
  calls = {
      "nt_xent": dict(temperature=0.4),
      "info_nce": dict(temperature=0.15),
      "clip_loss": dict(logit_scale=9.0),
      "sigmoid_loss": dict(logit_scale=4.0, logit_bias=-1.5),
  }
  for name, kwargs in calls.items():
    fn = getattr(losses, name)
    both = jax.jit(lambda a, b: (
        jax.value_and_grad(lambda a, b: fn(a, b, **kwargs), argnums=(0, 1))(a, b),
        jax.value_and_grad(lambda a, b: fn(a, b, block_size=6, **kwargs), argnums=(0, 1))(a, b),
    ))
    plain, tiled = both(x, y)
    np.testing.assert_allclose(tiled[0], plain[0], rtol=RTOL, err_msg=name)
    for got, want in zip(tiled[1], plain[1]):
      _assert_grads(got, want, name)


def test_bfloat16_inputs_keep_float32_statistics():
  # bf16 embeddings of norm ~1e3 at temperature 0.01: the loss must stay finite and close to the
  # float32 loss, and gradients come back in the input dtype.
  x, y = _data(32, 16, seed=5)
  x, y = 1e3 * x, 1e3 * y
  fn = lambda a, b: blockwise.nt_xent(a, b, temperature=0.01, block_size=8)
  v32 = jax.jit(fn)(x, y)
  v16, (g1, g2) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(
      jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
  )
  assert v16.dtype == jnp.float32
  assert g1.dtype == jnp.bfloat16 and g2.dtype == jnp.bfloat16
  assert np.isfinite(float(v16)) and np.all(np.isfinite(np.float32(g1)))
  # bf16 rounding of the unit vectors moves logits by ~0.4 at temperature 0.01; the loss is ~0.04.
  np.testing.assert_allclose(float(v16), float(v32), rtol=2e-2, atol=5e-3)


def test_memory_is_linear_in_batch():
  # Compiled scratch memory of loss + gradient: doubling N at most ~doubles it, and it stays far
  # below one N x N float32 logit matrix (which the plain loss needs several of).
  def temp_bytes(n):
    x = jax.ShapeDtypeStruct((n, 16), jnp.float32)
    fn = jax.value_and_grad(
        lambda a, b: blockwise.clip_loss(a, b, logit_scale=10.0, block_size=128), argnums=(0, 1)
    )
    return jax.jit(fn).lower(x, x).compile().memory_analysis().temp_size_in_bytes

  small, big = temp_bytes(2048), temp_bytes(4096)
  assert big / small <= 2.2, (small, big)
  assert big < 0.1 * 4096 * 4096 * 4, big


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(block_size=0), "block_size"),
        (dict(block_size=2.5), "block_size"),
        (dict(block_size=None), "block_size"),
        (dict(block_size=4, temperature=0.0), "temperature"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
  x, y = _data(8, 4)
  with pytest.raises(ValueError, match=match):
    blockwise.nt_xent(x, y, **kwargs)


def test_mismatched_shapes_raise():
  x, _ = _data(8, 4)
  with pytest.raises(ValueError, match="same shape"):
    blockwise.clip_loss(x, x[:6], logit_scale=10.0, block_size=4)
