"""Hostile data files: a CIFAR-10 archive that would run code, damaged or mislabeled archives, a
killed preparation, and an image that claims more pixels than memory holds. Each must fail with one
line naming the file and the fix, run nothing, and leave nothing a later run would read."""

import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

import jaxcl.data as data
from jaxcl import main
from jaxcl.data import images
from jaxcl.data.builders import cifar10

_NAMES = [n.encode() for n in cifar10.LABEL_NAMES]


def _batch(rng, n=2):
  return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
          b"labels": [int(v) for v in rng.integers(0, 10, n)], b"batch_label": b"b"}


def _members(seed=0):
  """The real archive's members, pickled, with two rows per batch."""
  rng = np.random.default_rng(seed)
  members = {"batches.meta": pickle.dumps({b"label_names": _NAMES, b"num_cases_per_batch": 2})}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    members[name] = pickle.dumps(_batch(rng))
  return members


def _write_archive(manual, members):
  path = os.path.join(manual, cifar10.ARCHIVE)
  with tarfile.open(path, "w:gz") as tar:
    for name, payload in members.items():
      info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return path


def _cfg(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir(exist_ok=True)
  cfg = data.default_config("cifar10")
  cfg.data_dir = str(tmp_path / "tfds")
  cfg.manual_dir = str(manual)
  return cfg


class _OpensAFile:
  """Unpickling this calls open(path, "w"): what a hostile batches.meta can do."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return open, (self.path, "w")


def _assert_nothing_prepared(cfg):
  with pytest.raises(data.NotPreparedError):
    data.check_prepared(cfg)
  root = os.path.join(cfg.data_dir, "cifar10")
  assert not os.path.exists(root) or not os.listdir(root), os.listdir(root)


def test_the_payload_is_live_under_plain_pickle(tmp_path):
  target = tmp_path / "created"
  pickle.loads(pickle.dumps(_OpensAFile(str(target)))).close()
  assert target.exists()  # So the tests below would catch a reader that runs it.


def test_malicious_meta_runs_nothing_and_fails_in_one_line(tmp_path):
  cfg = _cfg(tmp_path)
  target = tmp_path / "pwned"
  meta = pickle.dumps(_OpensAFile(str(target)))
  _write_archive(cfg.manual_dir, {**_members(), "batches.meta": meta})
  with pytest.raises(ValueError, match="batches.meta asks to load .*open.* malicious") as err:
    data.prepare(cfg, progress=False)
  assert "\n" not in str(err.value) and "re-download" in str(err.value)
  assert not target.exists()
  _assert_nothing_prepared(cfg)


def test_malicious_batch_through_the_cli_prints_one_line_and_exits_1(tmp_path, capsys):
  cfg = _cfg(tmp_path)
  target = tmp_path / "pwned"
  _write_archive(cfg.manual_dir, {**_members(), "test_batch": pickle.dumps(
      {b"data": _OpensAFile(str(target)), b"labels": [0]})})
  with pytest.raises(SystemExit) as exit_info:
    main.run(["jaxcl", "prepare-data", "cifar10", "--manual_dir", cfg.manual_dir,
              "--data_dir", cfg.data_dir])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert "Traceback" not in err
  # Above it are TFDS's progress bars; the error is the last two lines.
  message, hint = err.strip().splitlines()[-2:]
  assert message.startswith("jaxcl prepare-data: UnsafePickleError: ") and "test_batch" in message
  assert "may be malicious" in message and hint == "(set JAXCL_TRACEBACK=1 for the traceback)"
  assert not target.exists()
  # The train split was written before test_batch was read; none of it is left to be read.
  _assert_nothing_prepared(cfg)


def _truncated(members):
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for name, payload in members.items():
      info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return buf.getvalue()[: len(buf.getvalue()) * 2 // 3]


_BAD_ARCHIVES = {
    "zero_bytes": (lambda: b"", "damaged"),
    "truncated": (lambda: _truncated(_members()), "damaged"),
    "a_zip_file": (lambda: b"PK\x03\x04" + bytes(200), "damaged"),
}


@pytest.mark.parametrize("case", sorted(_BAD_ARCHIVES))
def test_damaged_archive_file_fails_in_one_line(tmp_path, case):
  cfg = _cfg(tmp_path)
  make, match = _BAD_ARCHIVES[case]
  (tmp_path / "manual" / cifar10.ARCHIVE).write_bytes(make())
  with pytest.raises(ValueError, match=match) as err:
    data.prepare(cfg, progress=False)
  message = str(err.value)
  assert "\n" not in message and cifar10.ARCHIVE in message and "re-download" in message
  _assert_nothing_prepared(cfg)


# NumPy pickles an array as an empty one that __setstate__ fills; this one asks for 10^12 elements.
_HUGE_EMPTY_ARRAY = (b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                     b"L1000000000000L\n\x85U\x01b\x87R.")


def _with(member, payload):
  return lambda: {**_members(), member: payload}


def _batch_with(**fields):
  batch = _batch(np.random.default_rng(1))
  batch.update({k.encode(): v for k, v in fields.items()})
  return pickle.dumps(batch)


_BAD_MEMBERS = {
    "meta_not_a_pickle": (_with("batches.meta", b"airplane\nautomobile\n"),
                          "batches.meta is damaged"),
    "meta_zero_bytes": (_with("batches.meta", b""), "batches.meta is damaged"),
    "meta_truncated": (_with("batches.meta", _members()["batches.meta"][:20]),
                       "batches.meta is damaged"),
    "meta_without_names": (_with("batches.meta", pickle.dumps({b"x": 1})),
                           "no list of label_names"),
    "batch_not_a_pickle": (_with("data_batch_2", b"\x00" * 64), "data_batch_2 is damaged"),
    "batch_not_a_dict": (_with("data_batch_2", pickle.dumps([1, 2])), "data_batch_2 is not a"),
    "label_10": (_with("data_batch_3", _batch_with(labels=[0, 10])),
                 "data_batch_3: label 10 of row 1 is not a class index"),
    "label_minus_1": (_with("test_batch", _batch_with(labels=[-1, 0])),
                      "test_batch: label -1 of row 0 is not a class index"),
    "labels_short": (_with("data_batch_1", _batch_with(labels=[3])), "not a list of 2 ints"),
    "rows_of_3000_bytes": (_with("data_batch_4", _batch_with(data=np.zeros((2, 3000), np.uint8))),
                           r"data_batch_4: data is uint8 \(2, 3000\), not uint8 \[N, 3072\]"),
    "float_rows": (_with("data_batch_4", _batch_with(data=np.zeros((2, 3072)))), "float64"),
    "array_of_10**12_elements": (_with("data_batch_1", _HUGE_EMPTY_ARRAY),
                                 "data_batch_1 is damaged"),
    "batch_missing": (lambda: {k: v for k, v in _members().items() if k != "data_batch_5"},
                      r"lacks \['data_batch_5'\]"),
}


@pytest.mark.parametrize("case", sorted(_BAD_MEMBERS))
def test_bad_member_fails_in_one_line_naming_it(tmp_path, case):
  cfg = _cfg(tmp_path)
  make, match = _BAD_MEMBERS[case]
  _write_archive(cfg.manual_dir, make())
  with pytest.raises(ValueError, match=match) as err:
    data.prepare(cfg, progress=False)
  assert "\n" not in str(err.value) and "re-download" in str(err.value)
  _assert_nothing_prepared(cfg)


def test_member_over_the_size_bound_is_refused_before_reading(tmp_path, monkeypatch):
  cfg = _cfg(tmp_path)
  _write_archive(cfg.manual_dir, _members())
  monkeypatch.setattr(cifar10, "MAX_MEMBER_BYTES", 1000)  # Real bound: 200 MB; batches here ~6 kB.
  load = cifar10._load  # pylint: disable=protected-access

  def load_only_small(file, where):
    assert where.endswith("batches.meta"), f"read {where}, which is over the bound"
    return load(file, where)

  monkeypatch.setattr(cifar10, "_load", load_only_small)
  with pytest.raises(ValueError, match=r"data_batch_1 is [\d,]+ bytes, more than any CIFAR-10"):
    data.prepare(cfg, progress=False)
  _assert_nothing_prepared(cfg)


def _py2_batch_pickle(rows, labels):
  """A batch pickled the way the real files are (Python 2 cPickle, protocol 2, numpy.core names):
  byte strings as BINSTRING opcodes and the array through numpy.core.multiarray._reconstruct."""
  def string(b):
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

  def int4(v):
    return b"J" + struct.pack("<i", v)

  array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b")
           + b"\x87R(K\x01" + int4(rows.shape[0]) + int4(rows.shape[1]) + b"\x86"
           + b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R(K\x03" + string(b"|")
           + b"NNN" + int4(-1) + int4(-1) + b"K\x00tb\x89" + string(rows.tobytes()) + b"tb")
  label_list = b"](" + b"".join(int4(v) for v in labels) + b"e"
  return (b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list
          + string(b"batch_label") + string(b"training batch 1 of 5") + b"u.")


def test_python2_pickles_like_the_real_files_load():
  rows = np.random.default_rng(2).integers(0, 256, (3, 3072), dtype=np.uint8)
  payload = _py2_batch_pickle(rows, [0, 9, 4])
  assert pickle.loads(payload, encoding="bytes")[b"labels"] == [0, 9, 4]  # The reference reading.
  # pylint: disable=protected-access
  batch = cifar10._load(io.BytesIO(payload), "data_batch_1")
  got_rows, got_labels = cifar10._checked_batch("data_batch_1", batch)
  np.testing.assert_array_equal(got_rows, rows)
  assert got_rows.dtype == np.uint8 and got_labels == [0, 9, 4]


def test_folder_left_by_a_killed_prepare_is_not_read(tmp_path):
  cfg = _cfg(tmp_path)
  # TFDS writes into `incomplete.<id>_<version>` and renames it when done; a killed process leaves
  # the folder, dataset_info.json possibly included, with half-written shards.
  leftover = tmp_path / "tfds" / "cifar10" / "incomplete.3f2a_3.0.2"
  leftover.mkdir(parents=True)
  (leftover / "dataset_info.json").write_text('{"fileFormat": "array_record"}')
  with pytest.raises(data.NotPreparedError, match="jaxcl prepare-data cifar10"):
    data.check_prepared(cfg)
  from jaxcl.data import sources
  assert sources.prepared_datasets(cfg.data_dir) == []


def _png_header(width, height):
  """A PNG that declares width x height RGB pixels but holds no image data."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body
                              + struct.pack(">I", zlib.crc32(kind + body)))
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_image_over_the_pixel_limit_is_refused_from_its_header():
  bomb = _png_header(100_000, 100_000)  # 10^10 pixels (30 GB decoded) in 45 bytes.
  with pytest.raises(ValueError, match="bomb.png is .*over jaxcl's limit") as err:
    images.decode_image(bomb, source="bomb.png")
  assert "\n" not in str(err.value)
  side = int(images.MAX_IMAGE_PIXELS ** 0.5) + 1
  with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ValueError, match="over jaxcl"):
    images.decode_image(_png_header(side, side), source="just_over.png")
  # Importing jaxcl.data set Pillow's limit, so other Pillow decodes in the process (TFDS decoding a
  # catalog dataset) refuse the bomb too.
  assert Image.MAX_IMAGE_PIXELS == images.MAX_IMAGE_PIXELS
  with pytest.raises(Image.DecompressionBombError):
    Image.open(io.BytesIO(bomb))


