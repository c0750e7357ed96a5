"""Resolving a dataset name to prepared TFDS array_record files, and preparing them.

Every check that a dataset is prepared looks at the files in `data_dir` before TFDS is asked anything,
so an unprepared dataset fails at once with the command that prepares it, instead of TFDS trying (and,
offline, slowly failing) to reach Google Cloud Storage or a download host.
"""

import dataclasses
import glob
import json
import logging
import os
from typing import Any

# Must be set before tensorflow_datasets is imported anywhere: TFDS otherwise probes GCS for
# pre-built datasets, which on an offline machine waits minutes on DNS.
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

EMBEDDED = ("digits", "cifar10", "animal_shapes", "plaid", "stdlib_code")
# Embedded datasets whose files ship with an installed package (or Python): prepared on first use.
AUTO_PREPARED = ("digits", "animal_shapes", "plaid", "stdlib_code")
# Kept beside the builders' VERSION so the prepared-check needs no TFDS import (a test checks both).
EMBEDDED_VERSION = "1.0.0"
_log = logging.getLogger(__name__)


class NotPreparedError(FileNotFoundError):
  """The dataset has no prepared array_record files in data_dir; the message says how to make them."""


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the model and the evaluation need to know about a dataset.

  Attributes:
    image_shape: (H, W, C) of the uint8 images the pipeline yields.
    num_classes: number of label values.
    class_names: one name per label (CLIP/SigLIP build captions from them).
    num_train: examples in the train split.
    num_test: examples in the evaluation split.
  """

  image_shape: tuple[int, int, int]
  num_classes: int
  class_names: tuple[str, ...]
  num_train: int
  num_test: int


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # Belt and braces: the environment variable only counts if set before TFDS's first import.
  tfds.core.utils.gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
  return tfds


def prepare_command(cfg: ml_collections.ConfigDict) -> str:
  """The exact shell command that prepares `cfg.name` into `cfg.data_dir`."""
  parts = ["jaxcl", "prepare-data", cfg.name]
  if cfg.name not in AUTO_PREPARED:
    parts += ["--manual_dir", cfg.manual_dir or "DIR"]
  parts += ["--data_dir", cfg.data_dir]
  return " ".join(parts)


def _embedded_config_name(cfg: ml_collections.ConfigDict) -> str | None:
  if cfg.name == "digits":
    return f"{_digits_size(cfg)}px_{cfg.resize_method}"
  return None


def _digits_size(cfg: ml_collections.ConfigDict) -> int:
  return 8 if cfg.image_size is None else int(cfg.image_size)


def _embedded_dir(cfg: ml_collections.ConfigDict) -> str:
  config_name = _embedded_config_name(cfg)
  parts = [cfg.data_dir, cfg.name] + ([config_name] if config_name else []) + [EMBEDDED_VERSION]
  return os.path.join(*parts)


def _is_prepared_dir(path: str) -> bool:
  # TFDS writes into an `incomplete.*` folder and renames it when done, so a dataset_info.json in
  # the final folder means the preparation finished.
  return os.path.isfile(os.path.join(path, "dataset_info.json"))


def _split_name(name: str) -> tuple[str, str | None, str | None]:
  """'imagenet2012/config:5.1.0' -> ('imagenet2012', 'config', '5.1.0')."""
  base, _, version = name.partition(":")
  base, _, config = base.partition("/")
  return base, config or None, version or None


def _version_key(path: str) -> tuple[int, ...]:
  try:
    return tuple(int(p) for p in os.path.basename(path).split("."))
  except ValueError:
    return (-1,)


def _catalog_dir(cfg: ml_collections.ConfigDict) -> str | None:
  """The newest prepared version folder of a catalog dataset in data_dir, or None."""
  base, config, version = _split_name(cfg.name)
  root = os.path.join(cfg.data_dir, base, *([config] if config else []))
  if version:
    candidates = [os.path.join(root, version)]
  else:
    candidates = [os.path.dirname(p) for p in glob.glob(os.path.join(root, "*", "dataset_info.json"))]
    if not candidates and not config:  # A dataset with configs, none named: take any config.
      candidates = [os.path.dirname(p)
                    for p in glob.glob(os.path.join(root, "*", "*", "dataset_info.json"))]
  # Only version folders count: an `incomplete.*` folder that a killed preparation left behind can
  # already hold a dataset_info.json, but its shards may be half written.
  candidates = [c for c in candidates if _is_prepared_dir(c) and _version_key(c) != (-1,)]
  return max(candidates, key=_version_key) if candidates else None


def _check_array_record(path: str, cfg: ml_collections.ConfigDict) -> None:
  with open(os.path.join(path, "dataset_info.json")) as f:
    file_format = json.load(f).get("fileFormat", "tfrecord")
  if file_format != "array_record":
    raise NotPreparedError(
        f"{cfg.name} in {path} is stored as {file_format}, which needs TensorFlow to read; jaxcl "
        f"reads array_record. Re-prepare it with file_format='array_record', e.g. "
        f"`tfds build {cfg.name} --file_format=array_record --data_dir {cfg.data_dir}` "
        f"(TFDS builders that extract archives need `pip install 'jaxcl[tensorflow]'`).")


def prepared_datasets(data_dir: str) -> list[str]:
  """Names of the datasets with a finished preparation in data_dir (for error messages)."""
  found = glob.glob(os.path.join(data_dir, "*", "*", "dataset_info.json"))
  found += glob.glob(os.path.join(data_dir, "*", "*", "*", "dataset_info.json"))
  return sorted({os.path.relpath(p, data_dir).split(os.sep)[0] for p in found
                 if _version_key(os.path.dirname(p)) != (-1,)})


def _is_catalog_name(name: str) -> bool:
  tfds = _tfds()
  try:
    tfds.builder_cls(_split_name(name)[0])
    return True
  except Exception:  # pylint: disable=broad-except  # DatasetNotFoundError and lookup failures.
    return False


def check_prepared(cfg: ml_collections.ConfigDict) -> str:
  """Returns the prepared dataset folder, or raises (fast) saying how to prepare it.

  Raises:
    NotPreparedError: a known dataset without prepared files (the message has the command).
    ValueError: an unknown dataset name (the message lists what is available).
  """
  if cfg.name in EMBEDDED:
    path = _embedded_dir(cfg)
    if _is_prepared_dir(path):
      return path
    if cfg.name == "cifar10":  # Also accept the TFDS catalog's cifar10 (3.x) prepared elsewhere.
      catalog = _catalog_dir(cfg)
      if catalog is not None and os.path.basename(catalog) != EMBEDDED_VERSION:
        _check_array_record(catalog, cfg)
        return catalog
    raise NotPreparedError(
        f"Dataset {cfg.name!r} is not prepared in data_dir={cfg.data_dir!r} (looked for {path}). "
        f"Prepare it with:\n  {prepare_command(cfg)}\n"
        + ("where DIR holds cifar-10-python.tar.gz "
           "(https://www.cs.toronto.edu/~kriz/cifar.html)." if cfg.name == "cifar10" else ""))
  path = _catalog_dir(cfg)
  if path is not None:
    _check_array_record(path, cfg)
    return path
  if _is_catalog_name(cfg.name):
    raise NotPreparedError(
        f"TFDS dataset {cfg.name!r} is not prepared in data_dir={cfg.data_dir!r}. Prepare it as "
        f"array_record with:\n  {prepare_command(cfg)}\nwhere DIR holds the files the TFDS builder "
        "asks for (see its manual download instructions), or point data.data_dir at a directory "
        "where `tfds build --file_format=array_record` already prepared it.")
  if not os.path.isdir(cfg.data_dir):
    raise NotPreparedError(
        f"data.data_dir={cfg.data_dir!r} does not exist, so dataset {cfg.name!r} cannot be read "
        f"from it: restore that folder, prepare the dataset there again, or point data.data_dir at "
        f"the folder that holds it.")
  available = sorted(set(EMBEDDED) | set(prepared_datasets(cfg.data_dir)))
  raise ValueError(
      f"Unknown dataset data.name={cfg.name!r}. Available: {', '.join(available)} (prepared in "
      f"{cfg.data_dir}), or any TFDS catalog name once prepared as array_record there.")


def _check_new_name(name: str, data_dir: str) -> None:
  """Raises unless ``name`` is free for a user's dataset in data_dir."""
  if name in EMBEDDED:
    raise ValueError(f"--name={name!r} is one of jaxcl's own datasets; choose another name.")
  existing = _catalog_dir(ml_collections.ConfigDict({"name": name, "data_dir": data_dir}))
  if existing is not None:
    raise ValueError(f"--name={name!r} is already prepared in {existing}; choose another name, or "
                     "delete that folder to rebuild it.")


