"""CPC: the loss against NumPy from the paper's eq. 4, 8 devices == 1 (value and gradients), the causal
transformer context (causal, length-free, the whole method 8 devices == 1), a short run on PLAID where
the loss falls and the prediction accuracy of the true future rises, the PLAID reader refusing files that
are not the archive's, and a catalog-style TFDS audio dataset trained by name."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

import tensorflow_datasets as tfds

import jaxcl.losses as L
from jaxcl import data, experiment, methods
from jaxcl.data.builders import plaid
from jaxcl.methods import cpc
from jaxcl.models import CausalTransformerContext

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


def tiny_cpc_config(**method) -> ml_collections.ConfigDict:
  """A CPC config small enough to compile in seconds: 2 conv layers, 4 samples per latent, windows of
  64 samples (14 latent steps) out of stored signals of 128."""
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(name="toy_signals"))
  c.model = cpc.sequence_model_config()
  c.model.update(widths=(8, 16), kernels=(4, 4), strides=(2, 2))
  c.method = cpc.default_config()
  c.method.update(dict(dict(crop_length=64, prediction_steps=3, context_dim=16), **method))
  return c


def test_causal_transformer_context_is_causal_and_length_free():
  graphdef, state = nnx.split(CausalTransformerContext(5, 16, depth=2, heads=4, rngs=nnx.Rngs(0)))
  ctx = jax.jit(lambda z: nnx.merge(graphdef, state)(z))
  z = np.random.default_rng(1).normal(size=(2, 9, 5)).astype(np.float32)
  steps = (0, 4, 8)
  # One call: z, then z with step t moved, for each t.
  moved = np.concatenate([z] + [z + 2.0 * (np.arange(9) == t)[None, :, None] for t in steps])
  out = np.asarray(ctx(moved)).reshape(1 + len(steps), 2, 9, 16)
  c = out[0]
  assert out.dtype == np.float32
  for t, m in zip(steps, out[1:]):
    np.testing.assert_array_equal(m[:, :t], c[:, :t])  # c_<t never sees z_t
    assert (np.abs(m - c)[:, t:].max(axis=-1) > 1e-3).all(), t  # every c_>=t does
  # Fixed positions, no length: a prefix gives the prefix's contexts.
  np.testing.assert_allclose(np.asarray(ctx(z[:, :5])), c[:, :5], rtol=1e-5, atol=1e-6)


def test_cpc_transformer_context_8_devices_equals_1(mesh):
  # One block: the blocks are per sequence, depth adds only compile time here.
  method = experiment.parts.create_method(tiny_cpc_config(context="transformer", context_depth=1),
                          image_shape=(128, 1), rngs=nnx.Rngs(0))
  assert isinstance(method.context, CausalTransformerContext)
  graphdef, params, rest = nnx.split(method, nnx.Param, ...)
  rng = np.random.default_rng(2)
  batch = dict(image=(3 * rng.normal(size=(16, 128, 1))).astype(np.float32),
               key=jax.random.split(jax.random.key(3), 16))

  def loss_fn(params, rest, batch, axis_name=None):
    return nnx.merge(graphdef, params, rest, copy=True).loss(batch, axis_name=axis_name)[0]

  want, want_grads = jax.jit(jax.value_and_grad(loss_fn))(params, rest, batch)
  sharded = jax.shard_map(lambda p, r, b: loss_fn(p, r, b, "data"), mesh=mesh,
                          in_specs=(P(), P(), P("data")), out_specs=P())
  with jax.set_mesh(mesh):
    got, got_grads = jax.jit(jax.value_and_grad(sharded))(params, rest,
                                                          jax.device_put(batch, P("data")))
  assert np.isfinite(float(want))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6)
  # Evaluation runs the context over the whole stored signal (30 latent steps, the window gives 14).
  features = jax.jit(lambda p, r, x: nnx.merge(graphdef, p, r, copy=True).features(x))(
      params, rest, batch["image"])
  assert features.shape == (16, 16) and np.isfinite(np.asarray(features)).all()


@pytest.mark.parametrize("method, match", [
    (dict(context="lstm"), r"method\.context='lstm': use one of \('gru', 'transformer'\)"),
    (dict(context="transformer", context_heads=3), r"method\.context_heads=3"),
], ids=["unknown", "heads"])
def test_bad_context_names_the_field(method, match):
  with pytest.raises(ValueError, match=match):
    experiment.parts.create_method(tiny_cpc_config(**method), image_shape=(128, 1), rngs=nnx.Rngs(0))


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


class _ToySpeech(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A catalog-style audio dataset: int16 clips of variable length, as speech_commands stores them
  (3 classes of tones of 300-500 samples). Stored as a ``Tensor`` feature: TFDS's ``Audio`` feature
  (which speech_commands uses) cannot even be constructed without TensorFlow."""

  name = "toy_speech"
  code_path = None
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(24, 0), "test": self._generate_examples(12, 1)}

  def _generate_examples(self, n, seed):  # pylint: disable=arguments-differ
    rng = np.random.default_rng(seed)
    for i in range(n):
      t = np.arange(rng.integers(300, 500))
      wave = np.sin(2 * np.pi * (i % 3 + 1) * 0.02 * t) + 0.1 * rng.normal(size=len(t))
      yield i, {"audio": (wave * 12000).astype(np.int16), "label": i % 3}


def test_catalog_audio_dataset_by_name_trains_cpc(tmp_path):
  _ToySpeech(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "cpc_plaid.py"), "smoke")
  c.unlock()
  c.data = experiment.data_config("toy_speech")
  c.data.update(data_dir=str(tmp_path), image_key="audio", sequence_length=512)
  c.steps, c.batch_size = 2, 8
  unknown_length = c.data.copy_and_resolve_references()
  unknown_length.sequence_length = None
  with pytest.raises(ValueError, match="set data.sequence_length"):
    data.info(unknown_length)
  info = data.info(c.data)
  assert info.image_shape == (512, 1) and info.num_classes == 3
  batch = next(data.train_iterator(c.data, seed=0, global_batch_size=8))
  x = batch["image"]
  assert x.shape == (8, 512, 1) and x.dtype == np.float32 and 0.3 < np.abs(x).max() <= 1.0
  assert (x[:, 500:] == 0).all()  # clips shorter than 512 samples are zero-padded
  result = experiment.train_and_evaluate(experiment.lock(c), str(tmp_path / "run"))
  assert result["step"] == 2 and np.isfinite(result["loss"])
