"""A 2-D convolution whose gradients are themselves plain NHWC convolutions (``conv_general_dilated``).

``jax.lax.conv_general_dilated``'s own transpose rules express the kernel gradient as a convolution
with the batch and channel dimensions swapped, and the input gradient with the kernel's in/out
dimensions swapped. Outside loops XLA:CPU lays those operands out for its fast convolution; inside a
``lax.scan``/``lax.map`` body (gradient caching's chunk loops) it does not, and runs them 10-60x
slower (measured on XLA:CPU, jaxlib 0.10: a 64x32x32x32 kernel gradient, 0.04 s in straight-line code,
2.5 s in a loop). Here both gradients are written as convolutions whose operands are transposed
explicitly into NHWC/HWIO, which every backend runs on its fast path, in or out of loops. Values and
gradients equal ``lax.conv_general_dilated``'s (tested), and any case this does not cover (dilations,
feature groups, other layouts) falls back to it.

Pass ``conv_general_dilated=conv_general_dilated`` to ``nnx.Conv``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, strides, padding, lhs_dilation=(1, 1), rhs_dilation=(1, 1), precision=None):
  return jax.lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dilation,
                                      rhs_dilation=rhs_dilation, dimension_numbers=_DN,
                                      precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x: jax.Array, w: jax.Array, strides: tuple[int, int],
           padding: tuple[tuple[int, int], tuple[int, int]], precision: Any = None) -> jax.Array:
  """``lax.conv_general_dilated`` for NHWC inputs, HWIO kernels and explicit padding pairs."""
  return _conv(x, w, strides, padding, precision=precision)


def _conv2d_fwd(x, w, strides, padding, precision):
  return _conv(x, w, strides, padding, precision=precision), (x, w)


def _conv2d_bwd(strides, padding, precision, residuals, dy):
  x, w = residuals
  (kh, kw), (h, wd) = w.shape[:2], x.shape[1:3]
  oh, ow = dy.shape[1:3]
  # Input gradient: the output gradient dilated by the stride, convolved with the kernel rotated by
  # 180 degrees and its in/out channels swapped, padded so the result has the input's size.
  w_t = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))
  dx_pad = []
  for k, n, o, s, (lo, _) in zip((kh, kw), (h, wd), (oh, ow), strides, padding):
    before = k - 1 - lo
    dx_pad.append((before, n + k - 1 - ((o - 1) * s + 1) - before))
  dx = _conv(dy, w_t, (1, 1), dx_pad, lhs_dilation=strides, precision=precision)
  # Kernel gradient: batch and channels swapped (x -> [Cin, H, W, N], dy -> [oh, ow, N, Cout]), the
  # output gradient dilated by the stride; the high padding drops the rows a stride never reaches.
  dw_pad = []
  for k, n, s, (lo, hi) in zip((kh, kw), (h, wd), strides, padding):
    dw_pad.append((lo, hi - (n + lo + hi - k) % s))
  dw = _conv(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), dw_pad,
             rhs_dilation=strides, precision=precision)
  return dx.astype(x.dtype), jnp.transpose(dw, (1, 2, 0, 3)).astype(w.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         precision: Any = None, **kwargs) -> jax.Array:
  """Drop-in for ``jax.lax.conv_general_dilated`` (the form ``nnx.Conv`` calls) with loop-fast gradients.

  2-D NHWC/HWIO convolutions without dilation or feature groups go through ``conv2d``; anything else
  is passed to ``jax.lax.conv_general_dilated`` unchanged.
  """
  plain = functools.partial(jax.lax.conv_general_dilated, lhs, rhs, window_strides, padding,
                            lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                            dimension_numbers=dimension_numbers,
                            feature_group_count=feature_group_count, precision=precision, **kwargs)
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN)
  simple = (lhs.ndim == 4 and feature_group_count == 1 and not kwargs.get("preferred_element_type")
            and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
            and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
            and kwargs.get("out_sharding") is None)
  if not simple:
    return plain()
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  lhs, rhs = _same_variance(lhs, rhs)
  return conv2d(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), precision)


def _same_variance(lhs: jax.Array, rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Inside ``shard_map``: each operand plus an exact zero that varies like the other one.

  A custom VJP must return cotangents typed like its inputs, and a device-varying activation meets a
  replicated kernel here. Adding the zero makes JAX cast the kernel to varying before ``conv2d``, and
  that cast's transpose sums the kernel gradient over devices, as for ``lax``'s own convolution.
  The zero is the sum of an empty slice of the channel axis, never a sharded one (exact, whatever
  ``x`` holds, and valid eagerly on an explicitly sharded array); outside ``shard_map`` nothing changes.
  """
  def zero_like(x, dtype):
    return jnp.sum(jax.lax.slice_in_dim(x, 0, 0, axis=x.ndim - 1)).astype(dtype)
  return lhs + zero_like(rhs, lhs.dtype), rhs + zero_like(lhs, rhs.dtype)