def _build_offline(builder_cls, data_dir: str) -> str:
  """Prepares a user-data builder as array_record in data_dir, nothing downloaded; its folder."""
  tfds = _tfds()
  b = builder_cls(data_dir=data_dir, file_format="array_record")
  tfds.display_progress_bar(False)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return os.fspath(b.data_dir)


def prepare_folder(root: str, name: str, *, data_dir: str, image_size: int | None = None,
                   test_fraction: float = 0.2) -> str:
  """Stores a folder of images (one sub-folder per class, or flat) as dataset ``name`` in data_dir.

  See ``jaxcl.data.builders.folder``. Returns the prepared folder; ``data.name=name`` then reads it.
  """
  _check_new_name(name, data_dir)
  from jaxcl.data.builders import folder  # pylint: disable=g-import-not-at-top
  builder_cls, _ = folder.make_builder(name, root, image_size=image_size,
                                       test_fraction=test_fraction)
  return _build_offline(builder_cls, data_dir)


def prepare_text(name: str, *, data_dir: str, pairs: str | None = None, beir: str | None = None,
                 test_fraction: float = 0.2) -> str:
  """Stores a pair file and/or a BEIR folder as text dataset ``name`` in data_dir.

  See ``jaxcl.data.builders.text_pairs``. Returns the prepared folder; ``data.name=name`` reads it.
  """
  _check_new_name(name, data_dir)
  from jaxcl.data.builders import text_pairs  # pylint: disable=g-import-not-at-top
  builder_cls, _ = text_pairs.make_builder(name, pairs=pairs, beir=beir,
                                           test_fraction=test_fraction)
  return _build_offline(builder_cls, data_dir)


