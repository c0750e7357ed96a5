"""I-JEPA: its block masks (counts, sizes, no context/target overlap, a context always, from the key), the
loss against NumPy from eq. 1, 8 devices == 1 for the loss (values and gradients) and the method's loss,
the ViT's key mask against the encoder run on the kept tokens, the predictor seeing only context and
target, the config errors, and a short real run where the loss falls without collapse."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tolerance import assert_close_to_scale, reordered_rtol

import jaxcl.losses as L
from jaxcl import augment, experiment, methods, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = jax.P


# ---------------------------------------------------------------------------------------------------
# Masks.

PAPER = dict(num_targets=4, target_scale=(0.15, 0.2), target_aspect_ratio=(0.75, 1.5),
             context_scale=(0.85, 1.0), context_aspect_ratio=(1.0, 1.0))
# A non-square grid and a small context block: the context often falls inside the targets, so the
# fallbacks run too.
ODD = dict(num_targets=3, target_scale=(0.1, 0.3), target_aspect_ratio=(0.5, 2.0),
           context_scale=(0.02, 0.1), context_aspect_ratio=(0.5, 2.0))


def _rectangle(mask):
  """(h, w) of a boolean [gh, gw] mask that is one filled rectangle (else fails)."""
  rows, cols = np.nonzero(mask)
  h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
  assert mask.sum() == h * w, "a block is not a filled rectangle"
  return h, w


def _side_bounds(scale, ratio, n, side, sign):
  """The smallest and largest side I-JEPA's rounding gives (``sign`` +1: height, -1: width)."""
  sides = [round(np.sqrt(s * n * r ** sign)) for s in scale for r in ratio]
  return max(1, min(sides)), min(side, max(sides))


@pytest.mark.parametrize("grid, kw", [((8, 8), PAPER), ((5, 7), ODD)], ids=["paper-8x8", "odd-5x7"])
def test_masks_blocks_sizes_and_no_overlap(grid, kw):
  gh, gw = grid
  n, m = gh * gw, kw["num_targets"]
  draw = jax.jit(jax.vmap(functools.partial(augment.jepa_masks, grid=grid, **kw)))
  keys = jax.random.split(jax.random.key(0), 300)
  context, targets = map(np.asarray, draw(keys))
  assert context.shape == (300, n) and targets.shape == (300, m, n)
  assert context.dtype == bool and targets.dtype == bool
  assert context.sum(-1).min() >= 1  # never an empty context
  assert not (context[:, None] & targets).any()  # the context never shows a target token
  (h_lo, h_hi), (w_lo, w_hi) = (_side_bounds(kw["target_scale"], kw["target_aspect_ratio"], n, gh, 1),
                                _side_bounds(kw["target_scale"], kw["target_aspect_ratio"], n, gw, -1))
  lo, hi = kw["target_scale"]
  for i in range(300):
    for block in targets[i]:
      h, w = _rectangle(block.reshape(gh, gw))
      assert h_lo <= h <= h_hi and w_lo <= w <= w_hi, (h, w)
      # h = round(sqrt(s N r)), w = round(sqrt(s N / r)): |h w - s N| <= (h + w) / 2 + 1/4.
      assert lo * n - (h + w) / 2 - 0.25 <= h * w <= hi * n + (h + w) / 2 + 0.25, (h, w)
  if kw is PAPER:
    # The context block (at least round(sqrt(0.85 * 64)) = 7 on a side) minus the targets.
    assert (context | targets.any(1)).sum(-1).min() >= 7 * 7
    assert 0.3 < context.mean() < 0.7 and 0.3 < targets.any(1).mean() < 0.7
  # Deterministic from the key; different keys, different masks.
  again = draw(keys)
  np.testing.assert_array_equal(again[0], context)
  np.testing.assert_array_equal(again[1], targets)
  assert len({c.tobytes() + t.tobytes() for c, t in zip(context, targets)}) > 290


