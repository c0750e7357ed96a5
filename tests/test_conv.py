"""jaxcl.models.conv: the convolution whose gradients are plain NHWC convolutions equals lax's own, in
value and both gradients, for every stride/padding/kernel the encoders use, inside loops and inside
shard_map (where the kernel gradient must come out summed over devices)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl.models.conv import conv_general_dilated

DN = ("NHWC", "HWIO", "NHWC")
CASES = [  # (H, W, Cin, Cout, kernel, stride, padding)
    (9, 9, 3, 5, 3, 1, "SAME"),
    (9, 8, 3, 5, 3, 2, "SAME"),             # odd/even sides with stride 2 (ResNet downsampling)
    (10, 10, 3, 4, 3, 2, ((1, 1), (1, 1))),  # SmallCNN's explicit padding
    (32, 32, 3, 8, 4, 4, "VALID"),           # ViT patch embedding
    (11, 11, 2, 3, 7, 2, ((3, 3), (3, 3))),  # ImageNet stem
    (8, 8, 4, 6, 1, 2, "VALID"),             # 1x1 projection shortcut
    (7, 7, 2, 2, 3, 3, "SAME"),              # stride that does not divide the side
]


def _loss(conv, x, w, stride, padding):
  y = conv(x, w, (stride, stride), padding, dimension_numbers=DN)
  return jnp.sum(jnp.sin(y)), y


def _value_and_grads(conv, x, w, stride, padding):
  (_, y), grads = jax.value_and_grad(
      functools.partial(_loss, conv, stride=stride, padding=padding), argnums=(0, 1),
      has_aux=True)(x, w)
  return (y, *grads)


def _inputs(h, w, cin, cout, k, n=2, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, h, w, cin)), jnp.float32),
          jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32))


@pytest.mark.parametrize("h,w,cin,cout,k,stride,padding", CASES)
def test_value_and_gradients_equal_lax(h, w, cin, cout, k, stride, padding):
  x, kernel = _inputs(h, w, cin, cout, k)
  want = _value_and_grads(jax.lax.conv_general_dilated, x, kernel, stride, padding)
  got = _value_and_grads(conv_general_dilated, x, kernel, stride, padding)
  for name, g, e in zip(("value", "input grad", "kernel grad"), got, want):
    assert g.shape == e.shape, name
    # The same products summed by the same kind of convolution: equal to float32 rounding.
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(e))), err_msg=name)


def test_gradients_inside_a_loop_equal_straight_line_code():
  x, kernel = _inputs(8, 8, 3, 4, 3, n=8)
  grad = jax.grad(lambda w, c: _loss(conv_general_dilated, c, w, 2, "SAME")[0])
  chunks = x.reshape(4, 2, *x.shape[1:])
  looped = jax.jit(lambda w: jax.lax.map(lambda c: grad(w, c), chunks).sum(0))(kernel)
  straight = sum(grad(kernel, chunks[i]) for i in range(4))
  np.testing.assert_allclose(looped, straight, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(straight))))


def test_kernel_gradient_is_summed_over_devices_inside_shard_map(mesh):
  x, kernel = _inputs(8, 8, 3, 4, 3, n=16)

  def loss(w, x, conv, axis_name=None):
    value = _loss(conv, x, w, 1, "SAME")[0]
    return value if axis_name is None else jax.lax.psum(value, axis_name)

  want = jax.grad(loss)(kernel, x, jax.lax.conv_general_dilated)
  sharded = jax.shard_map(
      lambda w, x: jax.grad(loss)(w, x, conv_general_dilated, "data"), mesh=mesh,
      in_specs=(P(), P("data")), out_specs=P())
  x_sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, P("data")))
  got = jax.jit(sharded)(kernel, x_sharded)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(want))))


def test_unsupported_forms_fall_back_to_lax():
  x, kernel = _inputs(8, 8, 4, 4, 3)
  grouped = jnp.ones((3, 3, 2, 4))
  for args, kwargs in [((x, grouped, (1, 1), "SAME"), dict(feature_group_count=2)),
                       ((x, kernel, (1, 1), "SAME"), dict(rhs_dilation=(2, 2)))]:
    got = conv_general_dilated(*args, dimension_numbers=DN, **kwargs)
    want = jax.lax.conv_general_dilated(*args, dimension_numbers=DN, **kwargs)
    np.testing.assert_array_equal(got, want)
