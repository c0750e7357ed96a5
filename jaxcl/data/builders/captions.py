"""Images with captions as a TFDS array_record dataset (``jaxcl prepare-data --from_captions``).

The input format
----------------
A caption file, ``.jsonl`` (one JSON object per line), ``.csv`` or ``.tsv`` (a header line naming the
columns), or ``.parquet``, with two columns:

  image    the image file: a path relative to the caption file's folder, inside it
           (``train2014/COCO_train2014_000000000009.jpg``; ``/`` separates folders)
  caption  one caption of that image

Other columns are ignored. An image with several captions (COCO and Flickr30k have five) has one row
per caption, in any order::

  {"image": "dogs/1.jpg", "caption": "A brown dog runs along the beach."}
  {"image": "dogs/1.jpg", "caption": "A dog running on sand next to the sea."}
  {"image": "cats/7.png", "caption": "A cat asleep on a red sofa."}

``--from_captions`` also takes a folder holding the images and a ``captions.jsonl`` (or
``captions.csv`` / ``captions.tsv``) that names them as above.

The stored dataset
------------------
One row per (image, caption) pair, with the features

  image     uint8 [S, S, C]: decoded with ``jaxcl.data.images.decode_image``, converted to the
            channels of most images ("L" or "RGB"), shorter side resized to S = ``image_size``
            (default 64) and centre-cropped, as ``--from_folder`` stores images
  caption   the caption (text)
  image_id  the image's path as normalised from the caption file (text)
  label     the image's index (order of first appearance in the file), so code that wants a
            label has one; every caption of an image has the same label

and the splits ``train`` and ``test``: ``test`` holds ``round(test_fraction x images)`` images (at
least one), chosen by the SHA-256 of their image_id, so the same on every machine, and every
caption of an image is in the split of its image.

Everything is read and checked before TFDS writes anything: every row (bounded line length, caption
length and path length; nothing is evaluated or unpickled), every path (relative, inside the folder,
an existing file of at most ``folder.MAX_FILE_BYTES``) and every image, decoded once. Each problem
raises a one-line ``ValueError`` naming the file and line (or the image) and the fix; TFDS writes
into an ``incomplete.*`` folder that it renames only when every split is written, so a failed
preparation leaves nothing that is read later.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import posixpath

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxcl.data import images as image_files
from jaxcl.data import transforms
from jaxcl.data.builders import folder, local
from jaxcl.data.text import files

CAPTION_FILES = ("captions.jsonl", "captions.csv", "captions.tsv", "captions.parquet")
DEFAULT_IMAGE_SIZE = 64
MAX_PATH_CHARS = 1000
# Decoded, resized images kept in memory between the check and the writing when they fit (else
# decoded again while writing): 1 GiB is COCO's 118k training images at 64 px.
CACHE_BYTES = 1 << 30
_FIX = ("a caption file has the columns image (a path relative to the file's folder) and "
        "caption, one row per caption")
_GREY_MODES = ("L", "1", "I;16", "I", "F", "LA")


@dataclasses.dataclass(frozen=True)
class CaptionPlan:
  """A caption file read and checked whole (what the builder stores).

  Attributes:
    source: the caption file.
    image_paths: the files of the distinct images, in order of first appearance (label = index).
    image_ids: their paths as written in the file, normalised.
    captions: one per row; ``caption_image[i]`` is the image (index) of row i.
    caption_image: int [rows].
    split_of_image: "train" or "test" for each image.
    image_size / mode: the stored side and Pillow mode ("L" or "RGB").
  """

  source: str
  image_paths: list[str]
  image_ids: list[str]
  captions: list[str]
  caption_image: np.ndarray
  split_of_image: list[str]
  image_size: int
  mode: str

  @property
  def channels(self) -> int:
    return 1 if self.mode == "L" else 3

  def rows(self, split: str) -> list[int]:
    """The caption rows of ``split``."""
    return [i for i, image in enumerate(self.caption_image) if self.split_of_image[image] == split]


def caption_file(path: str) -> str:
  """The caption file ``--from_captions`` names: ``path`` itself, or the captions.* in a folder."""
  if os.path.isdir(path):
    for name in CAPTION_FILES:
      if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    raise ValueError(f"--from_captions={path!r} is a folder without {' / '.join(CAPTION_FILES)}; "
                     f"add one ({_FIX}).")
  if not os.path.isfile(path):
    raise ValueError(f"--from_captions={path!r} is neither a caption file nor a folder; {_FIX}.")
  return path


def _image_id(value, where: str) -> str:
  """The normalised relative path of a row's image, or a one-line ValueError."""
  if not isinstance(value, str) or not value.strip():
    raise ValueError(f"{where}: 'image' is {type(value).__name__} {value!r:.40}, not a file path; "
                     f"{_FIX}.")
  if len(value) > MAX_PATH_CHARS:
    raise ValueError(f"{where}: an image path of {len(value):,} characters; paths are at most "
                     f"{MAX_PATH_CHARS:,}.")
  path = value.strip().replace("\\", "/")
  norm = posixpath.normpath(path)
  if path.startswith("/") or os.path.isabs(path) or norm == ".." or norm.startswith("../") \
      or "\x00" in path:
    raise ValueError(f"{where}: image {value!r} is not inside the caption file's folder; give its "
                     "path relative to that folder (no leading / and no ..).")
  return norm


