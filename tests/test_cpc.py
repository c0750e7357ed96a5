"""CPC: the loss against NumPy from the paper's eq. 4, 8 devices == 1 (value and gradients), a short run
on PLAID where the loss falls and the prediction accuracy of the true future rises, and the PLAID reader
refusing files that are not the archive's."""

import json
import os

import jax
import numpy as np
import pytest

import jaxcl.losses as L
from jaxcl import experiment
from jaxcl.data.builders import plaid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = jax.P
_rng = np.random.default_rng(0)
B, S, K, D = 8, 6, 3, 5
PRED = _rng.normal(size=(B, S, K, D)).astype(np.float32)
Z = _rng.normal(size=(B, S, D)).astype(np.float32)


def cpc_reference(pred, z):
  """-mean over (i, t, k), t + k < S, of log softmax over every latent z_{j,u} at the true z_{i,t+k}."""
  b, s, horizons, _ = pred.shape
  flat = z.reshape(b * s, -1).astype(np.float64)
  losses, hits = [], []
  for k in range(1, horizons + 1):
    for i in range(b):
      for t in range(s - k):
        scores = flat @ pred[i, t, k - 1].astype(np.float64)
        target = i * s + t + k
        losses.append(np.log(np.exp(scores - scores.max()).sum()) + scores.max() - scores[target])
        hits.append(np.argmax(scores) == target)
  return np.mean(losses), np.mean(hits)


def test_cpc_infonce_matches_the_paper():
  want_loss, want_acc = cpc_reference(PRED, Z)
  np.testing.assert_allclose(L.cpc_infonce(PRED, Z), want_loss, rtol=1e-5)
  np.testing.assert_allclose(L.cpc_accuracy(PRED, Z), want_acc, rtol=1e-6)
  # With unit latents, a prediction along its true future wins: accuracy 1, loss near 0.
  unit = Z / np.linalg.norm(Z, axis=-1, keepdims=True)
  perfect = np.zeros_like(PRED)
  for k in range(1, K + 1):
    perfect[:, :S - k, k - 1] = 50 * unit[:, k:]
  assert float(L.cpc_accuracy(perfect, unit)) == 1.0
  assert float(L.cpc_infonce(perfect, unit)) < 0.1


def test_cpc_sharded_equals_single_device(mesh):
  def loss(p, z):
    return L.cpc_infonce(p, z, axis_name="data")

  sharded = jax.shard_map(loss, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
  with jax.set_mesh(mesh):
    args = [jax.device_put(x, P("data")) for x in (PRED, Z)]
    got, got_grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(*args)
    acc = jax.jit(jax.shard_map(lambda p, z: L.cpc_accuracy(p, z, axis_name="data"), mesh=mesh,
                                in_specs=(P("data"), P("data")), out_specs=P()))(*args)
  want, want_grads = jax.value_and_grad(L.cpc_infonce, argnums=(0, 1))(PRED, Z)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(acc, L.cpc_accuracy(PRED, Z), rtol=1e-6)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6)


def test_bad_shapes_name_the_fix():
  with pytest.raises(ValueError, match="prediction steps need more than K latent steps"):
    L.cpc_infonce(PRED[:, :3], Z[:, :3])
  with pytest.raises(ValueError, match=r"\[B, S, K, D\]"):
    L.cpc_infonce(PRED[..., 0], Z)


def test_short_run_loss_falls_and_future_accuracy_rises(tmp_path):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "cpc_plaid.py"), "smoke")
  c.unlock()
  c.steps, c.batch_size = 40, 16
  c.optim.lr = 3e-3
  result = experiment.train_and_evaluate(experiment.lock(c), str(tmp_path))
  assert result["step"] == 40
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [r for r in map(json.loads, f) if "loss" in r]
  first, last = lines[:5], lines[-5:]
  mean = lambda rows, key: float(np.mean([r[key] for r in rows]))  # noqa: E731
  assert mean(last, "loss") < mean(first, "loss") - 0.3, (mean(first, "loss"), mean(last, "loss"))
  # Chance is 1 / (16 signals x 14 latents) = 0.45%; the tiny smoke model gets above twice that.
  assert mean(last, "cpc_accuracy") > 2 * max(mean(first, "cpc_accuracy"), 1 / (16 * 14))


@pytest.mark.parametrize("text, match", [
    ("@univariate true\n@data\n1,2,x:0\n", "with numbers"),
    ("@univariate true\n@data\n1,2,3:11\n", "label outside 0..10"),
    ("@univariate true\n@data\n1,nan,3:1\n", "non-finite"),
    ("@univariate false\n@data\n1,2:3,4:1\n", "not a univariate"),
    ("@univariate true\n1,2,3:1\n", "no @data section"),
    ("@univariate true\n@data\n" + "1," * 40000 + "1:0\n", "longer than"),
], ids=["text", "label", "nan", "multivariate", "no-data", "huge-line"])
def test_plaid_reader_refuses_what_is_not_the_archive(tmp_path, text, match):
  path = tmp_path / "PLAID_TRAIN.ts"
  path.write_text(text)
  with pytest.raises(ValueError, match=match):
    plaid.parse_ts(str(path), classes=len(plaid.CLASS_NAMES))


def test_plaid_files_parse_whole():
  parsed = plaid.splits()
  assert {k: len(v[0]) for k, v in parsed.items()} == plaid.SIZES
  series, labels = parsed["train"]
  assert set(labels.tolist()) == set(range(11)) and min(map(len, series)) == 100
  signal, length = plaid.fixed_length(series[0])
  assert signal.shape == (plaid.LENGTH, 1) and length == min(len(series[0]), plaid.LENGTH)
  np.testing.assert_array_equal(signal[:length, 0], series[0][:length])
