"""Single-image geometric and filtering ops: flip, Gaussian blur, solarize, and ``random_apply``.

Every op has the signature ``op(key, image, *, params) -> image`` with ``image`` a float [H, W, C]
array in [0, 1]; ops that need no randomness take the key anyway so that any op can be passed to
``random_apply`` or composed in a recipe the same way. Hyperparameters are static Python numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Op = Callable[[jax.Array, jax.Array], jax.Array]


def random_flip(key: jax.Array, image: jax.Array, *, p: float = 0.5) -> jax.Array:
  """Flips the image left-right with probability ``p``.

  Args:
    key: PRNG key.
    image: image [H, W, C].
    p: flip probability.

  Returns:
    image of the same shape and dtype.
  """
  if p <= 0:
    return image
  return jnp.where(jax.random.bernoulli(key, p), image[:, ::-1, :], image)


def _blur_matrix(n: int, sigma: jax.Array, radius: int) -> jax.Array:
  """[n, n] matrix of a 1-D Gaussian blur with the reflect padding folded in.

  Output ``o`` takes ``g(p - o)`` from padded position ``p`` in ``[o - radius, o + radius]``; a
  padded position reflects to source ``-p`` (left) or ``2 (n - 1) - p`` (right). So source ``i``
  gets the direct tap ``g(i - o)`` plus its two mirror images, which is exact while ``radius < n``.
  """
  o = jnp.arange(n, dtype=jnp.float32)[:, None]
  i = jnp.arange(n, dtype=jnp.float32)[None, :]

  def g(d):
    return jnp.where(jnp.abs(d) <= radius, jnp.exp(-0.5 * jnp.square(d / sigma)), 0.0)

  m = g(i - o) + jnp.where(i > 0, g(-i - o), 0.0) + jnp.where(i < n - 1, g(2 * (n - 1) - i - o), 0.0)
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  return m / jnp.sum(jnp.exp(-0.5 * jnp.square(taps / sigma)))


def blur(image: jax.Array, sigma: jax.Array, *, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur with a fixed ``sigma`` and reflect padding.

  The padding mirrors about the edge pixel without repeating it (``d c b | a b c d``), as torchvision's
  ``GaussianBlur`` and SimCLR's TF code pad; scipy.ndimage calls this mode ``"mirror"``. Each pass is
  a matrix product with the padding folded into the matrix: it maps to matrix units, and XLA does not
  fuse (and so recompute) the preceding colour ops into every tap, which made a sum of shifted slices
  2.6x slower inside a recipe on CPU.

  Args:
    image: float image [H, W, C].
    sigma: standard deviation in pixels (may be traced).
    kernel_size: odd number of taps (static).

  Returns:
    float32 image of the same shape.
  """
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
  image = image.astype(jnp.float32)
  radius = kernel_size // 2
  if radius == 0:
    return image
  if radius >= min(image.shape[0], image.shape[1]):
    raise ValueError(
        f"kernel_size {kernel_size} is too large for a {image.shape[0]}x{image.shape[1]} image: "
        "reflect padding needs kernel_size // 2 < the image side; use a smaller blur_kernel_size")
  rows = jnp.einsum("oh,hwc->owc", _blur_matrix(image.shape[0], sigma, radius), image)
  out = jnp.einsum("pw,owc->opc", _blur_matrix(image.shape[1], sigma, radius), rows)
  return jnp.clip(out, 0.0, 1.0)


def gaussian_blur(
    key: jax.Array,
    image: jax.Array,
    *,
    sigma: Sequence[float] = (0.1, 2.0),
    kernel_size: int,
) -> jax.Array:
  """Gaussian blur with ``sigma`` drawn uniformly from a range (SimCLR, Chen et al. 2020, Appendix A).

  SimCLR blurs ImageNet views with sigma in [0.1, 2.0] and a kernel of 10% of the image side.

  Args:
    key: PRNG key.
    image: float image [H, W, C] in [0, 1].
    sigma: (min, max) of the standard deviation in pixels; equal ends give a fixed sigma.
    kernel_size: odd number of taps (static).

  Returns:
    float32 image of the same shape, in [0, 1].
  """
  if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
    raise ValueError(f"sigma must be a pair (min, max) with 0 < min <= max, got {sigma!r}")
  s = jax.random.uniform(key, minval=sigma[0], maxval=sigma[1])
  return blur(image, s, kernel_size=kernel_size)


def solarize(key: jax.Array, image: jax.Array, *, threshold: float = 0.5) -> jax.Array:
  """Inverts pixels at or above ``threshold``: ``x if x < t else 1 - x`` (BYOL, Grill et al. 2020).

  Deterministic; the key is accepted (and unused) so the op composes like the random ones, e.g. in
  ``random_apply``.
  """
  del key
  image = image.astype(jnp.float32)
  return jnp.where(image < threshold, image, 1.0 - image)


def random_apply(key: jax.Array, image: jax.Array, *, fn: Op, p: float) -> jax.Array:
  """Applies ``fn(key, image)`` with probability ``p``, else returns the image.

  A ``lax.cond``: a single image skips the work when the coin says no; under ``vmap`` it becomes a
  select. ``p`` is static, so ``p == 0`` and ``p == 1`` cost nothing extra.

  Args:
    key: PRNG key; split into the coin's key and the key passed to ``fn``.
    image: image [H, W, C].
    fn: an op ``(key, image) -> image`` of the same shape and dtype, e.g.
      ``functools.partial(gaussian_blur, kernel_size=23)``.
    p: probability of applying ``fn``, in [0, 1].

  Returns:
    image of the same shape.
  """
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"random_apply probability p must be in [0, 1], got {p}")
  if p == 0.0:
    return image
  k_coin, k_fn = jax.random.split(key)
  if p == 1.0:
    return fn(k_fn, image)
  return jax.lax.cond(jax.random.bernoulli(k_coin, p), lambda x: fn(k_fn, x), lambda x: x, image)