def test_masks_keep_a_context_when_the_targets_cover_the_grid():
  draw = jax.jit(functools.partial(augment.jepa_masks, grid=(4, 4), num_targets=2,
                                   target_scale=(1.0, 1.0), target_aspect_ratio=(1.0, 1.0)))
  context, targets = draw(jax.random.key(1))
  assert int(context.sum()) == 1 and not bool((context & targets).any())
  np.testing.assert_array_equal(targets.sum(-1), [15, 15])
  with pytest.raises(ValueError, match="scale"):
    augment.jepa_masks(jax.random.key(0), (8, 8), target_scale=(0.2, 1.5))
  with pytest.raises(ValueError, match="num_targets"):
    augment.jepa_masks(jax.random.key(0), (8, 8), num_targets=0)


# ---------------------------------------------------------------------------------------------------
# The loss.

_rng = np.random.default_rng(0)
B, M, N, D = 16, 4, 12, 8  # 2 rows per device
PRED = _rng.normal(size=(B, M, N, D)).astype(np.float32)
TARGET = _rng.normal(size=(B, N, D)).astype(np.float32)
MASKS = _rng.uniform(size=(B, M, N)) < 0.3
MASKS[0, 1] = False  # a block without tokens counts 0


def jepa_reference(pred, target, masks):
  """Eq. 1: mean over (example, block) of the mean over the block's tokens of ||p - t||^2 / D."""
  per_block = []
  for i in range(pred.shape[0]):
    for m in range(pred.shape[1]):
      idx = np.nonzero(masks[i, m])[0]
      diff = pred[i, m, idx].astype(np.float64) - target[i, idx].astype(np.float64)
      per_block.append(np.mean(np.sum(diff ** 2, axis=-1) / pred.shape[-1]) if len(idx) else 0.0)
  return np.mean(per_block)


def test_jepa_loss_matches_numpy():
  np.testing.assert_allclose(L.jepa_loss(PRED, TARGET, MASKS), jepa_reference(PRED, TARGET, MASKS),
                             rtol=1e-6)
  # Predicting the target exactly on the blocks (anything elsewhere) gives 0.
  exact = np.where(MASKS[..., None], TARGET[:, None], 5.0)
  assert float(L.jepa_loss(exact, TARGET, MASKS)) == 0.0
  with pytest.raises(ValueError, match=r"\[b, M, N, D\]"):
    L.jepa_loss(PRED[0], TARGET, MASKS)
  with pytest.raises(ValueError, match="boolean"):
    L.jepa_loss(PRED, TARGET, MASKS.astype(np.int32))


def test_jepa_loss_sharded_equals_single_device(mesh):
  sharded = jax.shard_map(functools.partial(L.jepa_loss, axis_name="data"), mesh=mesh,
                          in_specs=P("data"), out_specs=P())
  with jax.set_mesh(mesh):
    args = [jax.device_put(x, P("data")) for x in (PRED, TARGET, MASKS)]
    got, got_grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(*args)
  want, want_grads = jax.jit(jax.value_and_grad(L.jepa_loss, argnums=(0, 1)))(PRED, TARGET, MASKS)
  rtol = reordered_rtol(B * M * N * D, sums=2)
  assert_close_to_scale(got, want, rtol=rtol)
  for g, w in zip(got_grads, want_grads):
    assert np.abs(w).max() > 0
    assert_close_to_scale(g, w, rtol=rtol)


# ---------------------------------------------------------------------------------------------------
# The networks.


