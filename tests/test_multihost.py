"""Multi-host: 2 JAX processes (4 CPU devices each, localhost coordinator, gloo collectives) train the
same job as 1 process x 8 devices, each process reading its own half of every global batch, and end
with the same train state; only process 0 writes logs, every process takes part in the Orbax saves;
their checkpoint resumes on one process; SIGTERM on one process stops both after one agreed, saved step.
Also: which flags and cluster environments start ``jax.distributed`` (recorded, not started).
"""

import glob
import json
import os
import re
import shutil
import signal

import jax
import numpy as np
import pytest
from _train_runs import (EVERY, REORDER_RTOL, STEPS, Worker, assert_resumed_state, final_state,
                         free_port, keep_checkpoints_up_to, reference_workdir, train_here)

from jaxcl.train import mesh as parallel
from jaxcl.train import preemption


def _metric_lines(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "loss" in r]


def _train_on_two_processes(workdir: str) -> None:
  """The job on 2 processes x 4 devices (checkpoints every 2 steps)."""
  flags = [f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2"]
  workers = [Worker(workdir, devices=4, flags=flags + [f"--process_id={i}"], log_name=f"process{i}")
             for i in range(2)]
  try:
    for w in workers:
      w.wait()
  finally:
    for w in workers:
      w.kill()


# One test, not two sharing a fixture: under `pytest -n 2` a shared fixture may run once per worker.
def test_two_processes_equal_one_process_and_resume_on_one(tmp_path, tmp_path_factory):
  workdir = str(tmp_path / "two_processes")
  _train_on_two_processes(workdir)
  # Same global batch, same per-example keys, same mesh size: only the order of the cross-process
  # sums differs (gloo vs in-process), so float32 reduction noise is all that may differ.
  assert_resumed_state(final_state(workdir), tmp_path_factory)

  lines, ref_lines = _metric_lines(workdir), _metric_lines(reference_workdir(tmp_path_factory))
  # One writer: each step logged once (as in the 1-process run), one TensorBoard event file.
  assert [r["step"] for r in lines] == [r["step"] for r in ref_lines]
  assert len(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))) == 1
  np.testing.assert_allclose([r["loss"] for r in lines], [r["loss"] for r in ref_lines],
                             rtol=REORDER_RTOL)
  # Collapse and divergence are visible in the logs.
  assert {"grad_norm", "update_norm", "embedding_std"} <= set(lines[0])
  assert lines[-1]["step"] == STEPS

  # A preempted 2-host job restarted on one host from checkpoint 2: the iterator states of 2
  # processes do not map onto 1, so the trainer replays the stream to step 2 and reads the same batches.
  resumed = str(tmp_path / "resumed_on_one_process")
  shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(resumed, "checkpoints"))
  keep_checkpoints_up_to(resumed, EVERY)
  assert train_here(resumed)["step"] == STEPS
  assert_resumed_state(final_state(resumed), tmp_path_factory)


_CLUSTER_VARS = ("SLURM_NTASKS", "SLURM_STEP_NODELIST", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                 "TPU_PROCESS_ADDRESSES")


@pytest.fixture
def recorded_initialize(monkeypatch):
  """Replaces ``jax.distributed.initialize`` by a recorder; clears cluster variables."""
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  for var in _CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  return calls


def test_start_from_explicit_flags(recorded_initialize):
  assert parallel.initialize_distributed(coordinator_address="10.0.0.1:1234", num_processes=4,
                                         process_id=3)
  assert recorded_initialize == [dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                                      process_id=3, local_device_ids=None)]
  # One process needs no runtime; a single machine without a cluster starts nothing.
  assert not parallel.initialize_distributed(coordinator_address="h:1", num_processes=1, process_id=0)
  assert not parallel.initialize_distributed()
  assert len(recorded_initialize) == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(coordinator_address="h:1", num_processes=2), "process_id"),
    (dict(num_processes=2, process_id=2, coordinator_address="h:1"), "process_id=2"),
])
def test_incomplete_or_wrong_flags_name_the_field(kwargs, match, recorded_initialize):
  with pytest.raises(ValueError, match=match):
    parallel.initialize_distributed(**kwargs)
  assert not recorded_initialize


@pytest.mark.parametrize("env", [
    {"SLURM_NTASKS": "16", "SLURM_STEP_NODELIST": "gpu[001-004]"},
    {"OMPI_COMM_WORLD_SIZE": "8"},
    {"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1,t1k-2,t1k-3"},
])
def test_cluster_environment_is_auto_detected(env, monkeypatch, recorded_initialize):
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  assert parallel.initialize_distributed()
  # JAX reads coordinator, count and id from the same environment.
  assert recorded_initialize == [dict(local_device_ids=None)]


def test_single_task_slurm_job_and_forced_detection(monkeypatch, recorded_initialize):
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu001")
  assert not parallel.initialize_distributed()
  assert parallel.initialize_distributed(auto=True)  # `jaxcl train --distributed` (TPU VM slices)
  assert recorded_initialize == [dict(local_device_ids=None)]


def test_sigterm_on_one_process_stops_both_at_one_saved_step(tmp_path, tmp_path_factory):
  """A preemption notice reaching one host: JAX's preemption service makes every process stop after
  the same step, which all of them save together; the job then resumes exactly."""
  workdir = str(tmp_path / "run")
  marker = str(tmp_path / "paused")
  flags = [f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2"]
  workers = [Worker(workdir, devices=4, flags=flags + [f"--process_id={i}"], log_name=f"process{i}",
                    hooks=[f"--pause_before_step={EVERY}", f"--marker={marker}{i}"])
             for i in range(2)]
  try:
    for i, w in enumerate(workers):
      w.wait_for(lambda i=i: os.path.exists(f"{marker}{i}"), f"process {i} paused")
    workers[0].proc.send_signal(signal.SIGTERM)
    for i in range(2):
      open(f"{marker}{i}.go", "w").close()
    for w in workers:
      w.wait(expected_rc=preemption.PREEMPTED_EXIT_CODE)
  finally:
    for w in workers:
      w.kill()
  stopped = [int(re.search(r"after step (\d+)", w.log()).group(1)) for w in workers]
  assert stopped[0] == stopped[1] and EVERY < stopped[0] < STEPS, stopped
  saved = sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit())
  assert saved[-1] == stopped[0], saved
  # Resumed (here on one process, which replays the stream to the agreed step) it ends exactly.
  assert train_here(workdir)["step"] == STEPS
  assert_resumed_state(final_state(workdir), tmp_path_factory)