def _read_rows(path: str) -> tuple[list[str], list[str], list[str]]:
  """(image ids, captions, where) of every row of the caption file."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in files.PAIR_FORMATS:
    raise ValueError(f"{path}: unknown format {ext or '(no extension)'!r}; use one of "
                     f"{', '.join(files.PAIR_FORMATS)}.")
  ids, texts, wheres = [], [], []
  # pylint: disable=protected-access  # the text readers' bounded, data-only record parsers
  for where, record in files._records(path, ext, ["image", "caption"]):
    for key in ("image", "caption"):
      if key not in record:
        shown = ", ".join(sorted(record)[:8]) or "none"
        raise ValueError(f"{where}: no {key!r} (columns: {shown}); {_FIX}.")
    ids.append(_image_id(record["image"], where))
    texts.append(files._text(record["caption"], where, "caption"))
    wheres.append(where)
  if not ids:
    raise ValueError(f"{path}: no rows; {_FIX}.")
  return ids, texts, wheres


def _held_out(image_ids: list[str], fraction: float) -> set[str]:
  """round(fraction * n) of the images (at least 1), the same on every machine (by SHA-256)."""
  ranked = sorted(image_ids, key=lambda i: (hashlib.sha256(i.encode()).hexdigest(), i))
  return set(ranked[:max(1, round(fraction * len(ranked)))])


def _header(path: str, where: str) -> str:
  """The Pillow mode of an image file, checked from its size and header; the file named."""
  if not os.path.isfile(path):
    raise ValueError(f"{where}: image file {path} is not a file; fix the path or remove the row.")
  return folder._header(path)[1]  # pylint: disable=protected-access


def load_image(path: str, *, mode: str, image_size: int) -> np.ndarray:
  """uint8 [S, S, C] of an image file: decoded (pixel limit), converted to ``mode``, resized."""
  with open(path, "rb") as f:
    array = image_files.decode_image(f.read(), source=path)
  image = np.asarray(Image.fromarray(array).convert(mode), np.uint8)
  image = image[..., None] if image.ndim == 2 else image
  return transforms.resize_and_crop(image, image_size)


def plan(path: str, *, image_size: int | None = None, test_fraction: float = 0.2,
         cache: dict[int, np.ndarray] | None = None) -> CaptionPlan:
  """Reads and checks a caption file and every image it names (see the module doc).

  Args:
    path: the caption file, or a folder holding one (``caption_file``).
    image_size: the stored side (default 64).
    test_fraction: the share of images held out as the test split.
    cache: if given, filled with ``{image index: stored uint8 image}`` while checking, when all of
      them fit in ``CACHE_BYTES`` (the builder then writes them without decoding them again).

  Raises:
    ValueError: one line naming the file and line (or image file) and the fix.
  """
  if not 0 < test_fraction < 1:
    raise ValueError(f"--test_fraction={test_fraction}: must be in (0, 1).")
  size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
  if size < 1:
    raise ValueError(f"--image_size={image_size}: must be a positive number of pixels.")
  source = caption_file(path)
  root = os.path.dirname(os.path.abspath(source))
  ids, texts, wheres = _read_rows(source)
  order: dict[str, int] = {}
  first_where: list[str] = []
  for image_id, where in zip(ids, wheres):
    if image_id not in order:
      order[image_id] = len(order)
      first_where.append(where)
  image_ids = list(order)
  if len(image_ids) < 2:
    raise ValueError(f"{source}: {len(image_ids)} distinct image(s); a dataset needs at least 2 "
                     "(one for training, one for testing).")
  held = _held_out(image_ids, test_fraction)
  if len(held) == len(image_ids):
    raise ValueError(f"{source}: {len(image_ids)} images leave none for training once "
                     f"{test_fraction:.0%} are held out for testing; add images or lower "
                     "--test_fraction.")
  paths = [os.path.join(root, *i.split("/")) for i in image_ids]
  modes = collections.Counter("L" if _header(p, w) in _GREY_MODES else "RGB"
                              for p, w in zip(paths, first_where))
  mode = modes.most_common(1)[0][0]
  keep = cache is not None and len(paths) * size * size * (1 if mode == "L" else 3) <= CACHE_BYTES
  for index, p in enumerate(paths):  # decoded here so that a damaged file stops us before writing
    image = load_image(p, mode=mode, image_size=size)
    if keep:
      cache[index] = image
  return CaptionPlan(source=source, image_paths=paths, image_ids=image_ids, captions=texts,
                     caption_image=np.asarray([order[i] for i in ids], np.int64),
                     split_of_image=["test" if i in held else "train" for i in image_ids],
                     image_size=size, mode=mode)


def features(num_images: int, image_size: int, channels: int) -> tfds.features.FeaturesDict:
  """The features of a caption dataset (see the module doc)."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(image_size, image_size, channels), dtype=np.uint8),
      "caption": tfds.features.Text(),
      "image_id": tfds.features.Text(),
      "label": tfds.features.ClassLabel(num_classes=num_images),
  })