def prepare_captions(path: str, name: str, *, data_dir: str, image_size: int | None = None,
                     test_fraction: float = 0.2) -> str:
  """Stores a caption file (or a folder with captions.jsonl) as image-caption dataset ``name``.

  See ``jaxcl.data.builders.captions`` (the file format, features and splits). Returns the prepared
  folder; ``data.name=name`` then reads it, and CLIP/SigLIP train on its captions.
  """
  _check_new_name(name, data_dir)
  from jaxcl.data.builders import captions  # pylint: disable=g-import-not-at-top
  builder_cls, _ = captions.make_builder(name, path, image_size=image_size,
                                         test_fraction=test_fraction)
  return _build_offline(builder_cls, data_dir)


def _embedded_builder(cfg: ml_collections.ConfigDict):
  if cfg.name == "digits":
    from jaxcl.data.builders import digits  # pylint: disable=g-import-not-at-top
    config = digits.config_for(_digits_size(cfg), cfg.resize_method)
    return digits.Digits(data_dir=cfg.data_dir, config=config, file_format="array_record")
  if cfg.name == "animal_shapes":
    from jaxcl.data.builders import animal_shapes  # pylint: disable=g-import-not-at-top
    return animal_shapes.AnimalShapes(data_dir=cfg.data_dir, file_format="array_record")
  if cfg.name == "plaid":
    from jaxcl.data.builders import plaid  # pylint: disable=g-import-not-at-top
    return plaid.Plaid(data_dir=cfg.data_dir, file_format="array_record")
  if cfg.name == "stdlib_code":
    from jaxcl.data.builders import stdlib_code  # pylint: disable=g-import-not-at-top
    return stdlib_code.StdlibCode(data_dir=cfg.data_dir, file_format="array_record")
  from jaxcl.data.builders import cifar10  # pylint: disable=g-import-not-at-top
  return cifar10.Cifar10(data_dir=cfg.data_dir, file_format="array_record")


def builder(cfg: ml_collections.ConfigDict):
  """The TFDS builder of a prepared dataset (digits and animal_shapes are prepared on first use)."""
  if cfg.name in AUTO_PREPARED and not _is_prepared_dir(_embedded_dir(cfg)):
    _log.info("Preparing the embedded %s dataset in %s (first use).", cfg.name, cfg.data_dir)
    try:
      prepare(cfg, progress=False)
    except Exception:  # pylint: disable=broad-except
      # Another process sharing data_dir may have finished first (its rename won the race).
      if not _is_prepared_dir(_embedded_dir(cfg)):
        raise
  path = check_prepared(cfg)
  if cfg.name in EMBEDDED and path == _embedded_dir(cfg):
    return _embedded_builder(cfg)
  # Read exactly the config and version found on disk, not the catalog code's default version.
  parts = os.path.relpath(path, cfg.data_dir).split(os.sep)
  pinned = "/".join(parts[:-1]) + ":" + parts[-1]
  return _tfds().builder(pinned, data_dir=cfg.data_dir, try_gcs=False)


def data_source(cfg: ml_collections.ConfigDict, split: str, *, field: str = "split") -> Any:
  """A random-access TFDS ArrayRecordDataSource of one split (decodes examples to NumPy)."""
  b = builder(cfg)
  try:
    return b.as_data_source(split=split)
  except (KeyError, ValueError) as e:
    splits = sorted(getattr(b.info, "splits", {}) or {})
    raise ValueError(f"{field}={split!r} is not a split of {cfg.name} (splits: {splits}); "
                     f"set {field} to one of them.") from e


