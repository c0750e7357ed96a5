"""FSDP: parameters, optimizer state and EMA targets split over the data axis give the same training as
1 device (SimCLR, BYOL with its EMA target, CLIP's two towers) and as replicated state on 8 devices;
checkpoints move between FSDP and replicated meshes of other sizes; the sharding rule itself."""

import jax
import numpy as np
import pytest
from test_train_methods import method_smoke_config

from jaxcl import data, experiment
from jaxcl.train import checkpoint, mesh as mesh_lib

STEPS = 3
MIN_SIZE = 64  # small enough that the tiny test model's kernels, heads and moments are split


def _setup(name, devices, fsdp, **train):
  c = method_smoke_config(name)
  c.unlock()
  c.train.update(train)
  c.train.fsdp, c.train.fsdp_min_size = fsdp, MIN_SIZE
  c.train.num_devices = devices
  c.eval.online_probe = False
  c.steps = STEPS
  c.optim.lr /= 100  # small steps: 8-vs-1-device float noise is not amplified into other trajectories
  mesh = mesh_lib.make_mesh(devices)
  return c, experiment.run.build_setup(c, mesh, data.info(c.data))


def _train(name, devices, fsdp, **train):
  c, setup = _setup(name, devices, fsdp, **train)
  state = setup.init_state()
  step = setup.step_fn()
  it = data.train_iterator(c.data, seed=c.seed, global_batch_size=c.batch_size)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, mesh_lib.shard_batch(next(it), setup.mesh))
    losses.append(float(metrics["loss"]))
  return setup, state, losses


def _split_leaves(state) -> int:
  return sum(mesh_lib.fsdp_dim(x.sharding.spec) is not None for x in jax.tree.leaves(state)
             if hasattr(x.sharding, "spec"))


# FSDP on 8 devices == 1 device for each; replicated on 8 devices too for SimCLR (replicated 8 == 1 is
# what the rest of the suite establishes for every method; three compiles per method would add a minute).
@pytest.mark.parametrize("name, layouts", [
    ("simclr", ("fsdp8", "replicated8")), ("byol", ("fsdp8",)), ("clip", ("fsdp8",))])
def test_fsdp_equals_replicated_and_one_device(name, layouts, devices):
  setups = {"fsdp8": (8, True), "replicated8": (8, False), "one": (1, False)}
  runs = {key: _train(name, *setups[key]) for key in (*layouts, "one")}
  _, fsdp_state, _ = runs["fsdp8"]
  # Really split: kernels, their Adam/LARS moments and (BYOL) the EMA target.
  assert _split_leaves(fsdp_state["params"]) >= 3
  assert _split_leaves(fsdp_state["opt_state"]) >= 3
  if name == "byol":
    assert _split_leaves(fsdp_state["rest"]) >= 3
  if "replicated8" in runs:
    assert _split_leaves(runs["replicated8"][1]) == 0
  want = jax.device_get(runs["one"][1])
  for key in layouts:
    _, state, losses = runs[key]
    # Same global batch and keys; only the order of float32 sums over devices differs.
    np.testing.assert_allclose(losses, runs["one"][2], rtol=1e-5, err_msg=key)
    got = jax.device_get(state)
    for part in ("params", "opt_state", "rest"):
      _assert_close(got[part], want[part], f"{key} {part}")


def test_fsdp_with_gradient_caching(devices):
  """Gradient caching takes gradients w.r.t. the gathered weights: reduce-scattered by hand."""
  _, fsdp, fsdp_losses = _train("simclr", 8, True, grad_cache_chunks=2)
  _, repl, repl_losses = _train("simclr", 8, False, grad_cache_chunks=2)
  assert _split_leaves(fsdp["params"]) >= 3
  np.testing.assert_allclose(fsdp_losses, repl_losses, rtol=1e-5)
  _assert_close(jax.device_get(fsdp["params"]), jax.device_get(repl["params"]), "params")


def _assert_close(actual, expected, what):
  """Each float leaf within 1e-4 of its part's largest magnitude (a gradient that cancels to float
  noise, like a bias before BatchNorm, gets an optimizer step of noise: compare at the part's scale)."""
  leaves = [np.asarray(x) for x in jax.tree.leaves(expected)]
  scale = max((float(np.abs(x).max()) for x in leaves if x.dtype.kind == "f" and x.size), default=0.0)
  for path, a, b in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(actual), leaves):
    if b.dtype.kind == "f":
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale,
                                 err_msg=f"{what} {jax.tree_util.keystr(path[0])}")
    else:
      np.testing.assert_array_equal(a, b, err_msg=f"{what} {jax.tree_util.keystr(path[0])}")


def test_checkpoint_moves_between_fsdp_and_replicated_meshes(tmp_path, devices):
  _, state8, _ = _train("simclr", 8, True)
  host = jax.device_get(state8)
  ckpt = checkpoint.Checkpointer(tmp_path / "a", async_save=False)
  ckpt.save(STEPS, state8)
  # FSDP on 8 -> replicated on 1 -> FSDP on 4: every value survives each move.
  _, one = _setup("simclr", 1, False)
  state1, _, _ = ckpt.restore(one.abstract_state)
  assert len(state1["step"].sharding.device_set) == 1
  ckpt1 = checkpoint.Checkpointer(tmp_path / "b", async_save=False)
  ckpt1.save(STEPS, state1)
  _, four = _setup("simclr", 4, True)
  state4, _, _ = ckpt1.restore(four.abstract_state)
  assert _split_leaves(state4["params"]) >= 3
  assert all(len(x.sharding.device_set) == 4 for x in jax.tree.leaves(state4))
  for moved in (state1, state4):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(moved), host)
  for c in (ckpt, ckpt1):
    c.close()


@pytest.mark.parametrize("shape,n,min_size,want", [
    ((3, 3, 16, 64), 8, 64, jax.P(None, None, None, "data")),  # the largest divisible dimension
    ((64, 16), 8, 64, jax.P("data", None)),
    ((64, 64), 8, 64, jax.P("data", None)),                    # ties: the first
    ((10, 6), 8, 1, jax.P()),                                  # nothing divisible: replicated
    ((12, 16), 4, 1000, jax.P()),                              # too small to be worth it
    ((), 8, 1, jax.P()),
    ((64, 16), 1, 1, jax.P()),                                 # one device
])
def test_fsdp_rule(shape, n, min_size, want):
  assert mesh_lib.fsdp_spec(shape, n, min_size) == want
