"""A few training steps of every method on 8 simulated devices (tiny encoder, tiny batch)."""

import os

import jax
import numpy as np
import pytest

from jaxcl import experiment, methods
from jaxcl.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def method_smoke_config(name):
  if name == "cpc":  # sequences, not images: its own config
    c = experiment.load_config_file(os.path.join(ROOT, "configs", "cpc_plaid.py"), "smoke")
    c.unlock()
    c.steps = 2
    return experiment.lock(c)
  own = {"ijepa": "ijepa_digits.py",            # needs a ViT
         "retrieval": "retrieval_stdlib_code.py"}  # text pairs
  if name in own:
    c = experiment.load_config_file(os.path.join(ROOT, "configs", own[name]), "smoke")
    c.unlock()
    c.steps = 2
    return experiment.lock(c)
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smoke")
  c.unlock()
  experiment.swap_method(c, name)
  experiment.shrink_heads(c.method)
  if "queue_size" in c.method:
    c.method.queue_size = 64  # 4 pushes of the 16-image batch; 8 rows per device
  c.steps = 2
  return experiment.lock(c)


@pytest.mark.parametrize("name", methods.NAMES)
def test_every_method_trains_on_8_devices(name, tmp_path, devices):
  result = experiment.train_and_evaluate(method_smoke_config(name), str(tmp_path))
  assert result["step"] == 2
  assert np.isfinite(result["loss"]) and np.isfinite(result["grad_norm"])
  assert result["update_norm"] > 0
  state = checkpoint.Checkpointer(os.path.join(str(tmp_path), "checkpoints")).restore_arrays()
  assert int(state["step"]) == 2
  assert int(state["guard"]["nonfinite_count"]) == 0
  for leaf in jax.tree.leaves(state):
    assert np.isfinite(np.asarray(leaf, np.float64)).all()
