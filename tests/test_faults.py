"""Exact resume under faults: SIGKILL between checkpoints and during an async save, SIGTERM and Ctrl-C
at a known step (the step in flight is saved), corrupted checkpoints.

A training subprocess (1 process x 8 devices) is parked at a known moment by a test-only hook in
``tests/_train_worker.py`` and killed with SIGKILL (no handler, no ``finally``, no Orbax wait runs);
``jaxcl train`` on the same workdir then resumes from the newest *complete* checkpoint and must end
with the train state of a run that was never killed.
"""

import json
import os
import shutil
import signal

import pytest

from _train_runs import (EVERY, STEPS, Worker, assert_same_state, final_state,
                         keep_checkpoints_up_to, reference, reference_workdir, tmp_checkpoints)

from jaxcl.train import checkpoint, preemption


def _complete_steps(workdir) -> list[int]:
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  steps = ckpt.all_steps()
  ckpt.close()
  return steps


def _losses(workdir) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def _resume_and_compare(workdir, reference_dir, expected) -> None:
  Worker(workdir, devices=8, log_name="resumed").wait()
  # Same machine, same device count, same compiled program, same XLA flags (the worker inherits
  # them): a resumed run is bit-identical to the uninterrupted one, not merely close.
  assert_same_state(final_state(workdir), expected, exact=True)
  # The log reads as one run: what the killed run logged after checkpoint 2 was replaced, and the
  # resumed steps saw the same batches and views (same losses).
  got, want = _losses(workdir), _losses(reference_dir)
  assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
  assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)]


def test_sigkill_between_checkpoints_resumes_exactly(tmp_path, tmp_path_factory):
  expected = reference(tmp_path_factory)
  workdir = str(tmp_path / "run")
  marker = str(tmp_path / "parked")
  # Park after 3 steps, when the loop asks for the next batch: checkpoint 2 is saved (its commit is
  # awaited below), checkpoint 4 is not begun.
  w = Worker(workdir, devices=8, hooks=[f"--hang_before_step={EVERY + 1}", f"--marker={marker}"])
  w.wait_for(lambda: os.path.exists(marker), "park after 3 steps")
  w.wait_for(lambda: os.path.isdir(os.path.join(workdir, "checkpoints", str(EVERY))),
             "committed checkpoint 2")
  assert w.kill() == -9
  assert _complete_steps(workdir) == [EVERY]
  _resume_and_compare(workdir, reference_workdir(tmp_path_factory), expected)


def test_sigkill_during_async_save_never_loads_it(tmp_path, tmp_path_factory):
  expected = reference(tmp_path_factory)
  workdir = str(tmp_path / "run")
  marker = str(tmp_path / "parked")
  # Park checkpoint 4's async save after its arrays are written, before Orbax commits it.
  w = Worker(workdir, devices=8, hooks=[f"--hang_save_step={2 * EVERY}", f"--marker={marker}"])
  w.wait_for(lambda: os.path.exists(marker), "save of checkpoint 4 in flight")
  assert w.kill() == -9
  partial = tmp_checkpoints(workdir)
  assert [os.path.basename(p).split(".")[0] for p in partial] == [str(2 * EVERY)], partial
  assert os.listdir(partial[0]), "the killed save had written nothing: not a mid-save kill"
  # The half-written checkpoint is invisible: the newest complete one is 2.
  assert _complete_steps(workdir) == [EVERY]
  _resume_and_compare(workdir, reference_workdir(tmp_path_factory), expected)
  # The resumed run removed the leftover and wrote checkpoint 4 again, completely.
  assert not tmp_checkpoints(workdir)
  assert _complete_steps(workdir) == [EVERY, 2 * EVERY, 3 * EVERY]


