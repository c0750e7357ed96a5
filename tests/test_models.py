"""Encoders, heads and synchronised BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcl import models

P = jax.P


def _abstract(name, in_channels=3, **overrides):
  cfg = models.default_config(name)
  cfg.update(overrides)
  return nnx.eval_shape(lambda: models.create_encoder(cfg, in_channels=in_channels, rngs=nnx.Rngs(0)))


# Published parameter counts without the classifier: torchvision's resnet18/34/50 minus their fc
# layers (513,000 / 513,000 / 2,049,000 parameters), timm's vit_{tiny,small,base}_patch16_224 minus
# their 1000-way heads.
@pytest.mark.parametrize("name, params, out_dim", [
    ("resnet18", 11_689_512 - 513_000, 512),
    ("resnet34", 21_797_672 - 513_000, 512),
    ("resnet50", 25_557_032 - 2_049_000, 2048),
    ("vit_tiny", 5_717_416 - 193_000, 192),
    ("vit_small", 22_050_664 - 385_000, 384),
    ("vit_base", 86_567_656 - 769_000, 768),
])
def test_parameter_counts_match_published(name, params, out_dim):
  enc = _abstract(name)
  assert models.count_params(enc) == params
  assert enc.out_dim == out_dim


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_output_shape_and_feature_map_strides(name):
  enc = _abstract(name)
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  graphdef, state = nnx.split(enc)

  def forward(state, x):
    return nnx.merge(graphdef, state, copy=True)(x, train=False)

  out = jax.eval_shape(forward, state, x)
  assert out.shape == (2, enc.out_dim) and out.dtype == jnp.float32
  # The published network has stride 32 overall: conv 7x7/2, max-pool /2, then three /2 stages.
  strides = [max(blk.conv1.strides[0], blk.conv2.strides[0]) for blk in enc.blocks]
  assert enc.conv1.strides == (2, 2) and enc.conv1.kernel.shape[:2] == (7, 7)
  assert 2 * 2 * int(np.prod(strides)) == 32


def test_resnet_cifar_stem_and_width_multiplier():
  cifar = _abstract("resnet18", stem="cifar")
  assert cifar.conv1.kernel.shape == (3, 3, 3, 64) and cifar.conv1.strides == (1, 1)
  # Only the stem kernel differs: 7x7 -> 3x3 over 3 input and 64 output channels.
  assert models.count_params(cifar) == 11_176_512 - (49 - 9) * 3 * 64
  wide = _abstract("resnet50", width_multiplier=2.0)
  assert wide.out_dim == 4096
  with pytest.raises(ValueError, match="model.stem"):
    _abstract("resnet18", stem="tiny")


def test_unknown_encoder_lists_valid_names():
  with pytest.raises(ValueError, match="resnet50"):
    models.default_config("resnet51")


def _bn_reference(x, scale, bias, eps=1e-5):
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axes)
  var = x.var(axes)
  return (x - mean) / np.sqrt(var + eps) * scale + bias, mean, var


def test_batchnorm_matches_numpy_and_running_stats():
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, (16, 4, 4, 5)).astype(np.float32)
  bn = models.BatchNorm(5, momentum=0.9)
  bn.scale[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
  bn.bias[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
  y = bn(jnp.asarray(x), train=True)
  ref, mean, var = _bn_reference(x, np.asarray(bn.scale[...]), np.asarray(bn.bias[...]))
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(bn.mean[...], 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * var, rtol=1e-5)
  # Eval mode uses the running statistics.
  y_eval = bn(jnp.asarray(x), train=False)
  ref_eval = ((x - np.asarray(bn.mean[...])) / np.sqrt(np.asarray(bn.var[...]) + 1e-5)
              * np.asarray(bn.scale[...]) + np.asarray(bn.bias[...]))
  np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-4, atol=1e-4)


def test_sync_batchnorm_on_8_devices_equals_global_batch(mesh):
  rng = np.random.default_rng(1)
  # Every device gets a different distribution, so local statistics would differ from global ones.
  x = (rng.normal(size=(16, 3, 3, 4)) * np.arange(1, 17)[:, None, None, None]).astype(np.float32)
  bn = models.BatchNorm(4)
  bn.scale[...] = jnp.asarray([1.0, 2.0, 0.5, -1.0])
  graphdef, params, stats = nnx.split(bn, nnx.Param, nnx.BatchStat)

  # A loss that weights rows differently, so the gradient depends on the normalisation.
  w = np.linspace(-1.0, 1.0, x.size, dtype=np.float32).reshape(x.shape)

  def loss(params, stats, x, w, axis_name):
    m = nnx.merge(graphdef, params, stats, copy=True)
    y = m(x, train=True, axis_name=axis_name)
    local = jnp.sum(jnp.sin(y) * w)
    total = local if axis_name is None else jax.lax.psum(local, axis_name)
    return total, (y, nnx.state(m, nnx.BatchStat))

  grad_fn = jax.value_and_grad(loss, argnums=(0, 2), has_aux=True)
  (l_ref, (y_ref, s_ref)), (gp_ref, gx_ref) = jax.jit(grad_fn, static_argnums=4)(
      params, stats, x, w, None)

  def per_device(params, stats, x, w):
    (l, (y, s)), (gp, gx) = grad_fn(params, stats, x, w, "data")
    return l, y, s, gp, gx

  with jax.set_mesh(mesh):
    sharded = jax.jit(jax.shard_map(per_device, in_specs=(P(), P(), P("data"), P("data")),
                                    out_specs=(P(), P("data"), P(), P(), P("data"))))
    xs = jax.device_put(x, P("data"))
    l, y, s, gp, gx = sharded(params, stats, xs, jax.device_put(w, P("data")))
  np.testing.assert_allclose(l, l_ref, rtol=1e-5)
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gp_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  ref, _, _ = _bn_reference(x, np.asarray(bn.scale[...]), 0.0)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
  # Without synchronisation each device normalises by its own rows: a different output.
  _, local_mean, _ = _bn_reference(x[:2], 1.0, 0.0)
  assert not np.allclose(local_mean, x.mean((0, 1, 2)), atol=1e-2)


def test_small_cnn_bf16_compute_with_f32_params():
  cfg = models.default_config("small_cnn")
  cfg.dtype = "bfloat16"
  enc = models.create_encoder(cfg, in_channels=1, rngs=nnx.Rngs(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(enc, nnx.Param)))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 16, 16, 1)), jnp.float32)
  assert enc.convs[0](x).dtype == jnp.bfloat16
  assert enc.convs[0](x).shape == (4, 8, 8, 32)  # stride 2 from the first layer
  y = enc(x, train=True)
  assert y.shape == (4, 128) and y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
  assert models.count_params(enc) == 9 * 32 + 9 * 32 * 64 + 9 * 64 * 128 + 2 * (32 + 64 + 128)


def test_small_cnn_flatten_keeps_the_feature_map():
  cfg = models.default_config("small_cnn")
  cfg.pool = "flatten"
  enc = models.create_encoder(cfg, in_channels=1, rngs=nnx.Rngs(0), image_size=20)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 20, 20, 1)), jnp.float32)
  y = enc(x, train=True)
  assert enc.out_dim == 128 * 3 * 3 and y.shape == (3, enc.out_dim)  # 20 -> 10 -> 5 -> 3 px
  # The same network with the mean pool returns the mean of those 3 x 3 positions.
  enc.pool = "mean"
  np.testing.assert_allclose(enc(x, train=True), y.reshape(3, 3, 3, 128).mean((1, 2)), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="needs the image size"):
    models.create_encoder(cfg, in_channels=1, rngs=nnx.Rngs(0))
  cfg.pool = "max"
  with pytest.raises(ValueError, match="model.pool must be one of"):
    models.create_encoder(cfg, in_channels=1, rngs=nnx.Rngs(0), image_size=20)


def test_vit_pooling_and_position_interpolation():
  enc = models.ViT(in_channels=3, image_size=16, patch_size=4, width=16, depth=1, heads=2,
                   pool="mean", rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
  assert enc(x).shape == (2, 16)
  assert enc.pos_embed[...].shape == (1, 16, 16)
  # A bigger image gets a bilinearly resized position grid rather than an error.
  assert enc(jnp.ones((2, 24, 24, 3))).shape == (2, 16)
  cls = models.ViT(in_channels=3, image_size=16, patch_size=4, width=16, depth=1, heads=2,
                   pool="cls", rngs=nnx.Rngs(0))
  assert cls.pos_embed[...].shape == (1, 17, 16) and cls(x).shape == (2, 16)


@pytest.mark.parametrize("causal, pool", [(True, "eos"), (False, "mean"), (False, "eos")])
def test_text_transformer_ignores_padding(causal, pool):
  text = models.TextTransformer(vocab_size=10, max_len=8, width=16, depth=1, heads=2, causal=causal,
                                pool=pool, rngs=nnx.Rngs(0))
  short = jnp.asarray([[4, 5, 1, 0, 0], [6, 1, 0, 0, 0]])
  padded = jnp.asarray([[4, 5, 1, 0, 0, 0, 0, 0], [6, 1, 0, 0, 0, 0, 0, 0]])
  a, b = text(short), text(padded)
  assert a.shape == (2, 16)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # And the content does matter.
  assert not np.allclose(text(jnp.asarray([[4, 7, 1, 0, 0]])), a[:1], atol=1e-4)


def test_text_transformer_causal_eos_sees_all_tokens_but_not_later_ones():
  text = models.TextTransformer(vocab_size=10, max_len=6, width=16, depth=1, heads=2, causal=True,
                                rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(text)

  def per_token(tokens):
    m = nnx.merge(graphdef, state, copy=True)
    x = m.embed(tokens) + m.pos_embed[...][:, :tokens.shape[1]]
    for blk in m.blocks:
      x = blk(x, is_causal=True)
    return x

  t1 = jnp.asarray([[4, 5, 6, 1]])
  t2 = jnp.asarray([[4, 5, 7, 1]])
  h1, h2 = per_token(t1), per_token(t2)
  np.testing.assert_allclose(h1[:, :2], h2[:, :2], rtol=1e-6)  # earlier tokens unaffected
  assert not np.allclose(h1[:, 3], h2[:, 3])  # the EOS token sees the change


def test_projection_and_prediction_heads():
  head = models.ProjectionHead(8, hidden_dim=16, out_dim=4, num_layers=3, last_bn=True,
                               last_bn_affine=False, rngs=nnx.Rngs(0))
  y = head(jnp.ones((5, 8)) + jnp.arange(5.0)[:, None], train=True)
  assert y.shape == (5, 4)
  # With a non-affine last BN the outputs are standardised per dimension over the batch.
  np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
  assert head.norms[2].scale is None and head.norms[2].bias is None
  # Linear layers followed by BN have no bias; 8*16 + 16*16 + 16*4 weights, 2 BNs of 16 (scale, bias).
  assert models.count_params(head) == 8 * 16 + 16 * 16 + 16 * 4 + 2 * 2 * 16
  pred = models.PredictionHead(4, hidden_dim=6, out_dim=4, rngs=nnx.Rngs(0))
  assert pred.norms[1] is None and pred.linears[1].bias is not None
  assert pred(y, train=False).shape == (5, 4)
