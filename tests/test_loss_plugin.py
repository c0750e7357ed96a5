"""The loss plug-in (``method.loss``): every loss by name against a NumPy reference of its two-view form,
8 devices == 1 (value and gradients), a user's loss by path trained by the real step, and the errors."""

import dataclasses
import functools
import os
import sys

import jax
import numpy as np
import pytest
from tolerance import assert_close_to_scale, reordered_rtol

import loss_reference as ref
from jaxcl import data, experiment, losses
from jaxcl.losses import registry
from jaxcl.train import mesh as mesh_lib

P = jax.P
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, T, MARGIN = 16, 8, 0.2, 0.5
_rng = np.random.RandomState(3)
Z1 = _rng.randn(N, D).astype(np.float32)
Z2 = (Z1 + 0.7 * _rng.randn(N, D)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 4, 5, 2, 3, 6, 0], np.int32)
RTOL = reordered_rtol(2 * N * D, sums=3, margin=3.0)


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _next_other_class(i):
  for k in range(1, N):
    if LABELS[(i + k) % N] != LABELS[i]:
      return (i + k) % N
  return i


def _triplet_ref(z1, z2, y, margin):
  a, p = _unit(z1), _unit(z2)
  return ref.triplet_margin(a, p, p[[_next_other_class(i) for i in range(N)]], margin)


def _pairs_ref(z1, z2, y, margin):
  a, p = _unit(z1), _unit(z2)
  nxt = (np.arange(N) + 1) % N
  return ref.contrastive_margin(np.concatenate([a, a]), np.concatenate([p, p[nxt]]),
                                np.concatenate([np.ones(N), y[nxt] == y]), margin)


def _stacked(fn):
  return lambda z1, z2, y, margin: fn(np.concatenate([_unit(z1), _unit(z2)]),
                                      np.concatenate([y, y]), margin)


# name -> (loss_kwargs, NumPy reference of the two-view form)
REFERENCES = {
    "nt_xent": ({}, lambda z1, z2, y: ref.nt_xent(z1, z2, T)),
    "info_nce": ({}, lambda z1, z2, y: (ref.info_nce(z1, z2, T) + ref.info_nce(z2, z1, T)) / 2),
    "clip_loss": ({"logit_scale": 5.0}, lambda z1, z2, y: ref.clip_loss(z1, z2, 5.0)),
    "sigmoid_loss": ({}, lambda z1, z2, y: ref.sigmoid_loss(z1, z2, 10.0, -10.0)),
    "dcl": ({}, lambda z1, z2, y: ref.dcl(z1, z2, T)),
    "hard_negative_nt_xent": ({"beta": 0.5},
                              lambda z1, z2, y: ref.hard_negative_nt_xent(z1, z2, T, 0.5, 0.1)),
    "barlow_twins": ({}, lambda z1, z2, y: ref.barlow_twins(z1, z2, 5e-3)),
    "vicreg": ({}, lambda z1, z2, y: ref.vicreg(z1, z2, 25.0, 25.0, 1.0)),
    "supcon": ({}, lambda z1, z2, y: ref.supcon(np.concatenate([z1, z2]), np.concatenate([y, y]), T)),
    "triplet_margin": ({"margin": MARGIN}, lambda z1, z2, y: _triplet_ref(z1, z2, y, MARGIN)),
    "contrastive_margin": ({"margin": MARGIN}, lambda z1, z2, y: _pairs_ref(z1, z2, y, MARGIN)),
    "batch_hard_triplet": ({"margin": MARGIN},
                           lambda z1, z2, y: _stacked(ref.batch_hard_triplet)(z1, z2, y, MARGIN)),
    "batch_semi_hard_triplet": (
        {"margin": MARGIN}, lambda z1, z2, y: _stacked(ref.batch_semi_hard_triplet)(z1, z2, y, MARGIN)),
}


def test_every_two_view_loss_is_covered():
  assert set(REFERENCES) == set(losses.TWO_VIEW_LOSSES)
  # Every objective of the package that compares two views is in the plug-in.
  # Need a predictor / a queue / sequences / a teacher's views and centre / patch predictions /
  # a document tower's hard negatives.
  not_two_view = {"byol_loss", "negative_cosine", "moco_infonce", "cpc_infonce", "cpc_accuracy",
                  "dino_loss", "jepa_loss", "retrieval_infonce"}
  objectives = set(losses.__all__) - {"alignment", "uniformity", "rankme", "embedding_std",
                                      "positive_top1"}
  assert objectives - not_two_view == set(losses.TWO_VIEW_LOSSES)


