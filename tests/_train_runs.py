"""Shared by the multi-host, fault and device-count tests: one run definition, its reference, workers.

Every test trains the same tiny job, SimCLR on digits (``configs/simclr_digits.py:smoke``: SmallCNN of
widths 8-8-16, global batch 16) for ``STEPS`` steps with a checkpoint every ``EVERY`` steps, and
compares its final train state with ``reference``: the same job run once, uninterrupted, on one
process with 8 devices (this pytest process), cached for the whole session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxcl import experiment
from jaxcl.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_train_worker.py")
CONFIG = os.path.join(ROOT, "configs", "simclr_digits.py")
STEPS, EVERY = 6, 2
# A worker that neither finishes nor fails within this many seconds is a hang: fail, do not stall CI.
TIMEOUT_S = 300

FLAGS = [f"--config={CONFIG}:smoke", f"--config.steps={STEPS}",
         f"--config.train.checkpoint_every={EVERY}"]


def reference(tmp_path_factory) -> dict:
  """Final state of the uninterrupted 1-process x 8-device run (computed once per session)."""
  workdir = tmp_path_factory.getbasetemp() / "reference_1x8"
  if not (workdir / "checkpoints" / str(STEPS)).exists():
    train_here(str(workdir))
  return final_state(workdir)


def train_here(workdir: str) -> dict:
  """The job in this pytest process (1 process, 8 devices); resumes from ``workdir`` if it holds one."""
  c = experiment.load_config_file(CONFIG, "smoke")
  c.steps = STEPS
  c.train.checkpoint_every = EVERY
  return experiment.train_and_evaluate(c, workdir)


def keep_checkpoints_up_to(workdir, step: int) -> None:
  """Deletes a run's checkpoints after ``step``: what a run stopped at ``step`` would have left."""
  for path in glob.glob(os.path.join(os.fspath(workdir), "checkpoints", "*")):
    name = os.path.basename(path)
    if name.isdigit() and int(name) > step:
      shutil.rmtree(path)


def reference_workdir(tmp_path_factory) -> str:
  reference(tmp_path_factory)
  return str(tmp_path_factory.getbasetemp() / "reference_1x8")


def final_state(workdir, step: int | None = None) -> dict:
  """A run's checkpoint (default: its newest) as host arrays, whatever mesh wrote it."""
  return jax.device_get(
      checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore_arrays(step=step))


def saved_mesh_shape(workdir, step: int) -> list[int]:
  """The mesh shape checkpoint ``step`` was saved from (Orbax records it with every array)."""
  saved = ocp.StandardCheckpointHandler().metadata(
      epath.Path(os.fspath(workdir)) / "checkpoints" / str(step) / "state")
  return list(saved.tree["step"].sharding.shape)


def assert_same_state(actual: dict, expected: dict, *, rtol: float, atol: float) -> None:
  """Every leaf of the train state (step, parameters, BN statistics, optimizer moments) matches."""
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(expected)]
  got, want = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(actual)] == paths
  assert int(actual["step"]) == int(expected["step"]) == STEPS
  for path, a, b in zip(paths, got, want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=path)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Worker:
  """``jaxcl train`` in a subprocess on ``devices`` simulated CPU devices (see ``_train_worker.py``)."""

  def __init__(self, workdir, *, devices: int, flags=(), hooks=(), log_name: str = "worker"):
    self.log_path = os.path.join(os.fspath(workdir), f"{log_name}.log")
    os.makedirs(os.fspath(workdir), exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, WORKER, f"--devices={devices}", *hooks, "--", "train",
           f"--workdir={workdir}", *FLAGS, *flags]
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

  def log(self) -> str:
    with open(self.log_path) as f:
      return f.read()[-4000:]

  def wait(self) -> None:
    """Waits for a clean exit; a failure or a hang fails the test with the worker's log."""
    try:
      rc = self.proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f"worker hung for {TIMEOUT_S}s; its log:\n{self.log()}") from None
    self._log.close()
    assert rc == 0, f"worker exited with {rc}; its log:\n{self.log()}"

  def wait_for(self, predicate, what: str) -> None:
    """Polls until ``predicate()``; fails (and kills the worker) on exit or timeout."""
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
      if self.proc.poll() is not None:
        raise AssertionError(f"worker exited ({self.proc.returncode}) before {what}:\n{self.log()}")
      if time.monotonic() > deadline:
        self.kill()
        raise AssertionError(f"no {what} after {TIMEOUT_S}s:\n{self.log()}")
      time.sleep(0.1)

  def kill(self) -> int:
    """SIGKILL: no handler, no ``finally``, no Orbax ``wait_until_finished`` runs."""
    if self.proc.poll() is None:
      self.proc.kill()
    rc = self.proc.wait()
    self._log.close()
    return rc


def tmp_checkpoints(workdir) -> list[str]:
  """Orbax's temporary directories (saves started and never committed)."""
  return sorted(glob.glob(os.path.join(os.fspath(workdir), "checkpoints", "*.orbax-checkpoint-tmp*")))