def make_builder(name: str, path: str, *, image_size: int | None = None,
                 test_fraction: float = 0.2):
  """A TFDS builder class named ``name`` storing the caption file ``path``; see the module doc.

  Returns:
    (builder class, the ``CaptionPlan``).
  """
  if not folder.NAME_PATTERN.fullmatch(name):
    raise ValueError(f"--name={name!r}: use lower-case letters, digits and _ (starting with a letter).")
  cache: dict[int, np.ndarray] = {}
  p = plan(path, image_size=image_size, test_fraction=test_fraction, cache=cache)

  def image(index: int) -> np.ndarray:
    if index in cache:
      return cache[index]
    return load_image(p.image_paths[index], mode=p.mode, image_size=p.image_size)

  class Captions(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The user's captioned images, stored as raw uint8 tensors and texts."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"From {p.source}."}
    code_path = None  # no checksums file (TFDS's lookup would need importlib_resources)

    def _info(self) -> tfds.core.DatasetInfo:
      return tfds.core.DatasetInfo(
          builder=self,
          description=(f"Captioned images from {p.source} ({len(p.image_ids)} images, "
                       f"{len(p.captions)} captions)."),
          features=features(len(p.image_ids), p.image_size, p.channels),
          supervised_keys=("image", "caption"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(p.rows(split)) for split in ("train", "test")}

    def _generate_examples(self, rows):
      for row in rows:
        index = int(p.caption_image[row])
        yield row, {"image": image(index), "caption": p.captions[row],
                    "image_id": p.image_ids[index], "label": index}

  Captions.name = name
  return Captions, p
