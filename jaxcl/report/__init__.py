"""What a user sees of a run: metrics files, a progress bar and pictures.

Public API::

  MetricsWriter(workdir, *, enabled=True, resume_step=None)
      .write(step, {"loss": 1.2, ...})    -> appends to workdir/metrics.jsonl and TensorBoard events
      .write_text(tag, text)              -> e.g. the config, to TensorBoard's text tab
      .close()                            (also a context manager)
  read_metrics(metrics_jsonl_path) -> {key: (steps np.ndarray, values np.ndarray)}
  ProgressBar(total_steps, *, batch_size, initial_step=0, enabled=True, unit="img")
      .update(step, loss=..., **scalars)  -> step, loss, images/s and ETA on one line
      .write(message)                     -> print without breaking the bar
      .close()
  plot_curves(metrics_jsonl_path, out_png, *, keys=None) -> out_png
  plot_embedding_map(features, labels, out_png, *, method="tsne", class_names=None,
                     max_points=2000, seed=0) -> out_png

Pass ``enabled=jax.process_index() == 0`` so only one process of a multi-host run writes files and
draws the bar. TensorBoard events come from tensorboardX, which does not need TensorFlow;
``tensorboard --logdir WORKDIR`` reads them. Pictures are drawn on a bare ``matplotlib.figure.Figure``
(no pyplot state, no display needed).
"""

from jaxcl.report.log import METRICS_FILE, TENSORBOARD_DIR, MetricsWriter, read_metrics
from jaxcl.report.page import write_page, write_report
from jaxcl.report.plots import plot_curves, plot_embedding_map
from jaxcl.report.progress import ProgressBar

__all__ = ["METRICS_FILE", "TENSORBOARD_DIR", "MetricsWriter", "ProgressBar", "plot_curves",
           "plot_embedding_map", "read_metrics", "write_page", "write_report"]
