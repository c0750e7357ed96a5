"""jaxcl.data builders and dataset resolution: digits, cifar10 from a tarball, a mocked catalog name,
and the fast "not prepared" errors. Everything is offline and lives in tmp_path."""

import io
import os
import pickle
import sys
import tarfile
import time

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

import jaxcl.data as data

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


@pytest.fixture(scope="module")
def digits_cfg(tmp_path_factory):
  cfg = data.default_config("digits")
  cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
  return cfg


def _multiset(images, labels):
  return sorted((im.tobytes(), int(lb)) for im, lb in zip(images, labels))


def test_digits_prepared_on_first_use_with_stratified_split(digits_cfg):
  info = data.info(digits_cfg)  # Not prepared yet: prepares itself.
  assert info.image_shape == (32, 32, 1)
  assert info.num_classes == 10 and info.class_names == tuple(str(d) for d in range(10))
  assert (info.num_train, info.num_test) == (1257, 540)

  train_x, train_y = data.load_arrays(digits_cfg, "train")
  test_x, test_y = data.load_arrays(digits_cfg, "test")
  assert train_x.shape == (1257, 32, 32, 1) and train_x.dtype == np.uint8
  assert train_y.dtype == np.int32 and test_x.shape == (540, 32, 32, 1)
  assert min(train_x.min(), test_x.min()) == 0 and max(train_x.max(), test_x.max()) == 255

  per_class = np.bincount(sk_datasets.load_digits().target, minlength=10)
  train_counts = np.bincount(train_y, minlength=10)
  test_counts = np.bincount(test_y, minlength=10)
  np.testing.assert_array_equal(train_counts + test_counts, per_class)
  # Stratified 70/30: every class's test share is within one example of 30%.
  assert np.all(np.abs(test_counts - 0.3 * per_class) <= 1.0), test_counts


def test_digits_nearest_upsampling_stores_the_rescaled_pixels(tmp_path):
  cfg = data.default_config("digits")
  cfg.data_dir = str(tmp_path)
  cfg.image_size = 16
  cfg.resize_method = "nearest"
  data.prepare(cfg, progress=False)
  train_x, train_y = data.load_arrays(cfg, "train")
  test_x, test_y = data.load_arrays(cfg, "test")
  bunch = sk_datasets.load_digits()
  # Reference: values 0..16 scaled to 0..255, each pixel repeated into a 2x2 block.
  ref = np.kron(np.round(bunch.images * 255.0 / 16.0), np.ones((2, 2))).astype(np.uint8)[..., None]
  got = _multiset(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]))
  assert got == _multiset(ref, bunch.target)


def _write_cifar_tarball(directory, rng, per_batch=3, test_size=4):
  """A tiny cifar-10-python.tar.gz with the real layout; returns {split: (data rows, labels)}."""
  splits = {"train": ([], []), "test": ([], [])}
  path = os.path.join(directory, "cifar-10-python.tar.gz")
  with tarfile.open(path, "w:gz") as tar:
    def add(name, obj):
      payload = pickle.dumps(obj)
      member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      member.size = len(payload)
      tar.addfile(member, io.BytesIO(payload))

    add("batches.meta", {b"label_names": [n.encode() for n in CIFAR_NAMES],
                         b"num_cases_per_batch": per_batch})
    files = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)]
    for name, split, n in files + [("test_batch", "test", test_size)]:
      rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
      labels = [int(v) for v in rng.integers(0, 10, n)]
      add(name, {b"data": rows, b"labels": labels, b"batch_label": name.encode()})
      splits[split][0].append(rows)
      splits[split][1].extend(labels)
  return {k: (np.concatenate(v[0]), np.asarray(v[1])) for k, v in splits.items()}


def _cifar_rows_to_images(rows):
  """Independent per-pixel reading of the CIFAR row layout: channel planes of 32x32, row-major."""
  images = np.zeros((len(rows), 32, 32, 3), np.uint8)
  for c in range(3):
    for y in range(32):
      images[:, y, :, c] = rows[:, c * 1024 + y * 32: c * 1024 + y * 32 + 32]
  return images


