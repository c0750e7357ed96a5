"""benchmarks/_minilm.py: the model zip is unpacked into place whole or not at all, and a member that
would land outside the folder (absolute, ``..``, a link) is refused before anything is written."""

import json
import os
import stat
import sys
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import _minilm  # noqa: E402

MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize"}]


def _zip(path, extra=()):
  with zipfile.ZipFile(path, "w") as z:
    for name in ("config.json", "tokenizer.json", "1_Pooling/config.json"):
      z.writestr(name, "{}")
    z.writestr("model.safetensors", b"\0" * 16)
    z.writestr("modules.json", json.dumps(MODULES))
    for info, data in extra:
      z.writestr(info, data)
  return str(path)


def test_unpacks_once_with_the_folders_modules_json_names(tmp_path):
  folder = tmp_path / "cache" / "model"
  assert _minilm.unpack(_zip(tmp_path / "m.zip"), str(folder)) == str(folder)
  assert (folder / "model.safetensors").read_bytes() == b"\0" * 16
  assert (folder / "2_Normalize").is_dir()  # named by modules.json, absent from the zip
  assert os.listdir(tmp_path / "cache") == ["model"]  # no temporary folder left behind
  (folder / "marker").write_text("kept")
  _minilm.unpack(_zip(tmp_path / "m.zip"), str(folder))  # already complete: left as it is
  assert (folder / "marker").read_text() == "kept"


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_refuses_members_outside_the_folder(tmp_path, name):
  archive = _zip(tmp_path / "bad.zip", [(zipfile.ZipInfo(name), "x")])
  with pytest.raises(ValueError, match="outside the model folder"):
    _minilm.unpack(archive, str(tmp_path / "cache" / "model"))
  assert not (tmp_path / "cache" / "model").exists()
  assert not (tmp_path / "evil.txt").exists()
  assert os.listdir(tmp_path / "cache") == []


def test_refuses_links(tmp_path):
  link = zipfile.ZipInfo("tokenizer_link.json")
  link.external_attr = (stat.S_IFLNK | 0o777) << 16
  archive = _zip(tmp_path / "bad.zip", [(link, "/etc/passwd")])
  with pytest.raises(ValueError, match="symbolic link"):
    _minilm.unpack(archive, str(tmp_path / "cache" / "model"))


def test_incomplete_zip_leaves_nothing(tmp_path):
  archive = tmp_path / "partial.zip"
  with zipfile.ZipFile(archive, "w") as z:
    z.writestr("config.json", "{}")
    z.writestr("modules.json", json.dumps(MODULES))
  with pytest.raises(ValueError, match="lacks"):
    _minilm.unpack(str(archive), str(tmp_path / "cache" / "model"))
  assert os.listdir(tmp_path / "cache") == []


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert _minilm.cache_dir() == os.path.join(str(tmp_path), "jaxcl", "models")
