"""What serving needs from a finished run: its encoders as plain functions of texts or images.

``jaxcl.experiment.restore_encoders(config, workdir)`` builds one from a run's checkpoint; anything
else (a notebook's own model) can build one directly, so serving knows nothing of training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

TextEncoderFn = Callable[..., np.ndarray]    # (texts: Sequence[str], progress: str | None) -> [N, D]
ImageEncoderFn = Callable[..., np.ndarray]   # (images uint8 [N, H, W, C], progress) -> [N, D]


def bucket(n: int, *, multiple_of: int = 1, most: int | None = None) -> int:
  """The batch a call of ``n`` rows is padded to: the next power of two (at least
  ``multiple_of``, a multiple of it), capped at ``most``. A few sizes serve every call, so one
  compiled encoder and one compiled search serve every number of queries (and JAX's compilation
  cache finds them again in the next process)."""
  if n < 1:
    raise ValueError(f"n={n}: at least one row.")
  size = max(1 << (n - 1).bit_length(), multiple_of)
  size = -(-size // multiple_of) * multiple_of
  return size if most is None else min(size, most)


@dataclasses.dataclass(frozen=True)
class TrainedEncoders:
  """A trained run's encoders and where they come from.

  Attributes:
    kind: "text" (a query and a document tower) or "image" (one image encoder).
    workdir: the run's folder (absolute), recorded in the index's meta; None for pretrained towers
      used before any training.
    step: the checkpoint's step (-1 when unknown).
    method / data: the run's method and dataset names, recorded in the index's meta.
    pretrained: the pretrained model folder the towers started from (``model.pretrained``), if any.
    mesh: the devices the encoders run on; exact search and mining shard over it when it holds
      more than one device (None: one device).
    encode_documents / encode_queries: ``(texts, progress=None) -> float32 [N, D]`` (text runs).
    encode_images: ``(uint8 images [N, H, W, C], progress=None) -> float32 [N, D]`` (image runs).
  """

  kind: str
  workdir: str | None
  step: int
  method: str
  data: str
  pretrained: str | None = None
  mesh: jax.sharding.Mesh | None = None
  encode_documents: TextEncoderFn | None = None
  encode_queries: TextEncoderFn | None = None
  encode_images: ImageEncoderFn | None = None

  def __post_init__(self):
    if self.kind not in ("text", "image"):
      raise ValueError(f"kind={self.kind!r}: use 'text' or 'image'.")
    want = (("encode_documents", "encode_queries") if self.kind == "text" else ("encode_images",))
    missing = [name for name in want if getattr(self, name) is None]
    if missing:
      raise ValueError(f"a {self.kind} run's TrainedEncoders needs {', '.join(missing)}.")

  @property
  def search_mesh(self) -> jax.sharding.Mesh | None:
    """The mesh exact search shards the corpus over: None on one device (no collective needed)."""
    return self.mesh if self.mesh is not None and self.mesh.size > 1 else None

  def embed_texts(self, texts: Sequence[str], *, queries: bool,
                  progress: str | None = None) -> np.ndarray:
    """``texts`` through the query tower (``queries``) or the document tower."""
    if self.kind != "text":
      raise ValueError(f"this run trained {self.method!r} on {self.data!r}, an image run: it "
                       f"embeds images, not texts.")
    fn = self.encode_queries if queries else self.encode_documents
    return fn(list(texts), progress=progress)
