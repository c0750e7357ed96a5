"""Orbax checkpoints behind one small module.

A checkpoint at step ``s`` (after ``s`` optimizer steps) holds three items:

* ``state``: the train state pytree (step, parameters, method state such as target network, queue and
  BatchNorm statistics, optimizer state), saved asynchronously with ``StandardSave``; restored with the
  shardings of the current mesh, so a run saved on 8 devices resumes on 4 or 1.
* ``data``: every process's data-iterator state (JSON), so a resumed run reads the same batches.
* ``meta``: small JSON facts (step, config) for humans and ``jaxcl eval``.

Orbax writes each checkpoint into a temporary directory and renames it when every item is complete, so a
run killed during a save leaves only a temporary directory that ``latest_step`` never returns. Retention
uses Orbax's preservation policies: the newest ``keep`` checkpoints plus, optionally, every
``keep_every``-th step.

Damage after the commit (a truncated copy, a disk that garbled a block, a file deleted by hand) is
caught by checksums: once a checkpoint is committed to a file system (local disk, NFS, Lustre; object
stores keep their own checksums), process 0 *seals* it, writing the size and CRC-32 of every file in it
to ``jaxcl_checksums.json`` inside the step directory. Restoring the newest
checkpoint checks the seal first; a checkpoint whose files do not match it, or that Orbax cannot read,
is moved aside to ``<directory>-damaged/<step>`` (never deleted) with a warning that names the files,
and the next older one is tried. A run therefore never resumes from garbage and never loses a good
checkpoint to a damaged newer one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import zlib
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

_pp = ocp.checkpoint_managers
CHECKSUMS = "jaxcl_checksums.json"
_CHUNK = 1 << 22


class DamagedCheckpointError(ValueError):
  """A checkpoint's files do not match the checksums written when it was committed."""


class IncompatibleCheckpointError(ValueError):
  """An intact checkpoint whose arrays do not fit the state being restored (another model/config)."""


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(step_dir: str) -> list[str]:
  out = []
  for root, _, names in os.walk(step_dir):
    out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names if n != CHECKSUMS]
  return sorted(out)


def seal(step_dir: str | os.PathLike) -> None:
  """Writes ``jaxcl_checksums.json`` (size and CRC-32 of every file) into a committed checkpoint."""
  step_dir = os.fspath(step_dir)
  sums = {rel: [os.path.getsize(os.path.join(step_dir, rel)), _crc32(os.path.join(step_dir, rel))]
          for rel in _files(step_dir)}
  tmp = os.path.join(step_dir, f".{CHECKSUMS}.tmp")
  with open(tmp, "w") as f:
    json.dump({"crc32": sums}, f)
  os.replace(tmp, os.path.join(step_dir, CHECKSUMS))  # atomic: a seal is whole or absent


def damage(step_dir: str | os.PathLike) -> list[str]:
  """What does not match the seal of ``step_dir`` ([] if intact or never sealed)."""
  step_dir = os.fspath(step_dir)
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      sums = json.load(f)["crc32"]
  except (ValueError, KeyError, TypeError, UnicodeDecodeError):
    return [f"{CHECKSUMS}: unreadable"]
  found = []
  for rel, (size, crc) in sums.items():
    full = os.path.join(step_dir, rel)
    if not os.path.exists(full):
      found.append(f"{rel}: missing")
    elif os.path.getsize(full) != size:
      found.append(f"{rel}: {os.path.getsize(full)} bytes, {size} when saved")
    elif _crc32(full) != crc:
      found.append(f"{rel}: contents changed since it was saved")
  return found


def _preservation(keep: int, keep_every: int):
  policies = [_pp.LatestN(n=keep)]
  if keep_every:
    policies.append(_pp.EveryNSteps(interval_steps=keep_every))
  return _pp.AnyPreservationPolicy(policies)


@functools.cache
def _use_replica_parallel(enabled: bool) -> None:
  """Sets Orbax's replica-parallel saving of ``jax.Array`` (once per process and setting).

  It splits every replicated array into one slice per replica (an eager op, so one compile per leaf
  shape: seconds at the first save) so that several hosts share the writing. With one process there
  is nobody to share with, so it is switched off there. Orbax logs a warning when a handler is
  replaced; this replacement is intended, so that warning is silenced.
  """
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=enabled), override=True)
  finally:
    absl_logger.setLevel(level)


