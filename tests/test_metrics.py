"""Monitoring metrics against NumPy references (Wang & Isola 2020; Garrido et al. 2023)."""

import functools

import jax
import numpy as np
import pytest

import jaxcl.losses as L
import loss_reference as ref

_rng = np.random.RandomState(2)
Z1 = (_rng.randn(16, 8) * _rng.uniform(0.5, 3.0, (16, 1))).astype(np.float32)
Z2 = (Z1 + 0.5 * _rng.randn(16, 8)).astype(np.float32)

CASES = [
    ("alignment", L.alignment, ref.alignment, (Z1, Z2), dict(alpha=2.0)),
    ("alignment_alpha1", L.alignment, ref.alignment, (Z1, Z2), dict(alpha=1.0)),
    ("uniformity", L.uniformity, ref.uniformity, (Z1,), dict(t=2.0)),
    ("rankme", L.rankme, ref.rankme, (Z1,), {}),
    ("embedding_std", L.embedding_std, ref.embedding_std, (Z1,), {}),
    ("positive_top1", L.positive_top1, ref.positive_top1, (Z1, Z2), {}),
]


@pytest.mark.parametrize("name,fn,reference,args,kwargs", CASES, ids=[c[0] for c in CASES])
def test_metric_matches_numpy_reference(name, fn, reference, args, kwargs):
  got = jax.jit(functools.partial(fn, **kwargs))(*args)
  np.testing.assert_allclose(got, reference(*args, **kwargs), rtol=2e-5, atol=1e-6, err_msg=name)


def test_metrics_detect_collapse():
  collapsed = np.tile(Z1[:1], (16, 1)) + 1e-6 * Z1
  assert float(L.embedding_std(collapsed)) < 1e-4 < float(L.embedding_std(Z1))
  assert float(L.rankme(collapsed)) < 1.01 < float(L.rankme(Z1))
  assert float(L.uniformity(collapsed)) > -1e-3 > float(L.uniformity(Z1))
  assert float(L.positive_top1(Z1, Z1)) == 1.0
  assert 0.0 < float(L.positive_top1(Z1, Z2)) < 1.0
