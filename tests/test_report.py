"""Metrics files, TensorBoard events, the progress bar and the pictures."""

import glob
import io
import json
import os

import numpy as np
import pytest

from jaxcl import report


def test_metrics_writer_jsonl_and_tensorboard(tmp_path):
  with report.MetricsWriter(tmp_path) as writer:
    writer.write(1, {"loss": np.float32(2.5), "lr": 0.1})
    writer.write(2, {"loss": 2.0, "knn": np.array(0.5)})
    writer.write(3, {"loss": float("nan")})
    writer.write_text("config", "method: simclr")
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert [r["step"] for r in records] == [1, 2, 3]
  assert records[0]["loss"] == 2.5 and records[0]["lr"] == pytest.approx(0.1)
  assert records[1]["knn"] == 0.5
  assert records[2]["loss"] is None  # JSON has no NaN
  events = glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
  assert len(events) == 1 and os.path.getsize(events[0]) > 0

  series = report.read_metrics(tmp_path / "metrics.jsonl")
  np.testing.assert_array_equal(series["loss"][0], [1, 2])
  np.testing.assert_allclose(series["loss"][1], [2.5, 2.0])


def test_metrics_writer_resume_and_disabled(tmp_path):
  with report.MetricsWriter(tmp_path) as writer:
    for step in (10, 20, 30):
      writer.write(step, {"loss": 1.0 / step})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "loss"')  # cut short by the kill
  with report.MetricsWriter(tmp_path, resume_step=20) as writer:
    writer.write(30, {"loss": 0.5})
  steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
  assert steps == [10, 20, 30]
  assert report.read_metrics(tmp_path / "metrics.jsonl")["loss"][1][-1] == 0.5

  other = tmp_path / "other"
  writer = report.MetricsWriter(other, enabled=False)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not other.exists()
  with report.MetricsWriter(tmp_path / "x") as writer, pytest.raises(ValueError, match="scalar"):
    writer.write(1, {"loss": np.ones(3)})


def test_progress_bar_shows_loss_and_rate(monkeypatch):
  times = iter([0.0, 1.0, 2.0])
  monkeypatch.setattr(report.progress.time, "perf_counter", lambda: next(times))
  stream = io.StringIO()
  bar = report.ProgressBar(100, batch_size=64, initial_step=10, file=stream)
  bar.update(11, loss=3.0)
  bar.update(15, loss=2.0, lr=0.5)  # 4 steps * 64 images in 1 s
  assert bar.examples_per_second == pytest.approx(256.0)
  bar.update(16, loss=1.0)  # 64 images/s, smoothed with weight 0.3
  assert bar.examples_per_second == pytest.approx(256.0 + 0.3 * (64.0 - 256.0))
  bar.close()
  text = stream.getvalue()
  assert "16/100" in text and "loss=1.0000" in text and "img/s=198" in text


def test_plots_write_pngs(tmp_path):
  with report.MetricsWriter(tmp_path) as writer:
    for step in range(0, 200, 10):
      writer.write(step, {"loss": 5.0 * np.exp(-step / 60) + 1.0, "lr": min(1.0, step / 50)})
      if step % 50 == 0:
        writer.write(step, {"knn": 0.5 + step / 500})
    writer.write(200, {"linear": 0.9})  # a one-off value: not drawn by default
  curves = report.plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", title="demo")
  from matplotlib.image import imread

  height, width = imread(curves).shape[:2]
  assert width > 3 * height  # loss, knn, lr in one row; "linear" (one point) left out
  with pytest.raises(ValueError, match="not in"):
    report.plot_curves(tmp_path / "metrics.jsonl", tmp_path / "x.png", keys=["nope"])

  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(5), 60)
  feats = rng.normal(size=(5, 16))[labels] * 4 + rng.normal(size=(300, 16))
  tsne = report.plot_embedding_map(
      feats, labels, tmp_path / "tsne.png", class_names=[f"c{i}" for i in range(5)], max_points=200
  )
  pca = report.plot_embedding_map(feats, labels, tmp_path / "pca.png", method="pca")
  for path in (curves, tsne, pca):
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="method"):
    report.plot_embedding_map(feats, labels, tmp_path / "u.png", method="umap")
