"""DINO: the loss and centre against NumPy written from the paper's pseudocode, sharded == single
device (loss, gradient, and the whole train step with multi-crop, and with a ViT encoder), the
collapse monitors in a short real run, and one-line config errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_fsdp
from test_fsdp import _assert_close
from test_multicrop import _train

from jaxcl import experiment, losses
from jaxcl.methods import dino

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)
VS, VT, N, K = 4, 2, 16, 12  # 2 global + 2 local student views, 16 rows, 12 prototypes
STUDENT = RNG.normal(size=(VS, N, K)).astype(np.float32)
TEACHER = RNG.normal(size=(VT, N, K)).astype(np.float32)
CENTER = RNG.normal(size=(K,)).astype(np.float32) * 0.3
TS, TT = 0.1, 0.04


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _numpy_dino(student, teacher, center, ts, tt):
  """Algorithm 1 of Caron et al. 2021 with its code's multi-crop pairs: H(t, s) over every (global
  teacher view iq, student view v != iq), averaged over the pairs."""
  total, pairs = 0.0, 0
  for iq in range(teacher.shape[0]):
    t = _softmax((teacher[iq].astype(np.float64) - center) / tt)
    for v in range(student.shape[0]):
      if v == iq:
        continue
      log_s = np.log(_softmax(student[v].astype(np.float64) / ts))
      total += np.mean(-np.sum(t * log_s, axis=-1))
      pairs += 1
  return total / pairs


def test_dino_loss_and_center_match_the_pseudocode():
  got = losses.dino_loss(STUDENT, TEACHER, CENTER, student_temperature=TS, teacher_temperature=TT)
  np.testing.assert_allclose(got, _numpy_dino(STUDENT, TEACHER, CENTER, TS, TT), rtol=1e-5)
  np.testing.assert_allclose(losses.dino_center(TEACHER), TEACHER.mean(axis=(0, 1)), rtol=1e-5,
                             atol=1e-6)


def test_dino_loss_sharded_equals_single_device(mesh):
  def loss(s, t, c, axis_name=None):
    return losses.dino_loss(s, t, c, student_temperature=TS, teacher_temperature=TT,
                            axis_name=axis_name)

  rows = jax.P(None, "data", None)
  sharded_loss = jax.shard_map(lambda s, t, c: loss(s, t, c, "data"), mesh=mesh,
                               in_specs=(rows, rows, jax.P()), out_specs=jax.P())
  sharded_center = jax.shard_map(lambda t: losses.dino_center(t, axis_name="data"), mesh=mesh,
                                 in_specs=rows, out_specs=jax.P())
  with jax.set_mesh(mesh):
    s, t = (jax.device_put(x, rows) for x in (STUDENT, TEACHER))
    got, got_grad = jax.jit(jax.value_and_grad(sharded_loss))(s, t, CENTER)
    got_center = jax.jit(sharded_center)(t)
  want, want_grad = jax.value_and_grad(loss)(STUDENT, TEACHER, CENTER)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(got_center, losses.dino_center(TEACHER), rtol=1e-5, atol=1e-7)


def test_bad_shapes_and_temperatures_name_the_fix():
  with pytest.raises(ValueError, match="student must have shape"):
    losses.dino_loss(STUDENT[0], TEACHER, CENTER)
  with pytest.raises(ValueError, match="1 <= Vt <= Vs"):
    losses.dino_loss(STUDENT[:1], TEACHER[:1], CENTER)
  with pytest.raises(ValueError, match="center must have shape"):
    losses.dino_loss(STUDENT, TEACHER, CENTER[:3])
  with pytest.raises(ValueError, match="teacher_temperature must be > 0"):
    losses.dino_loss(STUDENT, TEACHER, CENTER, teacher_temperature=0.0)


def test_teacher_temperature_warms_up_linearly():
  temps = [float(dino.teacher_temperature(s, 0.04, 0.07, 30)) for s in (0, 15, 30, 100)]
  np.testing.assert_allclose(temps, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)
  assert float(dino.teacher_temperature(5, 0.04, 0.07, 0)) == pytest.approx(0.07)


def test_dino_multi_crop_step_on_8_devices_equals_1(devices):
  state8, losses8 = _train("dino", 8)
  state1, losses1 = _train("dino", 1)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  for part in ("params", "opt_state", "rest"):  # rest: the EMA teacher, the centre, the clock
    _assert_close(state8[part], state1[part], part)
  center = [v for p, v in jax.tree_util.tree_leaves_with_path(state1["rest"]) if "center" in str(p)]
  assert center and float(np.abs(center[0]).max()) > 0  # the centre moved off its zero start


def test_dino_vit_step_on_8_devices_equals_1(devices, monkeypatch):
  """DINO with a ViT encoder (configs/dino_vit_digits.py: AdamW with the cosine weight decay, clipping,
  the last layer frozen for the first step) through the real jitted step: 3 steps on 8 devices equal
  3 on 1 with the same global batch (the head without BN is covered by the multi-crop test above)."""
  path = os.path.join(ROOT, "configs", "dino_vit_digits.py")
  # test_fsdp's _train runs any method's smoke config on n devices; hand it this one (a fresh copy per
  # call: its _setup edits the config it gets).
  monkeypatch.setattr(test_fsdp, "method_smoke_config",
                      lambda name: experiment.load_config_file(path, "smoke"))
  c = test_fsdp.method_smoke_config("dino")
  assert c.model.name.startswith("vit")
  assert c.method.freeze_last_layer_steps < test_fsdp.STEPS
  _, state8, losses8 = test_fsdp._train("dino", 8, False)
  _, state1, losses1 = test_fsdp._train("dino", 1, False)
  assert np.isfinite(losses1).all()
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  state8, state1 = jax.device_get(state8), jax.device_get(state1)
  for part in ("params", "opt_state", "rest"):  # rest: the EMA teacher, the centre, the clock
    _assert_close(state8[part], state1[part], part)


def test_short_run_learns_without_collapse(tmp_path):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "dino_digits.py"), "smoke")
  c.unlock()
  c.steps, c.batch_size = 24, 32
  c.train.log_every = 4
  experiment.train_and_evaluate(experiment.lock(c), str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  rows = [r for r in rows if "kl_teacher_student" in r]
  first, last = rows[:2], rows[-3:-1]  # the final row repeats the last logged step

  def mean(part, key):
    return np.mean([r[key] for r in part])

  # The loss falls and the student moves towards the teacher ...
  assert mean(last, "loss") < 0.95 * mean(first, "loss")
  assert mean(last, "kl_teacher_student") < 0.9 * mean(first, "kl_teacher_student")
  # ... without collapse: the teacher's output is neither uniform (entropy near log K) nor one
  # prototype for every image (entropy of its batch mean near 0), and the features keep their rank.
  assert mean(last, "teacher_entropy") < 0.8 * np.log(c.method.out_dim)
  assert mean(last, "teacher_batch_entropy") > 1.0
  assert mean(last, "rankme") > 4.0
  assert all(np.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize("field, value, match", [
    ("student_temp", 0.0, "method.student_temp=0.0: must be > 0"),
    ("center_momentum", 1.0, "method.center_momentum=1.0: the centre's EMA decay must be in"),
    ("teacher_temp_warmup_steps", -1, "method.teacher_temp_warmup_steps=-1: must be an integer"),
])
def test_bad_dino_settings_are_one_line(field, value, match):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "dino_digits.py"), "smoke")
  c.unlock()
  c.method[field] = value
  with pytest.raises(ValueError, match=match):
    experiment.validate(c, num_devices=8, check_data=False)


def test_weight_decay_follows_a_cosine_from_start_to_end():
  from jaxcl.train import optim
  c = optim.default_config()
  c.weight_decay, c.weight_decay_schedule, c.weight_decay_end = 0.04, "cosine", 0.4
  wd = optim.make_weight_decay(c, total_steps=100)
  np.testing.assert_allclose([float(wd(s)) for s in (0, 50, 100, 200)], [0.04, 0.22, 0.4, 0.4],
                             rtol=1e-5)
  assert jnp.ndim(wd(0)) == 0