def _signal_at_step(workdir, marker, sig, *, flags=(), workers=1):
  """Workers paused after EVERY steps (checkpoint EVERY saved) get ``sig`` (the first one only), then
  train on."""
  procs = [Worker(workdir, devices=8 // workers, flags=[*flags, *([f"--process_id={i}"] if workers > 1
                                                                  else [])],
                  hooks=[f"--pause_before_step={EVERY}", f"--marker={marker}{i}"],
                  log_name=f"signalled{i}") for i in range(workers)]
  for i, w in enumerate(procs):
    w.wait_for(lambda i=i: os.path.exists(f"{marker}{i}"), f"process {i} paused after {EVERY} steps")
  procs[0].proc.send_signal(sig)
  for i in range(workers):
    open(f"{marker}{i}.go", "w").close()
  return procs


def test_ctrl_c_asks_the_same_stop_and_a_second_one_stops_at_once():
  with preemption.StopSignals() as signals:
    assert not signals.requested(1)
    signal.raise_signal(signal.SIGINT)
    assert signals.requested(2) and signals.signal_name == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  assert preemption.Preempted(2, "SIGINT", "d").exit_code == 130
  assert preemption.Preempted(2, "SIGTERM", "d").exit_code == preemption.PREEMPTED_EXIT_CODE == 75
  # Handlers are restored afterwards: Ctrl-C is a KeyboardInterrupt again.
  with pytest.raises(KeyboardInterrupt):
    signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("sig,rc", [(signal.SIGTERM, preemption.PREEMPTED_EXIT_CODE)])
def test_stop_signal_saves_the_step_in_flight_and_resumes_exactly(sig, rc, tmp_path, tmp_path_factory):
  expected = reference(tmp_path_factory)
  workdir = str(tmp_path / "run")
  (w,) = _signal_at_step(workdir, str(tmp_path / "paused"), sig)
  w.wait(expected_rc=rc)
  log = w.log()
  name = signal.Signals(sig).name
  # The step in flight (3) finished and was saved, though checkpoints fall every 2 steps: nothing
  # since the last periodic save is lost.
  assert f"stopped by {name} after step {EVERY + 1}; checkpoint {EVERY + 1} is saved" in log, log
  assert "Traceback" not in log
  assert _complete_steps(workdir) == [EVERY, EVERY + 1]
  _resume_and_compare(workdir, reference_workdir(tmp_path_factory), expected)


def test_damaged_newest_checkpoint_resumes_from_the_older_one(tmp_path, tmp_path_factory):
  expected = reference(tmp_path_factory)
  workdir = tmp_path / "run"
  shutil.copytree(os.path.join(reference_workdir(tmp_path_factory), "checkpoints"),
                  workdir / "checkpoints")
  shutil.copy(os.path.join(reference_workdir(tmp_path_factory), "metrics.jsonl"), workdir)
  keep_checkpoints_up_to(workdir, 2 * EVERY)
  # A garbled block in checkpoint 4's parameters: same size, readable by Orbax, wrong numbers.
  block = sorted((workdir / "checkpoints" / str(2 * EVERY)).glob("state/ocdbt.process_0/d/*"),
                 key=os.path.getsize)[-1]
  data = bytearray(block.read_bytes())
  data[len(data) // 2] ^= 0xFF
  block.write_bytes(bytes(data))
  w = Worker(str(workdir), devices=8, log_name="resumed")
  w.wait()
  assert f"checkpoint {2 * EVERY} in" in w.log() and "damaged" in w.log()
  assert_same_state(final_state(str(workdir)), expected, exact=True)
  assert (workdir / "checkpoints-damaged" / str(2 * EVERY)).is_dir()


@pytest.mark.parametrize("code, text", [("ENOSPC", "No space left on device"),
                                        ("EACCES", "Permission denied")])  # workdir made read-only
def test_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path, code, text):
  workdir = str(tmp_path / "run")
  w = Worker(workdir, devices=8, hooks=[f"--fail_save_step={2 * EVERY}", f"--fail_save_errno={code}"],
             log_name=f"save_{code}")
  w.wait(expected_rc=1)
  log = w.log()
  assert f"cannot write checkpoint {2 * EVERY} to" in log and text in log, log
  assert f"the last complete one is {EVERY}" in log and "Traceback" not in log
  assert _complete_steps(workdir) == [EVERY]
