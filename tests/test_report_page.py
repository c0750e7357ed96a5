"""report.html: one static page with the results table, embedded pictures and the config; rendered
by a real headless browser where one is installed."""

import html.parser
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from jaxcl import report

TABLE = ("| representation | kNN (k=20) | linear probe |\n|---|---:|---:|\n"
         "| simclr (pretrained) | 96.9% | 98.9% |\n| raw pixels | 96.9% | 96.7% |")


class _Page(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.tags, self.cells, self.images = [], [], []

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    if tag == "img":
      self.images.append(dict(attrs)["src"])

  def handle_data(self, data):
    if self.tags and self.tags[-1] in ("td", "th"):
      self.cells.append(data)


def _write(tmp_path):
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "curves.png")
  return report.write_report(str(tmp_path), title="simclr on digits", table=TABLE,
                             config_text="optim.lr = 0.002  # <base> rate", facts={"steps": 300})


def test_page_has_the_table_the_pictures_and_the_escaped_config(tmp_path):
  path = _write(tmp_path)
  text = open(path, encoding="utf-8").read()
  page = _Page()
  page.feed(text)
  assert page.cells[:3] == ["representation", "kNN (k=20)", "linear probe"]
  assert "98.9%" in page.cells and "---:" not in page.cells
  assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")
  assert "&lt;base&gt; rate" in text and "http" not in text  # one file, nothing fetched


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def test_page_renders_in_a_headless_browser(tmp_path):
  browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
  if browser is None:
    # .ci/run installs Chromium and sets JAXCL_REQUIRE_BROWSER=1: in CI a missing browser fails.
    message = "no Chromium/Chrome on PATH (e.g. apt-get install chromium) to render report.html"
    if os.environ.get("JAXCL_REQUIRE_BROWSER") == "1":
      pytest.fail(message)
    pytest.skip(message)
  path = _write(tmp_path)
  shot = tmp_path / "shot.png"
  # No sandbox (CI runs as root), and none of the background connections a closed network refuses.
  subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                  f"--screenshot={shot}", "--window-size=800,600", f"file://{path}"],
                 check=True, capture_output=True, timeout=120)
  pixels = np.asarray(Image.open(shot).convert("L"))
  assert pixels.min() < 100 < pixels.max()  # text drawn on a white page, not blank
  assert os.path.getsize(shot) > 1000
