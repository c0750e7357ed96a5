"""The online linear probe: the encoder never sees its gradient; sharded == single device."""

import functools
import os

import jax
import numpy as np

from jaxcl import data, experiment
from jaxcl.train import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(num_devices, online_probe):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smoke")
  c.eval.online_probe = online_probe
  info = data.info(c.data)
  return experiment.run.build_setup(c, mesh_lib.make_mesh(num_devices), info), info


@functools.lru_cache(maxsize=None)  # one compiled step per (devices, probe), shared by the tests
def _run(num_devices, online_probe):
  return _step(*_setup(num_devices, online_probe))


def _step(setup, info):
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, size=(16, *info.image_shape), dtype=np.uint8),
           "label": (np.arange(16) % info.num_classes).astype(np.int32)}
  state, metrics = setup.step_fn()(setup.init_state(), mesh_lib.shard_batch(batch, setup.mesh))
  return jax.device_get(state), jax.device_get(metrics)


def test_online_probe_trains_without_touching_the_encoder():
  on, on_metrics = _run(8, True)
  off, _ = _run(8, False)
  assert "probe" not in off and "online_probe_acc" in on_metrics
  # Same encoder/heads after the step, bit for bit: no gradient reached them from the probe.
  for key in ("params", "rest", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, on[key], off[key])
  assert np.abs(on["probe"]["params"]["w"]).sum() > 0  # the probe itself did learn
  assert np.isfinite(on_metrics["online_probe_loss"])


def test_online_probe_sharded_equals_single_device():
  a, a_metrics = _run(8, True)
  b, b_metrics = _run(1, True)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
               a["probe"], b["probe"])
  np.testing.assert_allclose(a_metrics["online_probe_loss"], b_metrics["online_probe_loss"],
                             rtol=1e-5)
  assert a_metrics["online_probe_acc"] == b_metrics["online_probe_acc"]
