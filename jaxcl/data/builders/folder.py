"""A folder of the user's own images as a TFDS array_record dataset (`jaxcl prepare-data --from-folder`).

Layouts: one sub-folder per class (``DIR/cat/1.jpg``, ``DIR/dog/7.png``; the class names are the
folder names, sorted), or a flat folder of unlabelled images (one class, ``unlabeled``). Files whose
extension is not an image's are skipped and counted; every image is decoded with
``jaxcl.data.images.decode_image`` (pixel limit, one line for a damaged file), converted to the
channels of the majority ("L" or "RGB") and, when sizes differ, resized to ``image_size`` (shorter side,
then the centre square). The split is a fixed stratified ``test_fraction`` (seed 0). A file that fails
stops the preparation before anything is kept: TFDS writes into an ``incomplete.*`` folder and renames
it only when every split is written.
"""

from __future__ import annotations

import collections
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxcl.data import images as image_files
from jaxcl.data import transforms
from jaxcl.data.builders import local

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
UNLABELED = "unlabeled"
MAX_FILE_BYTES = 256 * 2**20  # no single image file is larger; refuse before reading it
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _images_in(folder: str) -> tuple[list[str], int]:
  names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
  files = [os.path.join(folder, n) for n in names
           if os.path.isfile(os.path.join(folder, n)) and n.lower().endswith(EXTENSIONS)]
  skipped = sum(1 for n in names if os.path.isfile(os.path.join(folder, n))) - len(files)
  return files, skipped


def scan(root: str) -> tuple[list[str], list[int], tuple[str, ...], int]:
  """(files, labels, class names, skipped non-image files) of an image folder, or ValueError."""
  if not os.path.isdir(root):
    raise ValueError(f"--from-folder={root!r} is not a directory of images.")
  classes = sorted(n for n in os.listdir(root)
                   if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
  top, skipped = _images_in(root)
  if classes and top:
    raise ValueError(f"{root} has both class folders ({', '.join(classes[:3])}...) and images at its "
                     f"top ({os.path.basename(top[0])}...); move the images into class folders, or "
                     "remove the folders for an unlabeled dataset.")
  if not classes:
    files, labels, names = top, [0] * len(top), (UNLABELED,)
  else:
    files, labels = [], []
    for index, name in enumerate(classes):
      found, more = _images_in(os.path.join(root, name))
      skipped += more
      if not found:
        raise ValueError(f"class folder {os.path.join(root, name)} has no images ({', '.join(EXTENSIONS)}"
                         "); add some or remove the folder.")
      files += found
      labels += [index] * len(found)
    names = tuple(classes)
  if len(files) < 2:
    raise ValueError(f"{root} has {len(files)} image(s); a dataset needs at least 2 "
                     f"(extensions: {', '.join(EXTENSIONS)}).")
  return files, labels, names, skipped


def _header(path: str) -> tuple[tuple[int, int], str]:
  size = os.path.getsize(path)
  if size > MAX_FILE_BYTES:
    raise ValueError(f"{path} is {size:,} bytes, more than any image jaxcl reads "
                     f"({MAX_FILE_BYTES:,}); remove it.")
  try:
    with Image.open(path) as im:
      return im.size, im.mode
  except (OSError, SyntaxError) as e:
    raise ValueError(f"{path} is not a readable image ({e}); replace the file or remove it.") from e


def plan(root: str, image_size: int | None) -> dict:
  """Everything the builder needs, checked from the files' headers before any image is decoded."""
  files, labels, names, skipped = scan(root)
  headers = [_header(f) for f in files]
  modes = collections.Counter("L" if mode in ("L", "1", "I;16", "I", "F") else "RGB"
                              for _, mode in headers)
  sizes = {wh for wh, _ in headers}
  if image_size is None:
    if len(sizes) > 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
      shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
      raise ValueError(f"the images in {root} are not all one square size ({shown}...); pass "
                       "--image_size N to store them at N x N (shorter side to N, centre crop).")
    image_size = next(iter(sizes))[0]
  return dict(files=files, labels=labels, class_names=names, skipped=skipped,
              mode=modes.most_common(1)[0][0], image_size=int(image_size))


def split_indices(labels: list[int], test_fraction: float) -> dict[str, np.ndarray]:
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels)
  counts = np.bincount(labels)
  stratify = labels if counts.min() >= 2 and len(labels) * test_fraction >= len(counts) else None
  train, test = model_selection.train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                                 stratify=stratify, random_state=0)
  return {"train": np.sort(train), "test": np.sort(test)}


def make_builder(name: str, root: str, *, image_size: int | None = None,
                 test_fraction: float = 0.2):
  """A TFDS builder class named ``name`` that stores the images of ``root``; see the module doc."""
  if not NAME_PATTERN.fullmatch(name):
    raise ValueError(f"--name={name!r}: use lower-case letters, digits and _ (starting with a letter).")
  if not 0 < test_fraction < 1:
    raise ValueError(f"--test_fraction={test_fraction}: must be in (0, 1).")
  p = plan(root, image_size)
  channels = 1 if p["mode"] == "L" else 3

  def load(index: int) -> np.ndarray:
    path = p["files"][index]
    with open(path, "rb") as f:
      array = image_files.decode_image(f.read(), source=path)
    image = np.asarray(Image.fromarray(array).convert(p["mode"]), np.uint8)
    image = image[..., None] if image.ndim == 2 else image
    if image.shape[:2] != (p["image_size"],) * 2:
      image = transforms.resize_and_crop(image, p["image_size"])
    return image.reshape(p["image_size"], p["image_size"], channels)

  class Folder(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The user's image folder, stored as raw uint8 tensors."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"From {root}."}
    code_path = None  # no checksums file (TFDS's lookup would need importlib_resources)

    def _info(self) -> tfds.core.DatasetInfo:
      return tfds.core.DatasetInfo(
          builder=self,
          description=f"Images from {root} ({len(p['files'])} files, {p['skipped']} non-image files "
                      "skipped).",
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Tensor(shape=(p["image_size"],) * 2 + (channels,),
                                            dtype=np.uint8),
              "label": tfds.features.ClassLabel(names=p["class_names"]),
          }),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(idx)
              for split, idx in split_indices(p["labels"], test_fraction).items()}

    def _generate_examples(self, indices):
      for i in indices:
        yield int(i), {"image": load(int(i)), "label": p["labels"][int(i)]}

  Folder.name = name
  return Folder, p