def _built(make):
  """``make()``'s module initialised in one unoptimised jit, as the trainer does (eager init compiles
  every initializer op on its own: 3x slower here)."""
  graphdef, _ = nnx.split(nnx.eval_shape(make))
  init = jax.jit(lambda: nnx.split(make())[1],
                 compiler_options={"xla_backend_optimization_level": 0})
  return nnx.merge(graphdef, init())


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_vit_key_mask_equals_the_encoder_on_the_kept_tokens(pool):
  graphdef, state = nnx.split(_built(lambda: models.ViT(
      in_channels=1, image_size=16, patch_size=4, width=16, depth=2, heads=2, pool=pool,
      rngs=nnx.Rngs(0))))
  x = jax.random.uniform(jax.random.key(0), (3, 16, 16, 1))
  # 7 of the 16 patches kept in each image (equal counts: one compile for the reference).
  idx = np.sort(np.stack([np.random.default_rng(i).permutation(16)[:7] for i in range(3)]), axis=1)
  keep = np.zeros((3, 16), bool)
  np.put_along_axis(keep, idx, True, axis=1)

  @jax.jit
  def masked_and_kept(state, x, keep, idx):
    vit = nnx.merge(graphdef, state)
    # The same encoder run on each image's kept patches alone, with their position embeddings.
    pos = vit.pos_embed[...]
    h = vit.patch_embed(x).reshape(3, 16, 16) + pos[:, vit.num_prefix:]
    h = jnp.take_along_axis(h, idx[..., None], axis=1)
    if pool == "cls":
      h = jnp.concatenate([jnp.broadcast_to(vit.cls[...] + pos[:, :1], (3, 1, 16)), h], axis=1)
    for blk in vit.blocks:
      h = blk(h)
    return (vit.tokens(x, keep=keep), vit.norm(h)[:, vit.num_prefix:], vit.tokens(x), vit(x))

  got, want, unmasked, pooled = map(np.asarray, masked_and_kept(state, x, keep, idx))
  assert got.shape == (3, 16, 16)
  np.testing.assert_allclose(np.take_along_axis(got, idx[..., None], axis=1), want, rtol=1e-5,
                             atol=1e-5)
  assert not np.allclose(got[~keep], unmasked[~keep], atol=1e-3)  # the mask did something
  if pool == "mean":  # __call__ is the same forward pass, pooled
    np.testing.assert_allclose(pooled, unmasked.mean(1), rtol=1e-5, atol=1e-6)


def test_predictor_sees_only_context_and_its_target_block():
  pos = models.sincos_pos_embed_2d(16, (4, 5))
  assert pos.shape == (20, 16) and np.abs(pos).max() <= 1.0
  assert len({row.tobytes() for row in pos}) == 20  # every patch its own position
  graphdef, state = nnx.split(_built(lambda: models.JEPAPredictor(8, width=16, depth=2, heads=2,
                                                                   rngs=nnx.Rngs(0))))
  predict = jax.jit(lambda t, c, m: nnx.merge(graphdef, state)(t, c, m, grid=(4, 5)))
  tokens = jax.random.normal(jax.random.key(0), (2, 20, 8))
  context, targets = jax.jit(jax.vmap(functools.partial(augment.jepa_masks, grid=(4, 5),
                                                         num_targets=3)))(
      jax.random.split(jax.random.key(1), 2))
  out = predict(tokens, context, targets)
  assert out.shape == (2, 3, 20, 8) and out.dtype == jnp.float32
  at_targets = lambda y: np.where(targets[..., None], y, 0.0)  # noqa: E731
  # Tokens outside the context change nothing at a target; a context token does.
  noise = jax.random.normal(jax.random.key(2), tokens.shape)
  moved = predict(jnp.where(context[..., None], tokens, noise), context, targets)
  np.testing.assert_allclose(at_targets(moved), at_targets(out), rtol=1e-5, atol=1e-5)
  moved = predict(jnp.where(context[..., None], noise, tokens), context, targets)
  assert not np.allclose(at_targets(moved), at_targets(out))


# ---------------------------------------------------------------------------------------------------
# The method.


def _smoke_config(**changes):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "ijepa_digits.py"), "smoke")
  c.unlock()
  for dotted, value in changes.items():
    part, field = dotted.split(".")
    c[part][field] = value
  return c


def test_config_errors_name_the_field():
  for changes, field in [({"model.name": "small_cnn"}, "model.name"),
                         ({"model.pool": "cls"}, "model.pool"),
                         ({"model.patch_size": 16}, "model.patch_size"),
                         ({"augment.num_local": 2}, "augment.num_local"),
                         ({"method.target_scale": (0.3, 0.2)}, "method.target_scale"),
                         ({"method.predictor_width": 18}, "method.predictor_width")]:
    with pytest.raises(ValueError, match=rf"^config\.{field}="):
      experiment.validate(_smoke_config(**changes), num_devices=8, check_data=False)
  c = _smoke_config(**{"model.name": "small_cnn"})
  c.model = models.default_config("small_cnn")
  with pytest.raises(ValueError, match="needs a ViT"):
    experiment.parts.create_method(c, image_shape=(32, 32, 1), num_classes=10, class_names=list("0123456789"),
                   rngs=nnx.Rngs(0))


