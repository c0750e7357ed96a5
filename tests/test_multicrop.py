"""Multi-crop (augment.num_local): 2 global + local views, one encoder pass per resolution; SimCLR's
step on 8 devices equals 1 device (BYOL's multi-crop rows run in benchmarks/methods.py); bad
combinations are one-line config errors."""

import jax
import numpy as np
import pytest
from test_fsdp import _assert_close
from test_train_methods import method_smoke_config

from jaxcl import data, experiment
from jaxcl.train import mesh as mesh_lib

STEPS = 2


def _config(name):
  c = method_smoke_config(name)
  c.unlock()
  c.augment.num_local = 2  # local views of augment.local_size (14 px next to the 32 px global ones)
  c.eval.online_probe = False
  c.steps = STEPS
  c.optim.lr /= 100  # small steps: 8-vs-1-device float noise is not amplified
  return c


def _train(name, devices):
  c = _config(name)
  c.train.num_devices = devices
  setup = experiment.run.build_setup(c, mesh_lib.make_mesh(devices), data.info(c.data))
  state, step = setup.init_state(), setup.step_fn()
  it = data.train_iterator(c.data, seed=c.seed, global_batch_size=c.batch_size)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, mesh_lib.shard_batch(next(it), setup.mesh))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state), losses


# SimCLR only: BYOL's multi-crop loss goes through the same per-resolution helper and the same
# global mean; a second pair of compiles would cost CI half a minute.
@pytest.mark.parametrize("name", ["simclr"])
def test_multi_crop_step_on_8_devices_equals_1(name, devices):
  state8, losses8 = _train(name, 8)
  state1, losses1 = _train(name, 1)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  assert np.isfinite(losses8).all() and losses8[0] > 0
  for part in ("params", "opt_state", "rest"):
    _assert_close(state8[part], state1[part], part)


@pytest.mark.parametrize("name, overrides, match", [
    ("moco_v3", {}, "augment.num_local=2: method 'moco_v3' trains on two views only"),
    ("simclr", {"augment.local_size": 32}, "augment.local_size=32: local crops must be smaller"),
    ("simclr", {"model.pool": "flatten"}, "model.pool='flatten': a flattened feature map is sized"),
])
def test_bad_multi_crop_combinations_are_one_line(name, overrides, match):
  c = _config(name)
  c.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=match):
    experiment.validate(c, num_devices=8)
