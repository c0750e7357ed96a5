"""Checkpointer: round trip with shardings, retention, incomplete saves ignored, damaged checkpoints
set aside (every kind of file garbled, truncated or deleted), encoder export."""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.train import checkpoint


def _state(mesh, value):
  repl = jax.sharding.NamedSharding(mesh, jax.P())
  rows = jax.sharding.NamedSharding(mesh, jax.P("data"))
  return {"step": jax.device_put(jnp.int32(value), repl),
          "params": {"w": jax.device_put(jnp.full((3, 2), float(value)), repl)},
          "queue": jax.device_put(jnp.arange(16.0).reshape(16, 1) + value, rows)}


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def test_round_trip_retention_and_data_state(tmp_path, mesh):
  ckpt = checkpoint.Checkpointer(tmp_path / "ck", keep=2)
  for step in (1, 2, 3):
    assert ckpt.save(step, _state(mesh, step), data_state={"next_index": step * 10},
                     meta={"method": "simclr"})
  assert not ckpt.save(3, _state(mesh, 3))  # already saved
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]  # retention: the newest two
  state, data_state, meta = ckpt.restore(_abstract(_state(mesh, 0)))
  assert int(state["step"]) == 3 and data_state == {"next_index": 30}
  assert meta == {"method": "simclr", "step": 3}
  np.testing.assert_array_equal(np.asarray(state["queue"]).ravel(), np.arange(16.0) + 3)
  assert state["queue"].sharding.spec == jax.P("data")
  ckpt.close()


def test_restores_on_fewer_devices(tmp_path, mesh, devices):
  ckpt = checkpoint.Checkpointer(tmp_path / "ck")
  ckpt.save(5, _state(mesh, 5), data_state={"next_index": 5})
  ckpt.close()
  small = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,),
                        devices=devices[:4])
  state, _, _ = checkpoint.Checkpointer(tmp_path / "ck").restore(_abstract(_state(small, 0)))
  assert len(state["queue"].sharding.device_set) == 4
  np.testing.assert_array_equal(np.asarray(state["queue"]).ravel(), np.arange(16.0) + 5)


def test_incomplete_checkpoint_is_never_loaded(tmp_path, mesh):
  ckpt = checkpoint.Checkpointer(tmp_path / "ck")
  ckpt.save(1, _state(mesh, 1))
  ckpt.close()
  # What a save killed half-way leaves behind: Orbax's temporary directory for step 2.
  partial = tmp_path / "ck" / "2.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_text("half written")
  again = checkpoint.Checkpointer(tmp_path / "ck")
  assert again.latest_step() == 1
  state, _, _ = again.restore(_abstract(_state(mesh, 0)))
  assert int(state["step"]) == 1
  # Cleaned up on start, by Orbax in a background thread (awaited before the next save): give it
  # time on a loaded machine.
  deadline = time.monotonic() + 30
  while partial.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not partial.exists()


def test_export_encoder_round_trip(tmp_path):
  params = {"conv": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "bias": jnp.ones(3)}
  path = checkpoint.export_params(tmp_path / "encoder", params, meta={"out_dim": 3})
  loaded, meta = checkpoint.load_exported(path)
  assert meta == {"out_dim": 3}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               loaded, params)
  assert os.path.isdir(path)


# Every kind of file a checkpoint holds (as Orbax 0.12 lays it out), and the seal itself.
_KINDS = ("_CHECKPOINT_METADATA", "commit_success.txt", "data/metadata", "meta/metadata",
          "state/_METADATA", "state/_sharding", "state/manifest.ocdbt",
          "state/ocdbt.process_0/manifest.ocdbt", "state/ocdbt.process_0/d/*", "state/d/*",
          checkpoint.CHECKSUMS)


def _garble(path):
  """Flips the bytes in the middle of a file, keeping its size (what a checksum alone can catch)."""
  data = bytearray(path.read_bytes())
  mid = len(data) // 2
  data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
  path.write_bytes(bytes(data))


def _two_checkpoints(tmp_path, mesh):
  ckpt = checkpoint.Checkpointer(tmp_path / "ck")
  for step in (1, 2):
    ckpt.save(step, _state(mesh, step), data_state={"next_index": step})
  ckpt.close()
  return tmp_path / "ck" / "2"