def prepare(cfg: ml_collections.ConfigDict, *, progress: bool = True) -> None:
  """Builds `cfg.name` as array_record in `cfg.data_dir` (no-op when already prepared).

  digits, animal_shapes, plaid and stdlib_code need nothing; cifar10 reads cifar-10-python.tar.gz
  from `cfg.manual_dir`; other names run the TFDS catalog builder with array_record output (most of
  those need TensorFlow to extract their archives: `pip install 'jaxcl[tensorflow]'`).

  Args:
    cfg: the data config (name, data_dir, manual_dir, image_size for digits).
    progress: show TFDS's progress bars.
  """
  if cfg.name == "cifar10":
    from jaxcl.data.builders import cifar10  # pylint: disable=g-import-not-at-top
    if not cfg.manual_dir or cifar10.find_source(cfg.manual_dir) is None:
      raise ValueError(
          f"data.manual_dir={cfg.manual_dir!r} does not contain {cifar10.ARCHIVE}. "
          f"{cifar10.Cifar10.MANUAL_DOWNLOAD_INSTRUCTIONS} Then run:\n  {prepare_command(cfg)}")
  tfds = _tfds()
  if cfg.name in EMBEDDED:
    b = _embedded_builder(cfg)
  else:
    if _catalog_dir(cfg) is not None:
      return
    if not _is_catalog_name(cfg.name):
      check_prepared(cfg)  # Raises the unknown-name error.
    b = tfds.builder(cfg.name, data_dir=cfg.data_dir, try_gcs=False, file_format="array_record")
  download_config = tfds.download.DownloadConfig(
      manual_dir=cfg.manual_dir, try_download_gcs=False)
  was_active = tfds.core.utils.tqdm_utils._active  # pylint: disable=protected-access
  tfds.display_progress_bar(progress)
  try:
    b.download_and_prepare(download_config=download_config)
  except ImportError as e:
    if "tensorflow" not in str(e).lower():
      raise
    raise ValueError(
        f"Preparing {cfg.name} with its TFDS builder needs TensorFlow: "
        "`pip install 'jaxcl[tensorflow]'` (reading the prepared array_record files does not)."
    ) from e
  except AssertionError as e:  # TFDS's way of saying the manual files are missing
    if "manual" not in str(e).lower():
      raise
    how = " ".join(str(getattr(b, "MANUAL_DOWNLOAD_INSTRUCTIONS", "") or "").split())
    raise ValueError(
        f"{cfg.name} is built from files you download yourself, and data.manual_dir="
        f"{cfg.manual_dir!r} does not hold them. {how} Then run: {prepare_command(cfg)}") from e
  finally:
    tfds.display_progress_bar(was_active)


def info(cfg: ml_collections.ConfigDict) -> DataInfo:
  """Shape, classes and split sizes of the dataset as the pipeline yields it.

  Raises NotPreparedError (fast) with the prepare command when the dataset is not prepared.
  """
  b = builder(cfg)
  features = b.info.features
  if "query" in features and "positive" in features:
    raise ValueError(f"{cfg.name} is a text dataset (query/positive pairs); its sizes come from "
                     "jaxcl.data.text.info(cfg).")
  if cfg.image_key not in features or cfg.label_key not in features:
    raise ValueError(f"{cfg.name} has features {sorted(features.keys())}; set data.image_key and "
                     "data.label_key to its image and label features.")
  stored = tuple(features[cfg.image_key].shape)
  if np.dtype(features[cfg.image_key].np_dtype) != np.uint8 and len(stored) <= 2:
    # A sequence: audio [T] or a signal [T, C], fed as float32 [T, C] under the "image" key.
    length = cfg.get("sequence_length") or stored[0]
    if length is None:
      raise ValueError(f"{cfg.name}: the {cfg.image_key!r} sequences have no fixed length {stored}; "
                       "set data.sequence_length (e.g. 16000 for one second of 16 kHz audio).")
    image_shape = (int(length), 1 if len(stored) == 1 else int(stored[1]))
    stored = None
  channels = 1 if stored is None or len(stored) == 2 else stored[-1]
  if channels is None:
    raise ValueError(f"{cfg.name}: image feature has an unknown channel count {stored}.")
  if stored is None:
    pass
  elif cfg.image_size is not None:
    image_shape = (int(cfg.image_size), int(cfg.image_size), int(channels))
  elif None in stored[:2]:
    raise ValueError(f"{cfg.name} images have no fixed size {stored}; set data.image_size.")
  else:
    image_shape = (int(stored[0]), int(stored[1]), int(channels))
  label = features[cfg.label_key]
  names = tuple(label.names) if getattr(label, "names", None) else tuple(
      str(i) for i in range(label.num_classes))
  return DataInfo(
      image_shape=image_shape, num_classes=int(label.num_classes), class_names=names,
      num_train=len(data_source(cfg, cfg.train_split, field="data.train_split")),
      num_test=len(data_source(cfg, cfg.eval_split, field="data.eval_split")))

