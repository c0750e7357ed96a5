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


# Float32 reduction noise, derived rather than fitted to one CPU. A run on another device or process
# count (or another CPU: vector width and thread split change XLA's summation order) sums the same
# terms in another order. Each reordered float32 sum of n terms moves by about sqrt(n) * u * sum|terms|
# (u = 2^-24, random-walk rounding); the largest sums in a step are the first conv's kernel gradient
# over 16 images x 2 views x 16 x 16 positions (n = 8,192): sqrt(8192) * 6e-8 = 5.4e-6 of the leaf's
# scale per step. Over the 4 steps a resumed run recomputes these add up to 2.2e-5, and Adam's
# normalisation m / sqrt(v) amplifies them where a gradient component cancels near zero: allow 5x
# that, 1e-4 of each leaf's largest magnitude. Measured on an AMD EPYC (the worst of 4 devices, 1
# device and 2 processes against 1 x 8): 1.2e-5.
REORDER_RTOL = 1e-4
# The online probe (state key "probe") is left out of the float comparison across device layouts (its
# tree structure is still compared, and same-layout comparisons with ``exact`` include it). It trains
# a head by Adam on standardised features: at initialisation the class probabilities are nearly the
# same for every row, so a class's gradient, the sum over rows of probability x mean-zero feature,
# cancels to almost nothing, and Adam's m / sqrt(v) turns the reorder noise left in it into full-size
# steps. Measured after 6 smoke steps (2 processes against 1 x 8): up to 25% of a leaf's largest
# magnitude in one class's column. It never feeds back into training; tests/test_online_probe.py
# checks 8 devices == 1 on a step from its zero start.
NOT_LAYOUT_STABLE = "['probe']"


def assert_same_state(actual: dict, expected: dict, *, exact: bool = False,
                      rtol: float = REORDER_RTOL) -> None:
  """Every leaf of the train state (step, parameters, BN statistics, optimizer moments) matches.

  ``exact``: bit for bit. Otherwise each float leaf may differ by ``rtol`` times its largest
  magnitude (reduction-order noise, see ``REORDER_RTOL``); integer leaves must always be equal.
  """
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(expected)]
  got, want = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(actual)] == paths
  for path, a, b in zip(paths, got, want):
    a, b = np.asarray(a), np.asarray(b)
    if exact or not np.issubdtype(b.dtype, np.floating):
      np.testing.assert_array_equal(a, b, err_msg=path)
    else:
      if path.startswith(NOT_LAYOUT_STABLE):
        continue
      scale = float(np.max(np.abs(b), initial=0.0))
      np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale, err_msg=path)


def flat_arrays(tree) -> dict[str, np.ndarray]:
  """``{"opt_state/0/mu/encoder/...": array}``: the same names for a live train state (nnx variables,
  optax named tuples) and for one restored without a target (plain dicts and lists)."""
  def name(entry):
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        return str(getattr(entry, attr))
    return str(entry)
  return {"/".join(map(name, path)): np.asarray(jax.device_get(leaf))
          for path, leaf in jax.tree.leaves_with_path(tree)}


def largest_relative_change(before: dict, after: dict) -> float:
  """max over float leaves of max|after - before| / max|after|: how far steps move the state."""
  out = 0.0
  for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.dtype.kind == "f" and a.size and np.max(np.abs(a)) > 0:
      out = max(out, float(np.max(np.abs(a - b)) / np.max(np.abs(a))))
  return out


def assert_resumed_state(actual: dict, tmp_path_factory) -> None:
  """``actual`` (a run that trained part of the way elsewhere) ends where the reference run ended.

  Float noise is allowed (``REORDER_RTOL``), and the tolerance is checked to be far below what real
  steps change, so a resume that skipped or repeated a step, or read other batches, still fails.
  """
  expected = reference(tmp_path_factory)
  assert int(actual["step"]) == int(expected["step"]) == STEPS
  assert_same_state(actual, expected)
  two_steps_earlier = final_state(reference_workdir(tmp_path_factory), step=STEPS - EVERY)
  per_step = largest_relative_change(two_steps_earlier, expected) / EVERY
  assert per_step > 100 * REORDER_RTOL, f"one step changes the state by only {per_step:.1e}"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Worker:
  """``jaxcl train`` in a subprocess on ``devices`` simulated CPU devices (see ``_train_worker.py``)."""

  def __init__(self, workdir, *, devices: int, flags=(), hooks=(), log_name: str = "worker"):
    self.log_path = os.path.join(os.fspath(workdir), f"{log_name}.log")
    os.makedirs(os.fspath(workdir), exist_ok=True)
    # The worker sets its own device count; every other XLA flag of this process (ISA, vector width)
    # is passed on, so a worker compiles the same program as the in-process reference.
    # PYTHONPATH: the worker imports this checkout's jaxcl, whatever copy pip installed.
    env = dict(os.environ, XLA_FLAGS=" ".join(
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")),
        PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, WORKER, f"--devices={devices}", *hooks, "--", "train",
           f"--workdir={workdir}", *FLAGS, *flags]
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

  def log(self) -> str:
    with open(self.log_path) as f:
      return f.read()[-4000:]

  def wait(self, expected_rc: int = 0) -> None:
    """Waits for an exit with ``expected_rc``; another status or a hang fails the test with the log."""
    try:
      rc = self.proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f"worker hung for {TIMEOUT_S}s; its log:\n{self.log()}") from None
    self._log.close()
    assert rc == expected_rc, f"worker exited with {rc}, not {expected_rc}; its log:\n{self.log()}"

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
