"""The manual builds strictly, and README.md links only to what exists.

``mkdocs build --strict`` fails on a dead link or anchor, a page missing from the nav, a nav entry to a
missing file, or a docstring the API reference cannot render.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_manual_builds_strictly(tmp_path):
  done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                         str(tmp_path / "site"), "--config-file", os.path.join(ROOT, "mkdocs.yml")],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  assert (tmp_path / "site" / "api" / "index.html").exists()
  api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
  assert "nt_xent" in api  # the reference was generated from the docstrings, not left empty


def test_readme_links_point_at_files():
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  targets = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in t]
  assert targets, "README.md links to nothing in the repository"
  missing = [t for t in targets if not os.path.exists(os.path.join(ROOT, t))]
  assert not missing, f"README.md links to missing files: {missing}"


def test_readme_is_a_front_door():
  lines = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
  assert len(lines) <= 200, f"README.md has {len(lines)} lines; the manual (docs/) holds the rest"


def _report():
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import report  # pylint: disable=g-import-not-at-top
  return report


def test_every_table_block_matches_its_json():
  stale = _report().stale()
  assert not stale, (f"tables differ from benchmarks/results/*.json: {stale}; "
                     "run python benchmarks/report.py --readme")


def test_a_changed_number_or_missing_file_is_caught(tmp_path):
  report = _report()
  table = report.render("cpc")
  block = f"<!-- table: cpc -->\n{table}<!-- /table -->"
  assert report.rewrite(block) == block
  typed = block.replace(table.splitlines()[2], table.splitlines()[2].replace("|", "| 99.9 |", 1))
  assert report.rewrite(typed) == block  # a typed-over row is put back from the JSON
  empty = str(tmp_path)  # a results folder without the file
  with pytest.raises(ValueError, match="does not exist"):
    report.rewrite(block, empty)
  assert report.rewrite(block.replace(table, "*Not generated: no file yet.*\n"), empty)
  with pytest.raises(KeyError, match="unknown table"):
    report.rewrite("<!-- table: no_such -->\n<!-- /table -->")


def test_benchmark_tables_are_generated_or_marked():
  """Every pipe table of the benchmarks page sits in a generated block or says it is not generated."""
  text = open(os.path.join(ROOT, "docs", "benchmarks.md"), encoding="utf-8").read()
  outside = _report().BLOCK.sub("", text)
  tables = re.findall(r"(?:^\|.*\n)+", outside, flags=re.MULTILINE)
  assert not tables, f"tables typed by hand in docs/benchmarks.md: {[t[:60] for t in tables]}"


def test_index_page_gathers_every_table(tmp_path):
  report = _report()
  for name in os.listdir(report.RESULTS):
    if name.endswith((".json", ".png")):
      (tmp_path / name).write_bytes(open(os.path.join(report.RESULTS, name), "rb").read())
  page = open(report.write_index(str(tmp_path)), encoding="utf-8").read()
  for name in report.TABLES:
    if report.render(name) is not None:
      assert f"<h2>{name}</h2>" in page, name
  committed = open(os.path.join(report.RESULTS, "index.html"), encoding="utf-8").read()
  assert committed == page, "benchmarks/results/index.html is stale: run python benchmarks/report.py"


def test_ci_runs_the_readme_test_command():
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  command = next(line for line in readme.splitlines() if "pytest" in line and line.startswith("python3"))
  install, test = command.split(" && ")
  ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
  assert f"{install} || exit 1" in ci and test in ci, f".ci/run does not run the README's {command!r}"
