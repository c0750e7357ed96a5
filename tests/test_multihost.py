"""Multi-host: 2 JAX processes (4 CPU devices each, localhost coordinator, gloo collectives) train the
same job as 1 process x 8 devices, each process reading its own half of every global batch, and end
with the same train state; only process 0 writes logs, every process takes part in the Orbax saves.
"""

import glob
import json
import os

import numpy as np
from _train_runs import (STEPS, Worker, assert_same_state, final_state, free_port, reference,
                         reference_workdir)


def _metric_lines(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "loss" in r]


def test_two_processes_equal_one_process(tmp_path, tmp_path_factory):
  expected = reference(tmp_path_factory)
  workdir = str(tmp_path / "run")
  flags = [f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2"]
  workers = [Worker(workdir, devices=4, flags=flags + [f"--process_id={i}"], log_name=f"process{i}")
             for i in range(2)]
  try:
    for w in workers:
      w.wait()
  finally:
    for w in workers:
      w.kill()
  # Same global batch, same per-example keys, same mesh size: only the order of the cross-process
  # sums differs (gloo vs in-process), so float32 rounding is all that may differ.
  assert_same_state(final_state(workdir), expected, rtol=1e-5, atol=1e-6)

  lines, ref_lines = _metric_lines(workdir), _metric_lines(reference_workdir(tmp_path_factory))
  # One writer: each step logged once (as in the 1-process run), one TensorBoard event file.
  assert [r["step"] for r in lines] == [r["step"] for r in ref_lines]
  assert len(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))) == 1
  np.testing.assert_allclose([r["loss"] for r in lines], [r["loss"] for r in ref_lines], rtol=1e-5)
  # Collapse and divergence are visible in the logs.
  assert {"grad_norm", "update_norm", "embedding_std"} <= set(lines[0])
  assert lines[-1]["step"] == STEPS