def test_images_within_the_limit_decode_and_damaged_ones_fail_in_one_line():
  png = io.BytesIO()
  pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
  Image.fromarray(pixels).save(png, format="PNG")
  np.testing.assert_array_equal(images.decode_image(png.getvalue(), source="ok.png"), pixels)
  for name, payload in [("cut.png", png.getvalue()[:-20]), ("empty.png", b""),
                        ("text.png", b"not an image"), ("no_data.png", _png_header(4, 5))]:
    with pytest.raises(ValueError, match=f"{name} is not a readable image") as err:
      images.decode_image(payload, source=name)
    assert "\n" not in str(err.value)


# --- Animal-Shape: the arrays an installed package ships (jaxcl/data/builders/animal_shapes.py) ------


def _animal_files(folder, images=None, labels=None):
  """The package's two gzipped pickles in ``folder`` (a real-shaped pair unless given)."""
  from jaxcl.data.builders import animal_shapes
  rng = np.random.default_rng(0)
  arrays = {
      "images": rng.integers(0, 256, (animal_shapes.NUM_IMAGES, 28, 28), dtype=np.uint8),
      "labels": np.repeat(np.arange(10, dtype=np.int64), animal_shapes.NUM_IMAGES // 10)}
  payloads = {k: pickle.dumps(v, protocol=4) for k, v in arrays.items()}
  payloads.update({k: v for k, v in (("images", images), ("labels", labels)) if v is not None})
  for kind, payload in payloads.items():
    with open(os.path.join(folder, animal_shapes._FILES[kind]), "wb") as f:  # pylint: disable=protected-access
      f.write(gzip.compress(payload) if not isinstance(payload, Raw) else payload.data)


class Raw:
  """File bytes written as they are (not gzipped)."""

  def __init__(self, data):
    self.data = data


def _animal_cfg(tmp_path, monkeypatch, **files):
  from jaxcl.data.builders import animal_shapes
  folder = tmp_path / "package"
  folder.mkdir()
  _animal_files(str(folder), **files)
  monkeypatch.setattr(animal_shapes, "data_dir", lambda: str(folder))
  cfg = data.default_config("animal_shapes")
  cfg.data_dir = str(tmp_path / "tfds")
  return cfg


def _assert_animals_not_prepared(cfg):
  root = os.path.join(cfg.data_dir, "animal_shapes")
  left = [p for p, _, files in os.walk(root) if "dataset_info.json" in files]
  assert not left, left


@pytest.mark.parametrize("files, match", [
    (dict(labels="pwn"), "asks to load .*open.* may be malicious"),
    (dict(images=Raw(b"")), "is damaged or not the Animal-Shape images"),
    (dict(images=Raw(gzip.compress(b"\x80\x04")[:-6])), "is damaged"),
    (dict(images=Raw(gzip.compress(bytes(9 * 2**20)))), "inflates to more than 8,388,608 bytes"),
    (dict(labels=pickle.dumps(np.zeros(5, np.int64))), r"holds \(\(5,\), dtype\('int64'\)\)"),
    (dict(labels=pickle.dumps(np.full(10_000, 10, np.int64))), "labels outside 0..9"),
], ids=["runs-code", "zero-bytes", "truncated", "gzip-bomb", "wrong-shape", "bad-labels"])
def test_hostile_animal_shapes_files_fail_in_one_line_and_prepare_nothing(tmp_path, monkeypatch,
                                                                          files, match):
  target = tmp_path / "pwned"
  if files.get("labels") == "pwn":
    files["labels"] = pickle.dumps(_OpensAFile(str(target)))
  cfg = _animal_cfg(tmp_path, monkeypatch, **files)
  with pytest.raises(ValueError, match=match) as err:
    data.info(cfg)  # prepared on first use
  assert "\n" not in str(err.value) and "animal-shape-mnist" in str(err.value)
  assert not target.exists()
  _assert_animals_not_prepared(cfg)
