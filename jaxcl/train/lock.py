"""One workdir, one writer: the lock ``jaxcl train`` holds on its workdir while it runs.

Two trainers writing one workdir (a scheduler restarting a job while the old process still runs, or the
same command started twice) would interleave checkpoints and metrics. The trainer (process 0 of a
multi-host run) holds ``<workdir>/train.lock`` for the whole run:

- The exclusion itself is an OS lock: ``fcntl.flock`` on the open lock file. The kernel drops it when
  the holding process dies, however it dies (SIGKILL, OOM killer), so a dead holder never blocks a new
  run, and a pid reused by an unrelated process cannot look like the holder.
- The file also records who holds it (host, pid, start time, command) so that a refusal names the
  holder, and so that a lock whose holder is gone is reported when it is taken over.
- A lock recorded by another host is refused even when ``flock`` succeeds: several network and FUSE
  filesystems keep ``flock`` local to one machine, so its success says nothing about a process there.
  The message says which file to delete once that run is known to be over.
- Where the filesystem has no ``flock`` at all, the recorded pid is checked instead, with its start time
  from ``/proc`` so that a reused pid is not mistaken for the holder.

The lock file is removed on a normal exit and on errors; a killed run leaves it behind, and the next run
takes it over with a warning.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

LOCK_NAME = "train.lock"
LOCKED_EXIT_CODE = 75  # EX_TEMPFAIL: a scheduler's retry succeeds once the holder has stopped


class WorkdirLocked(RuntimeError):
  """Another run holds the workdir (or may: a lock recorded by another host)."""


def _pid_start(pid: int) -> str | None:
  """The pid's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), None if gone."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name, which may hold spaces


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by someone else
  return True


def _holder_is_alive(holder: dict[str, Any]) -> bool:
  """Without ``flock``: is the recorded holder (on this host) still the same running process?"""
  pid = int(holder.get("pid", -1))
  if pid <= 0 or not _pid_alive(pid):
    return False
  start = holder.get("pid_start")
  return start is None or _pid_start(pid) in (None, start)  # a different start time: a reused pid


def describe_holder(holder: dict[str, Any]) -> str:
  """``pid 123 on host h, started 2026-01-01T00:00:00Z (jaxcl train ...)``."""
  text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
  if holder.get("started"):
    text += f", started {holder['started']}"
  if holder.get("command"):
    text += f" ({holder['command']})"
  return text


def _read_holder(fd: int) -> dict[str, Any] | None:
  os.lseek(fd, 0, os.SEEK_SET)
  raw = b""
  while chunk := os.read(fd, 65536):
    raw += chunk
  if not raw.strip():
    return None
  try:
    holder = json.loads(raw)
  except ValueError:
    return {"host": "?", "pid": "?", "unreadable": raw[:200].decode("utf-8", "replace")}
  return holder if isinstance(holder, dict) else {"host": "?", "pid": "?"}


class WorkdirLock:
  """Context manager: holds ``<workdir>/train.lock`` or raises ``WorkdirLocked`` naming its holder.

  Args:
    workdir: the run directory (created if missing).
    warn: where the take-over warning goes (default: stderr).
    command: what the holder record says this run is (default: ``sys.argv`` joined).
  """

  def __init__(self, workdir: str, *, warn: Callable[[str], None] | None = None,
               command: str | None = None):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
    self._warn = warn or (lambda m: print(m, file=sys.stderr))
    self._command = command if command is not None else " ".join(sys.argv)[:300]
    self._fd: int | None = None
    self.taken_over: dict[str, Any] | None = None  # the dead holder's record, if there was one

  def _refuse(self, holder: dict[str, Any] | None, why: str) -> WorkdirLocked:
    who = describe_holder(holder) if holder else "an unrecorded holder"
    return WorkdirLocked(f"workdir {os.path.dirname(self.path)} is in use by {who}{why}")

  def _open_locked(self) -> tuple[int, bool]:
    """(fd, flock works) with an exclusive lock on the file now at ``self.path``."""
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise self._refuse(holder, "; stop that run or choose another --workdir.") from None
      except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
          os.close(fd)
          raise
        return fd, False  # no flock on this filesystem: the recorded pid decides
      # The holder we waited on may have removed the file it locked: then our lock is on a dead inode.
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if same:
        return fd, True
      os.close(fd)

  def acquire(self) -> "WorkdirLock":
    """Takes the lock; raises ``WorkdirLocked`` if a live (or unknowable) holder has it."""
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd, has_flock = self._open_locked()
    try:
      holder = _read_holder(fd)
      host = socket.gethostname()
      if holder is not None:
        if holder.get("host") != host:
          raise self._refuse(holder, f"; jaxcl cannot see whether a process on another host is "
                             f"alive. If that run is over, delete {self.path} and run again.")
        if not has_flock and _holder_is_alive(holder):
          raise self._refuse(holder, "; stop that run or choose another --workdir.")
        self.taken_over = holder
        self._warn(f"jaxcl: warning: taking over the lock of {describe_holder(holder)}, which is "
                   f"no longer running ({self.path}).")
      pid = os.getpid()
      record = {"host": host, "pid": pid, "pid_start": _pid_start(pid),
                "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "command": self._command}
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(record).encode(), 0)
      os.fsync(fd)
    except BaseException:
      os.close(fd)
      raise
    self._fd = fd
    return self

  def release(self) -> None:
    """Removes the lock file, then drops the OS lock (in that order: see ``_open_locked``)."""
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    finally:
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


class _Nothing:
  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    pass


def hold_workdir(workdir: str, *, warn: Callable[[str], None] | None = None):
  """The lock a training run holds: taken by process 0; every process learns whether it got it.

  Returns a context manager. With several processes (``jax.distributed``), process 0 takes the lock
  and broadcasts the outcome, so the others stop too instead of waiting in a collective.

  Raises:
    WorkdirLocked: on every process, when process 0 could not take the lock.
  """
  import jax  # pylint: disable=g-import-not-at-top

  lock = WorkdirLock(workdir, warn=warn) if jax.process_index() == 0 else _Nothing()
  if jax.process_count() == 1:
    return lock
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  error = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except WorkdirLocked as err:
      error = err
  ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
  if error is not None:
    raise error
  if not int(ok):
    raise WorkdirLocked(f"process 0 could not lock workdir {os.path.abspath(workdir)} (its log says "
                        "which run holds it).")
  return _Held(lock)


class _Held:
  """An already acquired lock (or nothing, off process 0) as a context manager that releases it."""

  def __init__(self, lock):
    self._lock = lock

  def __enter__(self):
    return self._lock

  def __exit__(self, *exc) -> None:
    if isinstance(self._lock, WorkdirLock):
      self._lock.release()