def _resolved(name):
  return losses.two_view_loss(name, REFERENCES[name][0], defaults={"temperature": T})


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_two_view_form_matches_numpy_reference(name):
  got = jax.jit(_resolved(name).fn)(Z1, Z2, LABELS)
  want = REFERENCES[name][1](Z1.astype(np.float64), Z2.astype(np.float64), LABELS)
  assert want > 0
  np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=name)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_sharded_equals_single_device_with_gradients(mesh, name):
  fn = _resolved(name).fn
  want, want_grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(Z1, Z2, LABELS)
  sharded = jax.shard_map(functools.partial(fn, axis_name="data"), mesh=mesh,
                          in_specs=P("data"), out_specs=P())
  put = functools.partial(jax.device_put, device=jax.sharding.NamedSharding(mesh, P("data")))
  got, got_grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(put(Z1), put(Z2),
                                                                         put(LABELS))
  assert_close_to_scale(got, want, rtol=RTOL, err_msg=f"{name} value")
  for g, w in zip(got_grads, want_grads):
    assert np.abs(w).max() > 0, name
    assert_close_to_scale(g, w, rtol=RTOL, err_msg=f"{name} gradient")


@pytest.mark.parametrize("spec,kwargs,block,field,match", [
    ("nt_xnet", {}, None, "loss", "unknown loss 'nt_xnet'; use one of nt_xent"),
    ("no_such_module:fn", {}, None, "loss", "cannot import module 'no_such_module'"),
    ("jaxcl.losses:no_such_fn", {}, None, "loss", "has no function 'no_such_fn'"),
    ("dcl", {"margin": 1.0}, None, "loss_kwargs", r"takes no keyword \['margin'\]; it takes"),
    ("nt_xent", {"axis_name": "x"}, None, "loss_kwargs", "passes itself"),
    ("dcl", {}, 64, "loss_block_size", "no memory-linear"),
])
def test_bad_loss_spec_names_the_field(spec, kwargs, block, field, match):
  with pytest.raises(registry.LossSpecError, match=match) as err:
    losses.two_view_loss(spec, kwargs, block_size=block)
  assert err.value.field == field


def _config(**method):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smoke")
  c.unlock()
  for k, v in method.items():
    c.method[k] = v
  return experiment.lock(c)


@pytest.mark.parametrize("method,field,match", [
    (dict(loss="triplet"), "method.loss", "unknown loss 'triplet'"),
    (dict(loss="dcl", loss_kwargs={"beta": 1.0}), "method.loss_kwargs", "takes no keyword"),
    (dict(loss="supcon", loss_block_size=32), "method.loss_block_size", "no memory-linear"),
])
def test_config_errors_before_anything_compiles(method, field, match):
  with pytest.raises(ValueError, match=f"config.{field}=.*{match}"):
    experiment.validate(_config(**method), num_devices=1)


def test_labelled_loss_on_unlabelled_data_is_a_config_error(monkeypatch):
  info = data.info(_config().data)
  monkeypatch.setattr(data, "info", lambda cfg: dataclasses.replace(info, num_classes=0))
  with pytest.raises(ValueError, match="config.method.loss='batch_hard_triplet'.*no labels"):
    experiment.validate(_config(loss="batch_hard_triplet"), num_devices=1)


EXAMPLES = os.path.join(ROOT, "examples")  # the README's own loss, examples/my_losses.py


@functools.lru_cache(maxsize=None)  # one compiled step per (loss, devices)
def _one_step(loss, num_devices):
  if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)
  c = _config(loss=loss, loss_kwargs={"margin": 0.2} if loss.startswith("my_losses") else {})
  c.eval.online_probe = False
  info = data.info(c.data)
  setup = experiment.run.build_setup(c, mesh_lib.make_mesh(num_devices), info)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, size=(16, *info.image_shape), dtype=np.uint8),
           "label": (np.arange(16) % 4).astype(np.int32)}
  state, metrics = setup.step_fn()(setup.init_state(), mesh_lib.shard_batch(batch, setup.mesh))
  return jax.device_get(state["params"]), float(metrics["loss"])


@pytest.mark.parametrize("loss", ["my_losses:nt_xent_am", "batch_semi_hard_triplet"])
def test_real_train_step_sharded_equals_single_device(loss):
  params8, loss8 = _one_step(loss, 8)
  params1, loss1 = _one_step(loss, 1)
  assert np.isfinite(loss8) and loss8 > 0
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  jax.tree.map(lambda a, b: assert_close_to_scale(a, b, rtol=1e-4), params8, params1)