class Checkpointer:
  """Periodic async saves and restore of the latest complete checkpoint in ``directory``.

  Args:
    directory: where checkpoints live (``<workdir>/checkpoints``); created if missing.
    keep: how many of the newest checkpoints to retain.
    keep_every: also retain every checkpoint whose step is a multiple of this (0: none).
    async_save: write in a background thread (the step loop continues); ``wait`` blocks until done.
  """

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3, keep_every: int = 0,
               async_save: bool = True):
    self.directory = epath.Path(directory)
    _use_replica_parallel(jax.process_count() > 1)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=_preservation(keep, keep_every),
        enable_async_checkpointing=async_save,
        create=True,
        # Temporary directories of a save that was killed are removed when the next manager starts.
        cleanup_tmp_directories=True,
    )
    self._async = async_save
    if async_save:  # seal each checkpoint as soon as Orbax has committed it
      options.async_options = ocp.AsyncOptions(post_finalization_callback=self._seal_committed)
    self._seal_lock = threading.Lock()
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint (not yet checked for damage), or None."""
    return self._manager.latest_step()

  def _seal_committed(self) -> None:
    """Seals every committed checkpoint that has no seal yet (process 0; the others share its files).

    Only on a file system path: on object stores (``gs://``, ``s3://``) an object is written whole or
    not at all and carries the store's own checksum, and reading a pod-sized checkpoint back from one
    host after every save would cost more than it protects.
    """
    if jax.process_index() != 0 or "://" in os.fspath(self.directory):
      return
    with self._seal_lock:
      for name in os.listdir(self.directory):
        step_dir = os.path.join(self.directory, name)
        if name.isdigit() and not os.path.exists(os.path.join(step_dir, CHECKSUMS)):
          try:
            seal(step_dir)
          except FileNotFoundError:  # removed by the retention policy meanwhile
            pass

  def _set_aside(self, step: int, why: list[str]) -> None:
    """Moves damaged checkpoint ``step`` to ``<directory>-damaged/`` with a warning naming ``why``."""
    aside = epath.Path(f"{self.directory}-damaged") / str(step)
    if jax.process_index() == 0:
      n = 1
      while aside.exists():
        aside, n = aside.parent / f"{step}.{n}", n + 1
      aside.parent.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(aside)
      shown = "; ".join(why[:3]) + (f"; and {len(why) - 3} more" if len(why) > 3 else "")
      print(f"jaxcl: warning: checkpoint {step} in {self.directory} is damaged ({shown}); moved "
            f"to {aside}, trying the next older checkpoint.", file=sys.stderr, flush=True)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"jaxcl set aside checkpoint {step}")
    self._manager.reload()

  def _restore_checked(self, step: int | None, restore_fn) -> Any:
    """``restore_fn(step)`` of ``step``, or of the newest undamaged checkpoint when ``step`` is None.

    A damaged checkpoint named by ``step`` raises ``DamagedCheckpointError``; while looking for the
    newest one, damaged checkpoints (seal mismatch, or unreadable to Orbax) are set aside.
    """
    if step is not None:
      why = damage(self.directory / str(step))
      if why:
        raise DamagedCheckpointError(
            f"checkpoint {step} in {self.directory} is damaged: {'; '.join(why)}. Restore an "
            "older step (--step), or resume without --step to use the newest undamaged one.")
      return restore_fn(step)
    candidates = sorted(self._manager.all_steps(), reverse=True)
    for candidate in candidates:
      step_dir = self.directory / str(candidate)
      why = damage(step_dir)
      if not why:
        try:
          return restore_fn(candidate)
        except Exception as err:  # pylint: disable=broad-exception-caught
          if (step_dir / CHECKSUMS).exists():  # intact files: the config, not the disk, differs
            raise IncompatibleCheckpointError(
                f"checkpoint {candidate} in {self.directory} is intact but does not fit this run's "
                f"model and optimizer ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
                "Resume it with the config it was trained with, or give a new --workdir.") from err
          why = [f"Orbax could not read it: {type(err).__name__}: {str(err)[:200]}"]
      self._set_aside(candidate, why)
    if candidates:
      raise DamagedCheckpointError(
          f"every checkpoint in {self.directory} ({candidates}) is damaged; they were moved to "
          f"{self.directory}-damaged. Run again to start from step 0.")
    raise FileNotFoundError(
        f"no complete checkpoint in {self.directory}: pass the --workdir of a run that has saved "
        "one (jaxcl train writes checkpoints/ there every train.checkpoint_every steps).")

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *, data_state: Any = None,
           meta: Mapping[str, Any] | None = None) -> bool:
    """Starts saving ``state`` (async) as checkpoint ``step``.

    Args:
      step: the number of optimizer steps done.
      state: the train-state pytree of ``jax.Array`` (any sharding).
      data_state: this process's data-iterator state after ``step`` batches (from ``get_state()``).
      meta: JSON-serialisable facts stored next to the arrays.

    Returns:
      Whether a save was started (False if ``step`` is already saved).
    """
    if step in self._manager.all_steps():
      return False
    items = {"state": ocp.args.StandardSave(state),
             "data": ocp.args.JsonSave(_gather_data_states(data_state)),
             "meta": ocp.args.JsonSave(dict(meta or {}, step=int(step)))}
    started = self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    if not self._async:
      self._seal_committed()
    return started

  def restore(self, abstract_state: Any, *, step: int | None = None) -> tuple[Any, Any, dict]:
    """Restores a checkpoint onto the shardings given by ``abstract_state``.

    Args:
      abstract_state: pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` (e.g. from ``jax.eval_shape``).
      step: which checkpoint; default the newest complete, undamaged one (damaged newer ones are set
        aside, see the module docstring).

    Returns:
      ``(state, data_state, meta)``: data_state is this process's iterator state (None if the process
      count changed since the save, in which case the caller must rebuild the iterator itself).
    """
    out = self._restore_checked(step, lambda s: self._manager.restore(s, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())))
    return out.state, _this_process_data_state(out.data), dict(out.meta or {})

  def restore_arrays(self, *, step: int | None = None) -> Any:
    """Restores the ``state`` item onto this process's first device, without a target (for eval/export).

    Works whatever mesh saved it (another device count, several processes): the saved shardings name
    devices that may not exist here, so the target is built from the saved shapes and dtypes alone.
    """
    def restore(step):
      saved = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
      one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                            getattr(saved, "tree", saved))
      return self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target))).state
    return self._restore_checked(step, restore)

  def wait(self) -> None:
    """Blocks until every save has been committed to disk and sealed."""
    self._manager.wait_until_finished()
    self._seal_committed()

  def close(self) -> None:
    self.wait()
    self._manager.close()


def _encode_state(state: Any) -> Any:
  # Grain's DataLoader iterators return their state as JSON bytes; DatasetIterators return a dict.
  if isinstance(state, bytes):
    return {"__bytes__": state.decode()}
  return state


def _decode_state(state: Any) -> Any:
  if isinstance(state, dict) and set(state) == {"__bytes__"}:
    return state["__bytes__"].encode()
  return state


def _gather_data_states(data_state: Any) -> dict:
  """Every process's iterator state, gathered so that process 0's JSON file holds them all."""
  local = json.dumps(_encode_state(data_state))
  n = jax.process_count()
  if n == 1:
    return {"process_count": 1, "states": [json.loads(local)]}
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  raw = np.frombuffer(local.encode(), dtype=np.uint8)
  lengths = multihost_utils.process_allgather(np.array([raw.size], np.int32)).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:raw.size] = raw
  every = multihost_utils.process_allgather(padded).reshape(n, -1)
  states = [json.loads(bytes(every[i, :lengths[i]]).decode()) for i in range(n)]
  return {"process_count": n, "states": states}


def _this_process_data_state(saved: Any) -> Any:
  if not saved or saved.get("process_count") != jax.process_count():
    return None
  return _decode_state(saved["states"][jax.process_index()])


def export_params(path: str | os.PathLike, params: Any, *, meta: Mapping[str, Any] | None = None) -> str:
  """Writes a parameter pytree (e.g. the encoder alone) as a standalone Orbax checkpoint.

  Args:
    path: destination directory (must not exist yet).
    params: pytree of arrays.
    meta: JSON facts written next to it as ``meta.json`` (model config, feature width...).

  Returns:
    The path written.
  """
  path = epath.Path(path).absolute()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path / "params", params, force=True)
    ckptr.wait_until_finished()
  if jax.process_index() == 0:
    (path / "meta.json").write_text(json.dumps(dict(meta or {}), indent=2, default=str))
  return os.fspath(path)


def load_exported(path: str | os.PathLike) -> tuple[Any, dict]:
  """Reads what ``export_params`` wrote: ``(params, meta)`` (arrays on the default device)."""
  path = epath.Path(path).absolute()
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(path / "params")
  meta_file = path / "meta.json"
  meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
  return params, meta