def test_cifar10_builder_from_synthetic_tarball(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  ref = _write_cifar_tarball(str(manual), np.random.default_rng(0))
  cfg = data.default_config("cifar10")
  cfg.data_dir = str(tmp_path / "tfds")
  cfg.manual_dir = str(manual)
  with pytest.raises(data.NotPreparedError, match="jaxcl prepare-data cifar10 --manual_dir"):
    data.info(cfg)
  data.prepare(cfg, progress=False)

  info = data.info(cfg)
  assert info.image_shape == (32, 32, 3) and info.class_names == tuple(CIFAR_NAMES)
  assert (info.num_train, info.num_test) == (15, 4)
  for split in ("train", "test"):
    images, labels = data.load_arrays(cfg, split)
    rows, ref_labels = ref[split]
    assert _multiset(images, labels) == _multiset(_cifar_rows_to_images(rows), ref_labels)


def test_cifar10_prepare_without_archive_names_manual_dir(tmp_path):
  cfg = data.default_config("cifar10")
  cfg.data_dir = str(tmp_path / "tfds")
  cfg.manual_dir = str(tmp_path)
  with pytest.raises(ValueError, match="manual_dir.*cifar-10-python.tar.gz"):
    data.prepare(cfg, progress=False)


def test_catalog_name_through_mock_data_without_tensorflow(tmp_path):
  import tensorflow_datasets as tfds

  cfg = data.default_config("mnist")
  cfg.data_dir = str(tmp_path)
  cfg.image_size = 32
  # What `tfds build mnist --file_format=array_record` leaves besides the shards: the metadata that
  # marks the dataset as prepared. mock_data then serves random examples for the shards.
  builder = tfds.builder("mnist", data_dir=cfg.data_dir, file_format="array_record")
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)

  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    info = data.info(cfg)
    assert info.image_shape == (32, 32, 1) and info.num_classes == 10
    assert (info.num_train, info.num_test) == (24, 24)
    batch = next(data.train_iterator(cfg, seed=0, global_batch_size=8))
    images, labels = data.load_arrays(cfg, "test")
  assert batch["image"].shape == (8, 32, 32, 1) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and np.all((batch["label"] >= 0) & (batch["label"] < 10))
  assert images.shape == (24, 32, 32, 1) and labels.shape == (24,)
  # The mocked examples are random 28x28 images; the pipeline resized them to 32 on the host.
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012"])
def test_unprepared_dataset_fails_at_once_with_the_command(tmp_path, name):
  cfg = data.default_config(name)
  cfg.data_dir = str(tmp_path)
  start = time.perf_counter()
  with pytest.raises(data.NotPreparedError) as err:
    data.train_iterator(cfg, seed=0, global_batch_size=8)
  elapsed = time.perf_counter() - start
  assert f"jaxcl prepare-data {name} --manual_dir DIR --data_dir {tmp_path}" in str(err.value)
  assert elapsed < 1.0, f"took {elapsed:.2f}s: something waited on the network"


def test_unknown_dataset_lists_what_is_available(tmp_path):
  cfg = data.default_config("no_such_dataset")
  cfg.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match="data.name=.no_such_dataset.. Available: animal_shapes, "
                     "cifar10, digits"):
    data.info(cfg)


def test_prepared_check_uses_the_builders_version():
  from jaxcl.data import sources
  from jaxcl.data.builders import animal_shapes, cifar10, digits

  assert (str(digits.Digits.VERSION) == str(cifar10.Cifar10.VERSION)
          == str(animal_shapes.AnimalShapes.VERSION) == sources.EMBEDDED_VERSION)


def _png_builder(name, version, colours, class_names, shape=(None, None, 3)):
  """A TFDS builder jaxcl has no code for (like a catalog dataset built elsewhere) with a
  PNG-encoded Image feature; uniform images of the given colours, sizes varying by example."""
  import tensorflow_datasets as tfds
  from PIL import Image

  class PngPhotos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(version)
    code_path = None  # No checksums file to look up (and TFDS's lookup needs importlib_resources).

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=shape),
          "label": tfds.features.ClassLabel(names=class_names)}))

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split in colours}

    def _generate_examples(self, split):
      for i, colour in enumerate(colours[split]):
        size = (shape[0] or 20 + 3 * i, shape[1] or 30)
        png = io.BytesIO()
        Image.fromarray(np.full(size + (3,), colour, np.uint8)).save(png, format="PNG")
        yield i, {"image": png.getvalue(), "label": i % len(class_names)}  # Bytes: no TF needed.

  PngPhotos.name = name
  return PngPhotos


