"""The core install needs no extra: image runs import and set up without the text, signal, shape
and ANN packages, and a run that needs one fails at setup in one line that names the extra."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxcl import extras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = tuple(m for modules in extras.EXTRAS.values() for m in modules)

# Runs first in the child: every package of every extra fails to import (and to be found), as on a
# machine where only the core is installed.
BLOCKER = textwrap.dedent(f"""
    import sys
    BLOCKED = {BLOCKED!r}
    class Blocker:
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
    sys.meta_path.insert(0, Blocker())
""")


def _child(code: str, tmp_path) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  env.pop("JAXCL_TRACEBACK", None)
  return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def test_the_blocker_blocks():
  proc = subprocess.run([sys.executable, "-c", BLOCKER + "import tokenizers"], capture_output=True,
                        text=True, check=False)
  assert proc.returncode != 0 and "blocked by the test" in proc.stderr


@pytest.mark.slow
def test_core_imports_and_sets_up_an_image_run_without_any_extra(tmp_path):
  proc = _child(f"""
      import sys
      import jaxcl
      from jaxcl import augment, data, evaluate, experiment, losses, methods, models, serve, train
      from jaxcl.data.builders import animal_shapes, plaid  # importable; their data needs extras
      config = experiment.load_config_file("configs/simclr_digits.py", "smoke")
      config.data.data_dir = {str(tmp_path / "data")!r}
      experiment.validate(config, num_devices=8)   # prepares digits: the default job's data
      loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
      assert not loaded, loaded
      print("OK")
  """, tmp_path)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


@pytest.mark.slow
def test_a_run_that_needs_an_extra_fails_in_one_line_naming_it(tmp_path):
  proc = _child(f"""
      import pytest
      from jaxcl import data, experiment, extras
      from jaxcl.serve import bm25
      config = experiment.load_config_file("configs/retrieval_stdlib_code.py", "smoke")
      with pytest.raises(extras.MissingExtra) as err:
        experiment.validate(config, num_devices=8)
      assert str(err.value) == "text retrieval needs the 'text' extra: pip install 'jaxcl[text]'"
      with pytest.raises(extras.MissingExtra, match=r"BM25 needs the 'text' extra"):
        bm25.bm25_search(["a doc"], ["a query"])
      for name, extra in (("plaid", "signals"), ("animal_shapes", "shapes")):
        cfg = data.default_config(name)
        cfg.data_dir = {str(tmp_path / "data")!r}
        with pytest.raises(extras.MissingExtra) as err:
          data.info(cfg)
        assert str(err.value).endswith(f"needs the '{{extra}}' extra: pip install 'jaxcl[{{extra}}]'")
      from jaxcl import main
      main.run(["jaxcl", "train", "--config", "configs/retrieval_stdlib_code.py:smoke",
                "--workdir", {str(tmp_path / "run")!r}])
  """, tmp_path)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stderr.strip() == ("jaxcl train: text retrieval needs the 'text' extra: pip install "
                                 "'jaxcl[text]'"), proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / "run" / "checkpoints")  # failed before anything was built


def test_require_names_the_extra_and_rejects_a_package_of_another_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "bm25s", None)  # import bm25s raises ImportError
  with pytest.raises(extras.MissingExtra, match=r"^BM25 needs the 'text' extra: pip install "
                                                r"'jaxcl\[text\]'$"):
    extras.require("bm25s", "text", "BM25")
  with pytest.raises(KeyError, match="not a package of jaxcl's extra 'ann'"):
    extras.require("bm25s", "ann", "BM25")
