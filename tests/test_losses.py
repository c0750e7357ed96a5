"""jaxcl.losses against NumPy references from the papers' equations; bad input; numerics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcl.losses as L
import loss_reference as ref

N, D = 16, 8
_rng = np.random.RandomState(0)
# Un-normalised inputs of varied norm: the cosine losses must normalise them themselves.
Z1 = (_rng.randn(N, D) * _rng.uniform(0.5, 3.0, (N, 1))).astype(np.float32)
Z2 = (Z1 + 0.7 * _rng.randn(N, D)).astype(np.float32)
Z3 = _rng.randn(N, D).astype(np.float32)
QUEUE = _rng.randn(24, D).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 4, 5, 2, 3, 6, 0], np.int32)  # 4, 5, 6 are singletons
SIMILAR = (_rng.rand(N) < 0.5)

# (name, jaxcl function, reference, positional args, kwargs)
CASES = [
    ("nt_xent", L.nt_xent, ref.nt_xent, (Z1, Z2), dict(temperature=0.5)),
    ("nt_xent_t0.1", L.nt_xent, ref.nt_xent, (Z1, Z2), dict(temperature=0.1)),
    ("info_nce", L.info_nce, ref.info_nce, (Z1, Z2), dict(temperature=0.1)),
    ("clip_loss", L.clip_loss, ref.clip_loss, (Z1, Z2), dict(logit_scale=1 / 0.07)),
    ("sigmoid_loss", L.sigmoid_loss, ref.sigmoid_loss, (Z1, Z2),
     dict(logit_scale=10.0, logit_bias=-10.0)),
    ("sigmoid_loss_b0", L.sigmoid_loss, ref.sigmoid_loss, (Z1, Z2),
     dict(logit_scale=3.0, logit_bias=0.5)),
    ("dcl", L.dcl, ref.dcl, (Z1, Z2), dict(temperature=0.1)),
    ("dclw", L.dcl, ref.dcl, (Z1, Z2), dict(temperature=0.1, weight_sigma=0.5)),
    ("hcl", L.hard_negative_nt_xent, ref.hard_negative_nt_xent, (Z1, Z2),
     dict(temperature=0.5, beta=1.0, tau_plus=0.1)),
    ("hcl_b0", L.hard_negative_nt_xent, ref.hard_negative_nt_xent, (Z1, Z2),
     dict(temperature=0.2, beta=0.0, tau_plus=0.0)),
    ("hcl_clamped", L.hard_negative_nt_xent, ref.hard_negative_nt_xent, (Z1, Z1 * 1.5),
     dict(temperature=0.5, beta=0.5, tau_plus=0.5)),
    ("supcon", L.supcon, ref.supcon, (Z1, LABELS), dict(temperature=0.1)),
    ("moco_infonce", L.moco_infonce, ref.moco_infonce, (Z1, Z2, QUEUE), dict(temperature=0.2)),
    ("contrastive_margin", L.contrastive_margin, ref.contrastive_margin, (Z1 / 3, Z2 / 3, SIMILAR),
     dict(margin=1.0)),
    ("triplet_margin", L.triplet_margin, ref.triplet_margin, (Z1, Z2, Z3), dict(margin=1.0)),
    ("batch_hard_triplet", L.batch_hard_triplet, ref.batch_hard_triplet, (Z1, LABELS),
     dict(margin=1.0)),
    ("batch_semi_hard_triplet", L.batch_semi_hard_triplet, ref.batch_semi_hard_triplet,
     (Z1, LABELS), dict(margin=1.0)),
    ("byol_loss", L.byol_loss, ref.byol_loss, (Z1, Z2), {}),
    ("negative_cosine", L.negative_cosine, ref.negative_cosine, (Z1, Z2), {}),
    ("barlow_twins", L.barlow_twins, ref.barlow_twins, (Z1, Z2), dict(lambda_offdiag=5e-3)),
    ("vicreg", L.vicreg, ref.vicreg, (Z1, Z2), dict(sim_weight=25.0, var_weight=25.0, cov_weight=1.0)),
    ("vicreg_weights", L.vicreg, ref.vicreg, (Z1 / 4, Z2 / 4),
     dict(sim_weight=1.0, var_weight=2.0, cov_weight=3.0)),
]


@pytest.mark.parametrize("name,fn,reference,args,kwargs", CASES, ids=[c[0] for c in CASES])
def test_matches_numpy_reference(name, fn, reference, args, kwargs):
  got = jax.jit(functools.partial(fn, **kwargs))(*args)
  want = reference(*args, **kwargs)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=name)


def test_hcl_reduces_to_nt_xent_without_reweighting_or_debiasing():
  # beta = tau_plus = 0 is NT-Xent whenever the clamp is inactive.
  got = jax.jit(functools.partial(L.hard_negative_nt_xent, temperature=0.5, beta=0.0, tau_plus=0.0))
  want = jax.jit(functools.partial(L.nt_xent, temperature=0.5))
  np.testing.assert_allclose(got(Z1, Z2), want(Z1, Z2), rtol=1e-5)


def test_references_disagree_with_a_wrong_loss():
  # Guards the reference tests themselves: a different loss gives a different number.
  assert abs(ref.nt_xent(Z1, Z2, 0.5) - ref.info_nce(Z1, Z2, 0.5)) > 1e-3
  supcon = jax.jit(L.supcon)
  assert abs(float(supcon(Z1, LABELS)) - float(supcon(Z1, LABELS[::-1].copy()))) > 1e-3


def test_supcon_without_any_positive_is_zero():
  assert float(jax.jit(L.supcon)(Z1, np.arange(N, dtype=np.int32))) == 0.0


# --- numerics -------------------------------------------------------------------------------------

SOFTMAX_CASES = [
    ("nt_xent", L.nt_xent, ref.nt_xent, 2, dict(temperature=0.01)),
    ("info_nce", L.info_nce, ref.info_nce, 2, dict(temperature=0.01)),
    ("clip_loss", L.clip_loss, ref.clip_loss, 2, dict(logit_scale=100.0)),
    ("sigmoid_loss", L.sigmoid_loss, ref.sigmoid_loss, 2, dict(logit_scale=100.0, logit_bias=-10.0)),
    ("dcl", L.dcl, ref.dcl, 2, dict(temperature=0.01, weight_sigma=0.5)),
    ("hcl", L.hard_negative_nt_xent, ref.hard_negative_nt_xent, 2,
     dict(temperature=0.01, beta=1.0, tau_plus=0.1)),
    ("moco_infonce", L.moco_infonce, ref.moco_infonce, 3, dict(temperature=0.01)),
]


@pytest.mark.parametrize("name,fn,reference,nargs,kwargs", SOFTMAX_CASES,
                         ids=[c[0] for c in SOFTMAX_CASES])
def test_temperature_001_with_norm_1e3_inputs_is_finite_and_exact(name, fn, reference, nargs, kwargs):
  # Norm-1e3 inputs at temperature 0.01 give logits up to 100; exp(100) overflows float32.
  args = [Z1, Z2, QUEUE][:nargs]
  big = [1e3 * a / np.linalg.norm(a, axis=1, keepdims=True) for a in args]
  value, grads = jax.jit(jax.value_and_grad(functools.partial(fn, **kwargs), argnums=(0, 1)))(*big)
  assert np.isfinite(value)
  for g in grads:
    assert np.all(np.isfinite(g))
  np.testing.assert_allclose(value, reference(*big, **kwargs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,fn,reference,nargs,kwargs", SOFTMAX_CASES,
                         ids=[c[0] for c in SOFTMAX_CASES])
def test_bfloat16_inputs_compute_in_float32(name, fn, reference, nargs, kwargs):
  del reference
  args = [jnp.asarray(a, jnp.bfloat16) for a in [Z1, Z2, QUEUE][:nargs]]
  value, grads = jax.jit(jax.value_and_grad(functools.partial(fn, **kwargs), argnums=(0, 1)))(*args)
  assert value.dtype == jnp.float32
  assert np.isfinite(value)
  for g in grads:
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))
  # Same number as float32 math on the bf16-rounded values: the upcast happens before any arithmetic.
  exact = jax.jit(functools.partial(fn, **kwargs))(*[a.astype(jnp.float32) for a in args])
  np.testing.assert_allclose(value, exact, rtol=1e-6)


def test_zero_embedding_gives_finite_gradients():
  z = Z1.copy()
  z[3] = 0.0
  for fn in (L.nt_xent, L.info_nce, L.byol_loss):
    grads = jax.jit(jax.grad(fn, argnums=(0, 1)))(z, Z2)
    assert all(np.all(np.isfinite(g)) for g in grads), fn.__name__
  assert np.all(np.isfinite(jax.jit(jax.grad(L.batch_hard_triplet))(np.concatenate([Z1, Z1[:2]]),
                                                           np.concatenate([LABELS, LABELS[:2]]))))


def test_learned_scale_and_temperature_may_be_traced():
  grad = jax.jit(jax.grad(lambda s: L.clip_loss(Z1, Z2, logit_scale=jnp.exp(s))))(jnp.log(10.0))
  assert np.isfinite(grad) and grad != 0
  value = jax.jit(lambda t: L.nt_xent(Z1, Z2, temperature=t))(0.5)
  np.testing.assert_allclose(value, ref.nt_xent(Z1, Z2, 0.5), rtol=2e-5)


# --- bad input ------------------------------------------------------------------------------------

ERROR_CASES = [
    ("shape_mismatch", L.nt_xent, (Z1, Z2[:, :4]), {}, "same shape"),
    ("rows_mismatch", L.clip_loss, (Z1, Z2[:8]), dict(logit_scale=10.0), "same shape"),
    ("one_row", L.info_nce, (Z1[:1], Z2[:1]), {}, "at least 2 rows"),
    ("not_2d", L.nt_xent, (Z1[0], Z2[0]), {}, r"\[batch, dim\]"),
    ("int_embeddings", L.nt_xent, (LABELS[:, None], LABELS[:, None]), {}, "floating-point"),
    ("temperature_zero", L.nt_xent, (Z1, Z2), dict(temperature=0.0), "temperature must be > 0"),
    ("temperature_negative", L.supcon, (Z1, LABELS), dict(temperature=-0.1), "temperature"),
    ("dcl_temperature", L.dcl, (Z1, Z2), dict(temperature=0.0), "temperature"),
    ("dcl_sigma", L.dcl, (Z1, Z2), dict(weight_sigma=0.0), "weight_sigma"),
    ("hcl_tau_plus", L.hard_negative_nt_xent, (Z1, Z2), dict(tau_plus=1.0), "tau_plus"),
    ("hcl_beta", L.hard_negative_nt_xent, (Z1, Z2), dict(beta=-1.0), "beta"),
    ("moco_temperature", L.moco_infonce, (Z1, Z2, QUEUE), dict(temperature=0.0), "temperature"),
    ("moco_queue_dim", L.moco_infonce, (Z1, Z2, QUEUE[:, :4]), {}, "embedding dim"),
    ("clip_scale", L.clip_loss, (Z1, Z2), dict(logit_scale=0.0), "logit_scale"),
    ("siglip_scale", L.sigmoid_loss, (Z1, Z2), dict(logit_scale=-1.0, logit_bias=0.0), "logit_scale"),
    ("labels_float", L.supcon, (Z1, LABELS.astype(np.float32)), {}, "integer"),
    ("labels_shape", L.supcon, (Z1, LABELS[:8]), {}, r"shape \(16,\)"),
    ("labels_2d", L.batch_hard_triplet, (Z1, LABELS[:, None]), {}, "labels must have shape"),
    ("semi_hard_labels", L.batch_semi_hard_triplet, (Z1, LABELS.astype(np.float32)), {}, "integer"),
    ("margin_zero", L.triplet_margin, (Z1, Z2, Z3), dict(margin=0.0), "margin must be > 0"),
    ("margin_negative", L.batch_hard_triplet, (Z1, LABELS), dict(margin=-1.0), "margin"),
    ("pair_margin", L.contrastive_margin, (Z1, Z2, SIMILAR), dict(margin=0.0), "margin"),
    ("pair_labels_shape", L.contrastive_margin, (Z1, Z2, SIMILAR[:4]), {}, "is_similar"),
    ("triplet_shape", L.triplet_margin, (Z1, Z2, Z3[:8]), {}, "same shape"),
    ("byol_shape", L.byol_loss, (Z1, Z2[:, :4]), {}, "same shape"),
    ("barlow_one_row", L.barlow_twins, (Z1[:1], Z2[:1]), {}, "at least 2 rows"),
    ("barlow_lambda", L.barlow_twins, (Z1, Z2), dict(lambda_offdiag=-1.0), "lambda_offdiag"),
    ("vicreg_shape", L.vicreg, (Z1, Z2[:4]), {}, "same shape"),
    ("block_size", L.nt_xent, (Z1, Z2), dict(block_size=0), "block_size"),
    ("uniformity_t", L.uniformity, (Z1,), dict(t=0.0), "t must be > 0"),
    ("top1_shape", L.positive_top1, (Z1, Z2[:4]), {}, "same shape"),
]


@pytest.mark.parametrize("name,fn,args,kwargs,match", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_input_raises_value_error(name, fn, args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    fn(*args, **kwargs)


def test_block_size_dispatches_to_blockwise_after_validation(monkeypatch):
  import sys
  import types

  calls = []
  fake = types.ModuleType("jaxcl.losses.blockwise")
  for name in ("nt_xent", "info_nce", "clip_loss", "sigmoid_loss"):
    setattr(fake, name, lambda *a, _n=name, **k: calls.append((_n, len(a), k)) or 0.0)
  monkeypatch.setitem(sys.modules, "jaxcl.losses.blockwise", fake)
  monkeypatch.setattr(L, "blockwise", fake, raising=False)
  L.nt_xent(Z1, Z2, temperature=0.3, block_size=4)
  L.info_nce(Z1, Z2, block_size=4, axis_name=None)
  L.clip_loss(Z1, Z2, logit_scale=5.0, block_size=8)
  L.sigmoid_loss(Z1, Z2, logit_scale=5.0, logit_bias=-1.0, block_size=2)
  assert [c[0] for c in calls] == ["nt_xent", "info_nce", "clip_loss", "sigmoid_loss"]
  assert calls[0][2] == dict(temperature=0.3, block_size=4, axis_name=None)
  assert calls[3][2] == dict(logit_scale=5.0, logit_bias=-1.0, block_size=2, axis_name=None)
  with pytest.raises(ValueError, match="temperature"):
    L.nt_xent(Z1, Z2, temperature=0.0, block_size=4)
  assert len(calls) == 4


BLOCK_CASES = [
    ("nt_xent", L.nt_xent, dict(temperature=0.2)),
    ("info_nce", L.info_nce, dict(temperature=0.1)),
    ("clip_loss", L.clip_loss, dict(logit_scale=14.0)),
    ("sigmoid_loss", L.sigmoid_loss, dict(logit_scale=10.0, logit_bias=-5.0)),
]


@pytest.mark.parametrize("name,fn,kwargs", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_block_size_gives_the_plain_value_and_gradient(name, fn, kwargs):
  plain = jax.jit(jax.value_and_grad(functools.partial(fn, **kwargs), argnums=(0, 1)))(Z1, Z2)
  tiled = jax.jit(jax.value_and_grad(functools.partial(fn, block_size=4, **kwargs),
                                     argnums=(0, 1)))(Z1, Z2)
  np.testing.assert_allclose(tiled[0], plain[0], rtol=1e-5, err_msg=name)
  for g, w in zip(tiled[1], plain[1]):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=name)
