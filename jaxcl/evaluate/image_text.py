"""Image <-> text retrieval Recall@K, as CLIP is evaluated on COCO and Flickr30k (Radford et al. 2021,
Sec. 3.1.5 and Table 13; the protocol of Karpathy and Fei-Fei 2015).

Every image of the split queries every caption of the split, and every caption queries every image,
by cosine similarity. With several captions per image (COCO and Flickr30k have five):

* image -> text Recall@K: the share of images with at least one of *their* captions among the K
  captions most similar to them;
* text -> image Recall@K: the share of captions whose image is among the K images most similar to
  them.

A query's rank is the number of candidates scoring strictly higher than its best true match, so a
tie counts in the query's favour. The [chunk, all] similarity blocks are computed on the
accelerator, chunk by chunk, so memory is bounded by the chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_BLOCK_ELEMENTS = 1 << 26  # [query rows, candidates] similarity block at most (256 MiB of float32)


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@jax.jit
def _image_ranks(images, texts, rows, caption_image):
  """For images ``rows``: how many captions score above the image's best own caption."""
  score = jnp.matmul(images[rows], texts.T, precision=jax.lax.Precision.HIGHEST)
  own = caption_image[None, :] == rows[:, None]
  best = jnp.max(jnp.where(own, score, -jnp.inf), axis=1)
  return jnp.sum(score > best[:, None], axis=1)


@jax.jit
def _text_ranks(images, texts, rows, caption_image):
  """For captions ``rows``: how many images score above the caption's own image."""
  score = jnp.matmul(texts[rows], images.T, precision=jax.lax.Precision.HIGHEST)
  own = jnp.take_along_axis(score, caption_image[rows][:, None], axis=1)
  return jnp.sum(score > own, axis=1)


def image_text_recall(image_emb: jax.typing.ArrayLike, text_emb: jax.typing.ArrayLike,
                      caption_image: jax.typing.ArrayLike, *, ks: tuple[int, ...] = (1, 5, 10)
                      ) -> dict[str, float]:
  """Image -> text and text -> image Recall@K (module doc) of one split's embeddings.

  Args:
    image_emb: [M, D] one embedding per image.
    text_emb: [C, D] one embedding per caption.
    caption_image: [C] ints in [0, M): the image each caption describes; every image needs at least
      one caption.
    ks: the K of Recall@K.

  Returns:
    ``{"i2t_recall@K": ..., "t2i_recall@K": ...}`` for each K, fractions in [0, 1].

  Raises:
    ValueError: shapes that do not match, an image without a caption, or a K < 1.
  """
  images = np.asarray(image_emb, np.float32)
  texts = np.asarray(text_emb, np.float32)
  owner = np.asarray(caption_image).reshape(-1)
  if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
    raise ValueError(f"image_emb [M, D] and text_emb [C, D] must share D; got {images.shape} and "
                     f"{texts.shape}.")
  m, c = len(images), len(texts)
  if len(owner) != c or not np.issubdtype(owner.dtype, np.integer):
    raise ValueError(f"caption_image must be [C] = [{c}] image indices; got {owner.shape} "
                     f"{owner.dtype}.")
  if m == 0 or c == 0:
    raise ValueError(f"recall needs images and captions; got {m} images and {c} captions.")
  if owner.min() < 0 or owner.max() >= m:
    raise ValueError(f"caption_image holds {owner.min()}..{owner.max()}, outside [0, {m}).")
  missing = np.setdiff1d(np.arange(m), owner)
  if len(missing):
    raise ValueError(f"image {missing[0]} (of {len(missing)}) has no caption; give every image at "
                     "least one, or leave it out.")
  if not ks or min(ks) < 1:
    raise ValueError(f"ks={ks}: every K must be >= 1.")
  args = (_unit(jnp.asarray(images)), _unit(jnp.asarray(texts)), jnp.asarray(owner, jnp.int32))
  i2t = _chunked(_image_ranks, m, c, args)
  t2i = _chunked(_text_ranks, c, m, args)
  out = {f"i2t_recall@{k}": float(np.mean(i2t < k)) for k in ks}
  out.update({f"t2i_recall@{k}": float(np.mean(t2i < k)) for k in ks})
  return out


def _chunked(fn, n: int, other: int, args) -> np.ndarray:
  """``fn``'s ranks of all n query rows, chunk by chunk (the last chunk wraps: one compiled shape)."""
  chunk = max(1, min(n, _BLOCK_ELEMENTS // max(other, 1)))
  out = [np.asarray(fn(*args[:2], jnp.asarray(np.arange(start, start + chunk) % n), args[2]))
         for start in range(0, n, chunk)]
  return np.concatenate(out)[:n]
