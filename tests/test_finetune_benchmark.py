"""benchmarks/finetune_vs_sentence_transformers.py end to end on a tiny BERT the test writes itself
(tests/tiny_bert.py): every cell runs and records real numbers; without torch and
sentence-transformers (the test extra has neither) the sentence-transformers cells are skipped."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import tiny_bert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "finetune_vs_sentence_transformers.py")
HAVE_ST = all(importlib.util.find_spec(m) for m in ("torch", "sentence_transformers"))


def _bench(*args, env):
  proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=1800, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  return proc.stdout


@pytest.mark.slow
def test_smoke_run_records_every_cell_and_resumes(tmp_path):
  folder, config, _ = tiny_bert.write_folder(str(tmp_path / "tiny"))
  out = tmp_path / "bench.json"
  # One device per cell as the benchmark runs them; mined data goes to a scratch data dir.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAXCL_DATA_DIR=str(tmp_path / "tfds"), PYTHONPATH=ROOT)
  args = ("--smoke", "--model", folder, "--out", out, "--work", tmp_path / "work")
  printed = _bench(*args, env=env)
  record = json.loads(out.read_text())
  cells = record["cells"]
  failed = {k: c.get("error") for k, c in cells.items() if not c.get("ok")}
  assert not failed, failed
  expected = {"bm25", "zero-shot", "mine"} | {
      f"jaxcl/{row}/0" for row in ("in-batch", "mined", "matryoshka", "cached", "uncached")}
  if HAVE_ST:
    expected |= {f"st/{row}/0" for row in ("in-batch", "mined", "matryoshka", "cached", "uncached")}
    expected |= {"check/forward", "check/export"}
  assert set(cells) == expected
  for key, cell in cells.items():
    if "ndcg@10" in cell:
      assert 0 <= cell["ndcg@10"] <= 1 and 0 <= cell["recall@100"] <= 1, key
    if key.count("/") == 2:  # a training cell
      assert cell["pairs_per_s"] > 0 and cell["peak_rss_mb"] > 50, key
  assert cells["bm25"]["ndcg@10"] > 0.3  # docstring words are in the code
  for fw in ("jaxcl", "st") if HAVE_ST else ("jaxcl",):
    assert set(cells[f"{fw}/matryoshka/0"]["dims"]) == {"16", "8", "4"}
  if HAVE_ST:
    # The same tiny model through both frameworks' forward passes, before and after export.
    assert cells["check/forward"]["cosine_min"] > 0.9999, cells["check/forward"]
    assert cells["check/export"]["cosine_min"] > 0.9999, cells["check/export"]
  assert "| fine-tuned, in-batch | jaxcl | 1 |" in printed

  # Resumable: a rerun finds every cell done and runs nothing (the record is unchanged).
  before = out.read_text()
  _bench(*args, env=env)
  assert out.read_text() == before