def test_dataset_prepared_elsewhere_with_png_images_is_read_by_name(tmp_path):
  colours = {"train": [(40 * i, 255 - 20 * i, 7) for i in range(6)], "validation": [(1, 2, 3)] * 2}
  builder_cls = _png_builder("tiny_photos", "2.0.0", colours, ["a", "b", "c"])
  builder_cls(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  cfg = data.default_config("tiny_photos")
  cfg.data_dir = str(tmp_path)
  cfg.image_size = 16
  cfg.eval_split = "validation"
  info = data.info(cfg)
  assert info.image_shape == (16, 16, 3) and info.class_names == ("a", "b", "c")
  assert (info.num_train, info.num_test) == (6, 2)
  images, labels = data.load_arrays(cfg, "train")
  assert images.shape == (6, 16, 16, 3)
  # A uniform image stays uniform under any resize: each output is exactly its example's colour.
  for image, label in zip(images, labels):
    matches = [np.all(image == np.asarray(c, np.uint8)) for c in colours["train"]]
    assert sum(matches) == 1 and matches.index(True) % 3 == label
  assert "tensorflow" not in sys.modules


def test_cifar10_falls_back_to_a_tfds_prepared_catalog_copy(tmp_path):
  colours = {"train": [(i, i, i) for i in range(4)], "test": [(9, 9, 9)] * 2}
  builder_cls = _png_builder("cifar10", "3.0.2", colours, CIFAR_NAMES, shape=(32, 32, 3))
  builder_cls(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  cfg = data.default_config("cifar10")
  cfg.data_dir = str(tmp_path)
  info = data.info(cfg)
  assert (info.num_train, info.num_test, info.class_names) == (4, 2, tuple(CIFAR_NAMES))
  images, _ = data.load_arrays(cfg, "test")
  np.testing.assert_array_equal(images, np.full((2, 32, 32, 3), 9, np.uint8))


def test_resize_and_crop_takes_the_centre_square():
  from jaxcl.data import transforms

  image = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
  out = transforms.resize_and_crop(image, 4, "nearest")
  # Halving with nearest samples every second pixel from index 1 (pixel centres); the 4x6 result
  # loses one column on each side to the centre crop.
  np.testing.assert_array_equal(out, image[1::2, 1::2][:, 1:5])
  np.testing.assert_array_equal(transforms.resize_and_crop(image[:4, :4], 4), image[:4, :4])


def test_animal_shapes_prepared_on_first_use_from_the_installed_package(tmp_path):
  cfg = data.default_config("animal_shapes")
  cfg.data_dir = str(tmp_path)
  info = data.info(cfg)  # prepares it: the arrays ship with the animal-shape-mnist package
  assert info.image_shape == (28, 28, 1) and info.num_classes == 10
  assert (info.num_train, info.num_test) == (8000, 2000) and info.class_names[-1] == "zebra"
  images, labels = data.load_arrays(cfg, "test")
  assert images.dtype == np.uint8 and images.shape == (2000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(labels), [200] * 10)  # stratified
  assert images.max() == 255 and images.min() == 0
  assert "animal_shape_mnist" not in sys.modules  # read as data; the package's code never ran


def _image_folder(root, layout):
  """A small folder of real PNG/JPEG files: {class: [(h, w), ...]} or a flat list of sizes."""
  from PIL import Image
  rng = np.random.default_rng(0)
  items = layout.items() if isinstance(layout, dict) else [("", layout)]
  for name, sizes in items:
    folder = root / name if name else root
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
      Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
          folder / f"{i}.{'png' if i % 2 else 'jpg'}")
  return root


def test_prepare_from_folder_by_class_through_the_cli(tmp_path, capsys):
  from jaxcl import main
  root = _image_folder(tmp_path / "imgs", {"cat": [(20, 24)] * 5, "dog": [(30, 20)] * 5})
  (root / "cat" / "README.txt").write_text("not an image: skipped")
  data_dir = str(tmp_path / "tfds")
  main.run(["jaxcl", "prepare-data", "--from-folder", str(root), "--name", "pets",
            "--image_size", "16", "--data_dir", data_dir])
  assert "--config.data.name=pets" in capsys.readouterr().out
  cfg = data.default_config("pets")
  cfg.data_dir = data_dir
  info = data.info(cfg)
  assert info.class_names == ("cat", "dog") and info.image_shape == (16, 16, 3)
  assert (info.num_train, info.num_test) == (8, 2)
  images, labels = data.load_arrays(cfg, "test")
  assert images.dtype == np.uint8 and sorted(labels) == [0, 1]  # stratified
  assert next(data.train_iterator(cfg, seed=0, global_batch_size=4))["image"].shape == (4, 16, 16, 3)
  with pytest.raises(ValueError, match="already prepared"):
    data.prepare_folder(str(root), "pets", data_dir=data_dir)


def test_prepare_from_flat_folder_reads_the_size_from_the_files(tmp_path):
  root = _image_folder(tmp_path / "flat", [(12, 12)] * 6)
  data_dir = str(tmp_path / "tfds")
  data.prepare_folder(str(root), "flat_photos", data_dir=data_dir)
  cfg = data.default_config("flat_photos")
  cfg.data_dir = data_dir
  info = data.info(cfg)
  assert info.image_shape == (12, 12, 3) and info.class_names == ("unlabeled",)


@pytest.mark.parametrize("layout, extra, kwargs, match", [
    ({"a": [(8, 8)] * 2, "": [(8, 8)]}, None, {}, "both class folders .* and images at its top"),
    ({"a": [(8, 8)] * 2, "b": [(8, 9)] * 2}, None, {}, "not all one square size .* --image_size"),
    ({"a": [(8, 8)] * 3}, "a/broken.png", {}, "broken.png is not a readable image"),
    ({"a": [(8, 8)] * 2}, None, {"name": "Bad-Name"}, "--name='Bad-Name'"),
    ({"a": [(8, 8)] * 2}, None, {"name": "digits"}, "one of jaxcl's own datasets"),
])
def test_bad_image_folders_fail_in_one_line_and_prepare_nothing(tmp_path, layout, extra, kwargs,
                                                               match):
  root = tmp_path / "imgs"
  for name, sizes in layout.items():
    _image_folder(root, {name: sizes} if name else sizes)
  if extra:
    (root / extra).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  data_dir = tmp_path / "tfds"
  with pytest.raises(ValueError, match=match) as err:
    data.prepare_folder(str(root), kwargs.get("name", "mine"), data_dir=str(data_dir))
  assert "\n" not in str(err.value)
  assert not list(data_dir.glob("**/dataset_info.json"))


# A catalog-style TFDS builder with manual files (as imagenet2012 is). TFDS reads a builder's
# resources from its package, so the test writes it as one and imports it, which registers it.
_MANUAL_BUILDER = """
import numpy as np
import tensorflow_datasets as tfds


class JaxclTestManualShapes(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put shapes.csv (a label, then 16 pixel values, per line) in DIR."

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
        "label": tfds.features.ClassLabel(names=["dark", "light"])}))

  def _split_generators(self, dl_manager):
    path = dl_manager.manual_dir / "shapes.csv"
    return {"train": self._generate_examples(path, 0), "test": self._generate_examples(path, 1)}

  def _generate_examples(self, path, parity):
    for i, line in enumerate(path.read_text().splitlines()):
      if i % 2 == parity:
        label, *pixels = map(int, line.split(","))
        yield i, {"image": np.asarray(pixels, np.uint8).reshape(4, 4, 1), "label": label}
"""


def test_catalog_builder_with_manual_files_prepares_offline_by_name(tmp_path, capsys):
  from jaxcl import main
  name, manual = "jaxcl_test_manual_shapes", tmp_path / "manual"
  package = tmp_path / "packages" / name
  package.mkdir(parents=True)
  (package / "__init__.py").write_text(_MANUAL_BUILDER)
  sys.path.insert(0, str(package.parent))
  try:
    __import__(name)
  finally:
    sys.path.remove(str(package.parent))
  manual.mkdir()
  args = ["jaxcl", "prepare-data", name, "--manual_dir", str(manual), "--data_dir", str(tmp_path)]
  with pytest.raises(SystemExit) as stop:  # the files are not there yet: one line, what to do
    main.run(args)
  err = capsys.readouterr().err.strip().splitlines()
  assert stop.value.code == 1 and "Traceback" not in "\n".join(err)
  assert "data.manual_dir=" in err[0] and "Put shapes.csv" in err[0] and "--manual_dir" in err[0]
  rng = np.random.default_rng(0)
  (manual / "shapes.csv").write_text("\n".join(
      ",".join(map(str, [i % 2, *rng.integers(0, 256, 16)])) for i in range(12)))
  main.run(args)
  cfg = data.default_config(name)
  cfg.data_dir, cfg.image_size = str(tmp_path), 4
  info = data.info(cfg)
  assert (info.num_train, info.num_test, info.class_names) == (6, 6, ("dark", "light"))
  assert next(data.train_iterator(cfg, seed=0, global_batch_size=4))["image"].shape == (4, 4, 4, 1)
