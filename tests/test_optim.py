"""Optimizers and schedules against hand computations (NumPy)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.train import optim


def _cfg(**kw):
  c = optim.default_config()
  c.update(kw)
  return c


def _reference_lr(step, *, peak, warmup, total, end):
  if step < warmup:
    return peak * step / warmup
  t = (step - warmup) / (total - warmup)
  return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t))


def test_linear_decay_matches_transformers_warmup_linear_by_hand():
  # transformers' get_linear_schedule_with_warmup (sentence-transformers' default "WarmupLinear"):
  # step / warmup, then (total - step) / (total - warmup), times the peak.
  cfg = _cfg(lr=2e-5, lr_scaling="none", warmup_steps=10, decay="linear")
  schedule = optim.make_schedule(cfg, total_steps=110, global_batch_size=64)
  for step in (0, 3, 10, 11, 57, 109, 110):
    want = 2e-5 * (step / 10 if step < 10 else (110 - step) / 100)
    assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-12), step


@pytest.mark.parametrize("scaling,expected_peak", [("linear", 0.3 * 1024 / 256),
                                                   ("sqrt", 0.3 * 2.0), ("none", 0.3)])
def test_schedule_matches_warmup_cosine_by_hand(scaling, expected_peak):
  cfg = _cfg(lr=0.3, lr_scaling=scaling, warmup_steps=10, end_lr_factor=0.1)
  assert optim.peak_learning_rate(cfg, 1024) == pytest.approx(expected_peak)
  schedule = optim.make_schedule(cfg, total_steps=100, global_batch_size=1024)
  for step in (0, 1, 5, 10, 11, 55, 99, 100):
    want = _reference_lr(step, peak=expected_peak, warmup=10, total=100, end=0.1 * expected_peak)
    np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-5, atol=1e-7)


def test_warmup_fraction():
  cfg = _cfg(warmup_steps=0, warmup_fraction=0.1)
  assert optim.warmup_steps(cfg, 200) == 20


def _params():
  rng = np.random.default_rng(0)
  return {"dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                    "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
          "norm": {"scale": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
          "logit_scale": jnp.asarray(2.0, jnp.float32)}


def test_decay_mask_excludes_biases_norms_scalars():
  mask = optim.decay_mask(_params())
  assert mask == {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False},
                  "logit_scale": False}


@pytest.mark.parametrize("name", ["adamw", "sgd", "lamb", "lars"])
def test_weight_decay_only_on_kernels(name):
  # With zero gradients, only weight decay moves a parameter: biases, norms and scalars must not move.
  params = _params()
  cfg = _cfg(name=name, lr=0.5, lr_scaling="none", weight_decay=0.1)
  tx, _ = optim.make_optimizer(cfg, total_steps=10, global_batch_size=256)
  state = tx.init(params)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, state, params)
  # Step 0 of warmup-free cosine has lr = peak.
  np.testing.assert_array_equal(np.asarray(updates["dense"]["bias"]), 0.0)
  np.testing.assert_array_equal(np.asarray(updates["norm"]["scale"]), 0.0)
  np.testing.assert_array_equal(np.asarray(updates["logit_scale"]), 0.0)
  assert np.abs(np.asarray(updates["dense"]["kernel"])).min() > 0


def test_lars_matches_hand_computation():
  params = _params()
  rng = np.random.default_rng(1)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  lr, wd, eta = 0.5, 0.01, 0.001
  cfg = _cfg(name="lars", lr=lr, lr_scaling="none", weight_decay=wd, trust_coefficient=eta,
             momentum=0.9)
  tx, _ = optim.make_optimizer(cfg, total_steps=10, global_batch_size=256)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Kernel: decayed gradient scaled by the trust ratio eta * |w| / |g + wd w| (You et al. 2017).
  w, g = np.asarray(params["dense"]["kernel"]), np.asarray(grads["dense"]["kernel"])
  d = g + wd * w
  want = -lr * eta * np.linalg.norm(w) / np.linalg.norm(d) * d
  np.testing.assert_allclose(np.asarray(updates["dense"]["kernel"]), want, rtol=1e-5)
  # Bias and norm scale: plain momentum SGD (first step: -lr * g), no decay, no adaptation.
  for path in (("dense", "bias"), ("norm", "scale")):
    np.testing.assert_allclose(np.asarray(updates[path[0]][path[1]]),
                               -lr * np.asarray(grads[path[0]][path[1]]), rtol=1e-6)


def test_adamw_matches_hand_computation():
  params = _params()
  rng = np.random.default_rng(2)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  lr, wd, eps = 0.01, 0.05, 1e-8
  cfg = _cfg(name="adamw", lr=lr, lr_scaling="none", weight_decay=wd, eps=eps)
  tx, _ = optim.make_optimizer(cfg, total_steps=10, global_batch_size=256)
  updates, _ = tx.update(grads, tx.init(params), params)
  # First Adam step with bias correction: m_hat = g, v_hat = g^2 -> g / (|g| + eps).
  for path, decay in ((("dense", "kernel"), True), (("dense", "bias"), False)):
    w, g = np.asarray(params[path[0]][path[1]]), np.asarray(grads[path[0]][path[1]])
    want = -lr * (g / (np.abs(g) + eps) + (wd * w if decay else 0.0))
    np.testing.assert_allclose(np.asarray(updates[path[0]][path[1]]), want, rtol=1e-5)


def test_unknown_optimizer_is_an_error():
  with pytest.raises(ValueError, match="optim.name"):
    optim.make_optimizer(_cfg(name="adam"), total_steps=10, global_batch_size=256)
