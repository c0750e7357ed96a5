"""The manual builds strictly, and README.md links only to what exists.

``mkdocs build --strict`` fails on a dead link or anchor, a page missing from the nav, a nav entry to a
missing file, or a docstring the API reference cannot render.
"""

import os
import re
import subprocess
import sys

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