def test_layout_has_every_kind_of_file(tmp_path, mesh):
  newest = _two_checkpoints(tmp_path, mesh)
  for kind in _KINDS:
    assert list(newest.glob(kind)), f"{kind} not in a checkpoint: update _KINDS to Orbax's layout"
  assert checkpoint.damage(newest) == []


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("how", ["garble", "truncate", "delete"])
def test_damaged_newest_checkpoint_is_set_aside_and_the_older_one_used(kind, how, tmp_path, mesh,
                                                                        capsys):
  newest = _two_checkpoints(tmp_path, mesh)
  target = sorted(newest.glob(kind))[0]
  if how == "garble":
    _garble(target)
  elif how == "truncate":
    target.write_bytes(target.read_bytes()[:len(target.read_bytes()) // 2])
  else:
    target.unlink()
  ckpt = checkpoint.Checkpointer(tmp_path / "ck")
  state, data_state, meta = ckpt.restore(_abstract(_state(mesh, 0)))
  if kind == checkpoint.CHECKSUMS and how == "delete":
    # An intact checkpoint that lost its seal (as one killed between commit and seal): Orbax reads
    # it, and nothing it holds is damaged.
    assert int(state["step"]) == 2 and not capsys.readouterr().err
    return
  # Step 1, intact, never step 2's garbage.
  assert int(state["step"]) == 1 and data_state == {"next_index": 1} and meta["step"] == 1
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.ones((3, 2)))
  warning = capsys.readouterr().err
  assert "checkpoint 2" in warning and "damaged" in warning, warning
  assert os.fspath(target.relative_to(newest)) in warning or "Orbax could not read it" in warning
  # Set aside, not deleted; the good one stays where it was.
  assert (tmp_path / "ck-damaged" / "2").is_dir()
  assert ckpt.all_steps() == [1]
  ckpt.close()


def test_unsealed_checkpoint_that_orbax_cannot_read_is_set_aside(tmp_path, mesh, capsys):
  """A checkpoint killed between its commit and its seal is trusted only as far as Orbax reads it."""
  newest = _two_checkpoints(tmp_path, mesh)
  (newest / checkpoint.CHECKSUMS).unlink()
  (newest / "state" / "_METADATA").write_text("{not json")
  state, _, _ = checkpoint.Checkpointer(tmp_path / "ck").restore(_abstract(_state(mesh, 0)))
  assert int(state["step"]) == 1
  assert "Orbax could not read it" in capsys.readouterr().err


def test_explicit_damaged_step_is_an_error_and_all_damaged_says_so(tmp_path, mesh):
  newest = _two_checkpoints(tmp_path, mesh)
  _garble(sorted(newest.glob("state/ocdbt.process_0/d/*"))[0])
  ckpt = checkpoint.Checkpointer(tmp_path / "ck")
  with pytest.raises(checkpoint.DamagedCheckpointError, match="checkpoint 2 .* is damaged"):
    ckpt.restore(_abstract(_state(mesh, 0)), step=2)
  _garble(tmp_path / "ck" / "1" / "meta" / "metadata")
  with pytest.raises(checkpoint.DamagedCheckpointError, match="every checkpoint"):
    ckpt.restore(_abstract(_state(mesh, 0)))
  assert sorted(os.listdir(tmp_path / "ck-damaged")) == ["1", "2"]


def test_checkpoint_of_another_model_is_an_error_and_stays_put(tmp_path, mesh):
  """Resuming a workdir with another config is the user's mistake, not damage: nothing is set aside."""
  _two_checkpoints(tmp_path, mesh)
  other = _abstract(_state(mesh, 0))
  other["params"]["w"] = jax.ShapeDtypeStruct((4, 2), other["params"]["w"].dtype,
                                              sharding=other["params"]["w"].sharding)
  ckpt = checkpoint.Checkpointer(tmp_path / "ck")
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="is intact but does not fit"):
    ckpt.restore(other)
  assert ckpt.all_steps() == [1, 2] and not (tmp_path / "ck-damaged").exists()