def test_method_loss_on_8_devices_equals_1_and_ema(mesh):
  c = _smoke_config()
  method = _built(lambda: experiment.parts.create_method(c, image_shape=(32, 32, 1), num_classes=10,
                                         class_names=list("0123456789"), rngs=nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(method, nnx.Param, ...)
  rng = np.random.default_rng(1)
  batch = dict(image=rng.integers(0, 256, (16, 32, 32, 1), dtype=np.uint8),
               key=jax.random.split(jax.random.key(3), 16))

  def loss_fn(params, rest, batch, axis_name=None):
    return nnx.merge(graphdef, params, rest, copy=True).loss(batch, axis_name=axis_name)

  want, want_metrics = jax.jit(loss_fn)(params, rest, batch)
  sharded = jax.shard_map(functools.partial(loss_fn, axis_name="data"),
                          in_specs=(P(), P(), P("data")), out_specs=P())
  with jax.set_mesh(mesh):
    got, got_metrics = jax.jit(sharded)(params, rest, jax.device_put(batch, P("data")))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert set(got_metrics) == {"rankme", "embedding_std", "target_token_std", "context_fraction",
                              "target_fraction"}
  for name in want_metrics:
    np.testing.assert_allclose(got_metrics[name], want_metrics[name], rtol=1e-4, err_msg=name)
  # The target encoder is not trained: its weights are Target variables, not parameters.
  assert {path[0] for path, _ in nnx.to_flat_state(params)} == {"encoder", "predictor"}
  # after_step: target <- tau target + (1 - tau) online, tau linear from method.momentum to 1.
  kernel = method.encoder.patch_embed.kernel
  kernel[...] = kernel[...] + 1.0
  online, before = kernel[...], method.target_encoder.patch_embed.kernel[...]
  images = batch["image"][:2].astype(np.float32) / 255

  @jax.jit
  def ema_then_features(state):
    m = nnx.merge(*state, copy=True)
    m.after_step(step=jnp.asarray(5), total_steps=10)
    return (m.target_encoder.patch_embed.kernel[...], m.features(images),
            m.target_encoder.tokens(images).mean(1))

  after, features, pooled_tokens = ema_then_features(nnx.split(method))
  tau = c.method.momentum + (1 - c.method.momentum) * 0.5
  np.testing.assert_allclose(after, tau * before + (1 - tau) * online, rtol=1e-5, atol=1e-7)
  # Evaluation features are the target encoder's mean-pooled tokens.
  np.testing.assert_allclose(features, pooled_tokens, rtol=1e-5, atol=1e-6)
  assert method.evaluated_encoder() is method.target_encoder


def test_short_run_loss_falls_without_collapse(tmp_path):
  c = _smoke_config()
  c.steps, c.batch_size = 30, 32
  c.optim.lr = 2e-3
  c.method.momentum = 0.99
  result = experiment.train_and_evaluate(experiment.lock(c), str(tmp_path))
  assert result["step"] == 30
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [r for r in map(json.loads, f) if "loss" in r]
  first, last = lines[:5], lines[-5:]
  mean = lambda rows, key: float(np.mean([r[key] for r in rows]))  # noqa: E731
  assert mean(last, "loss") < 0.7 * mean(first, "loss"), (mean(first, "loss"), mean(last, "loss"))
  # Not collapsed: the target tokens still differ across patches and images (their per-feature std
  # over the batch and positions), and the pooled features of the batch still span as many
  # dimensions (RankMe); a collapse drives both towards 0 and 1.
  for key in ("target_token_std", "rankme"):
    assert mean(last, key) > 0.75 * mean(first, key), (key, mean(first, key), mean(last, key))
