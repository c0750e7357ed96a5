"""Subprocess entry point for the multi-host and fault tests: ``jaxcl`` on N simulated CPU devices.

  python tests/_train_worker.py --devices 4 [--hang_before_step K | --hang_save_step K] \
      --marker PATH -- train --config configs/simclr_digits.py:smoke --workdir W ...

Everything after ``--`` is the ``jaxcl`` command line, run through ``jaxcl.main.run`` exactly as the
console script runs it (multi-host flags included). The worker sets the simulated device count (which
must happen before JAX is imported) and, for the fault tests only, can install one TEST-ONLY hook that
parks the process at a known moment, touches ``--marker`` and sleeps until the parent SIGKILLs it:

* ``--hang_before_step K``: the loop asks for the batch of step K (K steps done, counted from the start
  of this process) and never gets it: a kill between checkpoints, async saves still free to finish.
* ``--pause_before_step K``: as ``--hang_before_step``, but the process only waits there (signals
  are handled) until the parent creates ``<marker>.go``, then trains on: a signal at a known step.
* ``--fail_save_step K``: the save of checkpoint K raises ENOSPC, as on a full disk (or
  ``--fail_save_errno EACCES``: as in a workdir made unwritable during the run; the tests run as root,
  whom a chmod does not stop).
* ``--dump_restored PATH``: the arrays the resume restored, as this process's mesh holds them, go to
  an ``.npz`` file (to check a restore onto another device count is exact).
* ``--hang_save_step K``: the async save of checkpoint K stops just before Orbax renames its temporary
  directory to the final one (every array already written, nothing committed): a kill during a save.

Nothing in the library knows about these hooks; they patch it from here.
"""

import argparse
import os
import sys
import time


def _park(marker: str, text: str) -> None:
  with open(marker, "w") as f:
    f.write(text)
  while True:  # until SIGKILL
    time.sleep(1)


def _install_save_hang(step: int, marker: str) -> None:
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top

  original = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self, *args, **kwargs):
    # Only the step directory itself (items inside it have other names).
    if os.path.basename(os.fspath(self._final_path)) == str(step):  # pylint: disable=protected-access
      _park(marker, os.fspath(self.get()))
    return await original(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize


def _pause(marker: str, text: str) -> None:
  """Touches ``marker`` and waits (signals still handled) until the parent creates ``marker.go``."""
  with open(marker, "w") as f:
    f.write(text)
  deadline = time.monotonic() + 300
  while not os.path.exists(marker + ".go") and time.monotonic() < deadline:
    time.sleep(0.05)


class _HangingIterator:
  """Forwards a data iterator, but parks the process when asked for batch number ``hang_at`` (or,
  with ``pause``, waits there for the parent's go)."""

  def __init__(self, it, hang_at: int, marker: str, pause: bool = False):
    self._it, self._hang_at, self._marker, self._drawn = it, hang_at, marker, 0
    self._wait = _pause if pause else _park

  def __iter__(self):
    return self

  def __next__(self):
    if self._drawn == self._hang_at:
      self._wait(self._marker, f"before step {self._drawn}")
    self._drawn += 1
    return next(self._it)

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def _install_step_hang(step: int, marker: str, pause: bool = False) -> None:
  from jaxcl.experiment.tasks import image  # pylint: disable=g-import-not-at-top

  original = image.data_iterator

  def data_iterator(config, *, start_state=None):
    return _HangingIterator(original(config, start_state=start_state), step, marker, pause)

  image.data_iterator = data_iterator  # the image task reads its module's name at call time


def _install_restore_dump(path: str) -> None:
  """Writes the train state the resume restored (as this process's mesh holds it) to ``path`` (.npz)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from _train_runs import flat_arrays  # pylint: disable=g-import-not-at-top

  from jaxcl.train import checkpoint  # pylint: disable=g-import-not-at-top

  original = checkpoint.Checkpointer.restore

  def restore(self, abstract_state, **kwargs):
    state, data_state, meta = original(self, abstract_state, **kwargs)
    devices = len(state["step"].sharding.device_set)
    np.savez(path, __devices__=np.array(devices), **flat_arrays(state))
    return state, data_state, meta

  checkpoint.Checkpointer.restore = restore


def _install_save_failure(step: int, code: str = "ENOSPC") -> None:
  """Checkpoint ``step``'s save fails with OSError ``code`` (ENOSPC: a full disk; EACCES: an
  unwritable workdir), before anything of it is written."""
  import errno  # pylint: disable=g-import-not-at-top

  from jaxcl.train import checkpoint  # pylint: disable=g-import-not-at-top

  original = checkpoint.Checkpointer.save

  def save(self, at, *args, **kwargs):
    if at == step:
      number = getattr(errno, code)
      raise OSError(number, os.strerror(number))
    return original(self, at, *args, **kwargs)

  checkpoint.Checkpointer.save = save


def main() -> None:
  argv = sys.argv[1:]
  split = argv.index("--") if "--" in argv else len(argv)
  parser = argparse.ArgumentParser()
  parser.add_argument("--devices", type=int, required=True)
  parser.add_argument("--hang_before_step", type=int, default=-1)
  parser.add_argument("--hang_save_step", type=int, default=-1)
  parser.add_argument("--pause_before_step", type=int, default=-1)
  parser.add_argument("--fail_save_step", type=int, default=-1)
  parser.add_argument("--fail_save_errno", default="ENOSPC")
  parser.add_argument("--marker", default="")
  parser.add_argument("--dump_restored", default="")
  args = parser.parse_args(argv[:split])
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}").strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("TFDS_DISABLE_GCS", "1")
  os.environ.setdefault("NO_GCE_CHECK", "true")
  # The repository root, so the worker runs from a source checkout as well as an installed jaxcl.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if args.hang_save_step >= 0:
    _install_save_hang(args.hang_save_step, args.marker)
  if args.hang_before_step >= 0:
    _install_step_hang(args.hang_before_step, args.marker)
  if args.pause_before_step >= 0:
    _install_step_hang(args.pause_before_step, args.marker, pause=True)
  if args.fail_save_step >= 0:
    _install_save_failure(args.fail_save_step, args.fail_save_errno)
  if args.dump_restored:
    _install_restore_dump(args.dump_restored)
  from jaxcl import main as jaxcl_main  # pylint: disable=g-import-not-at-top
  jaxcl_main.run(["jaxcl"] + argv[split + 1:])


if __name__ == "__main__":
  main()
