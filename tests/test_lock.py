"""One workdir, one writer: the lock of ``jaxcl.train.lock`` between real processes."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from jaxcl.train import lock as lock_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny holder: takes the lock, says so, and sleeps (no JAX, no training).
HOLDER = ("import importlib.util, sys, time\n"
          f"spec = importlib.util.spec_from_file_location('lock', {os.path.join(ROOT, 'jaxcl', 'train', 'lock.py')!r})\n"
          "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
          "with lock.WorkdirLock(sys.argv[1], command='holder script'):\n"
          "  print('locked', flush=True)\n"
          "  time.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
  """A live process holding ``tmp_path/run``'s lock; killed (SIGKILL) at the end if still alive."""
  workdir = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "locked"
  yield proc, workdir
  if proc.poll() is None:
    proc.kill()
    proc.wait()


def _record(workdir) -> dict:
  with open(os.path.join(workdir, lock_lib.LOCK_NAME)) as f:
    return json.load(f)


def test_live_holder_refuses_a_second_run_naming_it(holder):
  proc, workdir = holder
  record = _record(workdir)
  assert record["pid"] == proc.pid and record["host"] == socket.gethostname()
  assert record["command"] == "holder script" and record["started"].endswith("Z")
  with pytest.raises(lock_lib.WorkdirLocked, match=rf"in use by pid {proc.pid} on host "
                     rf"{socket.gethostname()}, started .*holder script.*another --workdir"):
    lock_lib.WorkdirLock(str(workdir)).acquire()
  assert _record(workdir)["pid"] == proc.pid  # the refused run changed nothing


def test_sigkilled_holder_is_taken_over_with_a_warning(holder):
  proc, workdir = holder
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.exists(workdir / lock_lib.LOCK_NAME)  # a killed holder leaves its record behind
  warnings = []
  with lock_lib.WorkdirLock(str(workdir), warn=warnings.append) as held:
    assert held.taken_over["pid"] == proc.pid
    assert _record(workdir)["pid"] == os.getpid()
  assert len(warnings) == 1 and f"pid {proc.pid}" in warnings[0] and "no longer running" in warnings[0]
  assert not os.path.exists(workdir / lock_lib.LOCK_NAME)


def test_holder_exiting_normally_removes_the_lock(holder):
  proc, workdir = holder
  proc.send_signal(signal.SIGTERM)  # the holder's `with` does not run on SIGTERM's default action...
  proc.wait()
  warnings = []
  with lock_lib.WorkdirLock(str(workdir), warn=warnings.append):
    pass
  assert len(warnings) == 1  # ...so its record is left and taken over
  with lock_lib.WorkdirLock(str(workdir), warn=warnings.append):
    pass
  assert len(warnings) == 1  # a released lock leaves nothing to take over


def test_reused_pid_does_not_hold_the_lock(tmp_path):
  """A record naming a live but unrelated process (its pid reused) does not block: flock is free."""
  with open(tmp_path / lock_lib.LOCK_NAME, "w") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getppid(), "started": "earlier"}, f)
  warnings = []
  with lock_lib.WorkdirLock(str(tmp_path), warn=warnings.append):
    pass
  assert "no longer running" in warnings[0]


def test_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path):
  path = tmp_path / lock_lib.LOCK_NAME
  path.write_text(json.dumps({"host": "other-node-17", "pid": 4242, "started": "2026-01-01T00:00:00Z"}))
  with pytest.raises(lock_lib.WorkdirLocked, match=r"pid 4242 on host other-node-17.*another host.*"
                     rf"delete {path} and run again"):
    lock_lib.WorkdirLock(str(tmp_path)).acquire()
  assert path.exists()


def test_released_on_errors(tmp_path):
  with pytest.raises(ZeroDivisionError):
    with lock_lib.WorkdirLock(str(tmp_path / "w")):
      assert (tmp_path / "w" / lock_lib.LOCK_NAME).exists()
      _ = 1 / 0
  assert not (tmp_path / "w" / lock_lib.LOCK_NAME).exists()


def test_without_flock_the_recorded_pid_and_its_start_time_decide(tmp_path, monkeypatch):
  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, "no locks")
  monkeypatch.setattr(lock_lib.fcntl, "flock", no_flock)
  parent = os.getppid()
  record = {"host": socket.gethostname(), "pid": parent, "pid_start": lock_lib._pid_start(parent)}
  (tmp_path / lock_lib.LOCK_NAME).write_text(json.dumps(record))
  with pytest.raises(lock_lib.WorkdirLocked, match=f"pid {parent}"):
    lock_lib.WorkdirLock(str(tmp_path)).acquire()
  record["pid_start"] = "1"  # the same pid started at another time: a reused pid
  (tmp_path / lock_lib.LOCK_NAME).write_text(json.dumps(record))
  warnings = []
  with lock_lib.WorkdirLock(str(tmp_path), warn=warnings.append):
    pass
  assert warnings


def test_jaxcl_train_on_a_held_workdir_stops_at_once_in_one_line(holder):
  proc, workdir = holder
  out = subprocess.run([sys.executable, "-m", "jaxcl", "train",
                        f"--config={os.path.join(ROOT, 'configs', 'simclr_digits.py')}:smoke",
                        f"--workdir={workdir}"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == lock_lib.LOCKED_EXIT_CODE, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and f"pid {proc.pid}" in lines[0] and "holder script" in lines[0], lines
  # Stopped before the config was even validated and written (train_and_evaluate's first act).
  assert sorted(p.name for p in workdir.iterdir()) == [lock_lib.LOCK_NAME]
