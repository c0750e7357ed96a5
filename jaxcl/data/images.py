"""Decoding image files with a pixel limit, so a small file cannot fill memory when decoded.

A PNG or JPEG header can claim 100,000 x 100,000 pixels in a few hundred bytes (a "decompression
bomb"); decoding it would allocate 30 GB. `decode_image` reads the header first and refuses anything
over `MAX_IMAGE_PIXELS` before decoding; readers of image files (folders, archives) decode with it.
`limit_pil_pixels` (run when `jaxcl.data` is imported, so in Grain's worker processes too) sets
Pillow's own limit to the same value, so other Pillow decodes in the process, such as TFDS
decoding a catalog dataset's images, refuse images over twice it (Pillow's rule; it warns above).
"""

import io
import re

import numpy as np
from PIL import Image

# 64 Mpx (8192 x 8192, 192 MB as RGB uint8): larger than the images of the usual training sets,
# small enough that decoding one cannot take a host down.
MAX_IMAGE_PIXELS = 64 * 2**20


def limit_pil_pixels(max_pixels: int | None = None) -> None:
  """Sets the pixel limit of `decode_image` and of Pillow in this process.

  Args:
    max_pixels: the new limit; None keeps `MAX_IMAGE_PIXELS` and only sets Pillow's to it. A
      raised limit holds in this process only (Grain worker processes start from the default).
  """
  global MAX_IMAGE_PIXELS
  if max_pixels is not None:
    MAX_IMAGE_PIXELS = int(max_pixels)
  Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def decode_image(data: bytes, *, source: str) -> np.ndarray:
  """Decodes one image file's bytes to a uint8 array, refusing oversized or damaged files.

  Args:
    data: the encoded file (PNG, JPEG, or any format Pillow reads).
    source: the file's name or path, used in error messages.

  Returns:
    uint8 [H, W] or [H, W, C] as Pillow decodes it.

  Raises:
    ValueError: one line naming `source`, for an image over `MAX_IMAGE_PIXELS` (checked from the
      header, before decoding) or a file that is truncated or not an image.
  """
  try:
    # Reads the header only. Over Pillow's limit it warns, and over twice it raises, before the
    # check below; the warning is left alone since filtering warnings is not thread-safe.
    image = Image.open(io.BytesIO(data))
    with image:
      width, height = image.size
      if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(source, f"{width} x {height} = {width * height:,} pixels,")
      image.load()
      return np.asarray(image)
  except Image.DecompressionBombError as e:
    # Pillow's own check (at twice its limit) fired while reading the header; it names the size.
    pixels = re.search(r"\((\d+) pixels\)", str(e))
    raise _too_large(source, f"{int(pixels[1]):,} pixels," if pixels else "larger,") from e
  except (OSError, SyntaxError) as e:
    # Pillow reports a truncated or garbled file as OSError (or SyntaxError from some plugins).
    raise ValueError(
        f"{source} is not a readable image ({e}); replace the file or remove it.") from e


def _too_large(source: str, size: str) -> ValueError:
  return ValueError(
      f"{source} is {size} over jaxcl's limit of {MAX_IMAGE_PIXELS:,} pixels (a decompression "
      "bomb, or a real image too large to train on); remove or shrink it, or if it is a real image "
      "call jaxcl.data.images.limit_pil_pixels(N) with a larger N.")
