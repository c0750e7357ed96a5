"""The online linear probe: the encoder never sees its gradient; sharded == single device."""

import functools
import os

import jax
import numpy as np
import pytest

from jaxcl import data, experiment
from jaxcl.train import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(num_devices, online_probe, views="clean"):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smoke")
  c.eval.online_probe = online_probe
  c.eval.online_probe_views = views
  info = data.info(c.data)
  return experiment.run.build_setup(c, mesh_lib.make_mesh(num_devices), info), info


@functools.lru_cache(maxsize=None)  # one compiled step per (devices, probe), shared by the tests
def _run(num_devices, online_probe, views):
  return _step(*_setup(num_devices, online_probe, views))


def _batch(info):
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, size=(16, *info.image_shape), dtype=np.uint8),
          "label": (np.arange(16) % info.num_classes).astype(np.int32)}


def _step(setup, info):
  state, metrics = setup.step_fn()(setup.init_state(),
                                   mesh_lib.shard_batch(_batch(info), setup.mesh))
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("views", ["clean", "augmented"])
def test_online_probe_trains_without_touching_the_encoder(views):
  on, on_metrics = _run(8, True, views)
  off, _ = _run(8, False, "clean")
  assert "probe" not in off and "online_probe_acc" in on_metrics
  # Same encoder/heads after the step, bit for bit: no gradient reached them from the probe.
  for key in ("params", "rest", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, on[key], off[key])
  assert np.abs(on["probe"]["params"]["w"]).sum() > 0  # the probe itself did learn
  assert np.isfinite(on_metrics["online_probe_loss"])


def test_online_probe_sharded_equals_single_device():
  a, a_metrics = _run(8, True, "clean")
  b, b_metrics = _run(1, True, "clean")
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
               a["probe"], b["probe"])
  np.testing.assert_allclose(a_metrics["online_probe_loss"], b_metrics["online_probe_loss"],
                             rtol=1e-5)
  assert a_metrics["online_probe_acc"] == b_metrics["online_probe_acc"]


def test_online_probe_standardises_features_like_a_batchnorm_without_affine():
  from jaxcl.train.online_probe import OnlineProbe

  rng = np.random.default_rng(1)
  feats = rng.normal(3.0, 5.0, size=(64, 2, 12)).astype(np.float32)  # [B, views, F]
  labels = rng.integers(0, 4, size=64)
  probe = OnlineProbe(4, image_shape=(8, 8, 1), momentum=0.9)
  state, _ = probe.update(probe.init(12), feats, labels)
  flat = feats.reshape(-1, 12)
  np.testing.assert_allclose(state["stats"]["mean"], 0.1 * flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(state["stats"]["var"], 0.9 + 0.1 * flat.var(0), rtol=1e-5)
  # The head learns on standardised features: rescaling and shifting them changes nothing.
  moved, _ = probe.update(probe.init(12), 100.0 * feats - 7.0, labels)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
               state["params"], moved["params"])
  # Prediction standardises with the running statistics.
  s = state["stats"]
  want = ((flat - s["mean"]) / np.sqrt(s["var"] + 1e-5)) @ state["params"]["w"] + state["params"]["b"]
  np.testing.assert_allclose(OnlineProbe.logits(state, flat), want, rtol=1e-4, atol=1e-5)


def test_clean_online_probe_learns_from_the_unaugmented_batch():
  setup, info = _setup(8, True)
  state, _ = _run(8, True, "clean")
  batch = _batch(info)
  with jax.set_mesh(setup.mesh):
    features = jax.device_get(setup.method(setup.init_state()).probe_features(batch))
  want, _ = setup.online_probe.update(
      setup.online_probe.init(state["probe"]["params"]["w"].shape[0]), features, batch["label"])
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
               state["probe"], jax.device_get(want))
