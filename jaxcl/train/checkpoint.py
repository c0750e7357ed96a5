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
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

_pp = ocp.checkpoint_managers


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
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

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
    return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, *, step: int | None = None) -> tuple[Any, Any, dict]:
    """Restores a checkpoint onto the shardings given by ``abstract_state``.

    Args:
      abstract_state: pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` (e.g. from ``jax.eval_shape``).
      step: which checkpoint; default the latest complete one.

    Returns:
      ``(state, data_state, meta)``: data_state is this process's iterator state (None if the process
      count changed since the save, in which case the caller must rebuild the iterator itself).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(
          f"no complete checkpoint in {self.directory}: pass the --workdir of a run that has saved "
          "one (jaxcl train writes checkpoints/ there every train.checkpoint_every steps).")
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    return out.state, _this_process_data_state(out.data), dict(out.meta or {})

  def restore_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out.meta or {})

  def restore_arrays(self, *, step: int | None = None) -> Any:
    """Restores the ``state`` item onto this process's first device, without a target (for eval/export).

    Works whatever mesh saved it (another device count, several processes): the saved shardings name
    devices that may not exist here, so the target is built from the saved shapes and dtypes alone.
    """
    step = self.latest_step() if step is None else step
    saved = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                          getattr(saved, "tree", saved))
    out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return out.state

  def wait(self) -> None:
    """Blocks until every async save has been committed to disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
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
