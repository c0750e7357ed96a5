"""A checkpoint saved on 8 devices resumes on 4 and on 1 (fresh processes that have only those devices)
with the same global batch, and training ends where the 8-device run ended.

Two claims, tested apart:
1. The restore is exact: the arrays a 4- or 1-device process holds right after restoring the 8-device
   checkpoint are bit-identical to what was saved (moving shards between meshes does no arithmetic).
2. The training that continues matches the uninterrupted run up to float32 reduction noise. SimCLR
   synchronises BatchNorm over the data axis and derives every view's key from the global example
   index, so its trajectory does not depend on the device count; only the order of the sums does
   (see ``REORDER_RTOL`` in ``_train_runs.py`` for the derived tolerance, and the check that it is far
   below what one step changes).
"""

import os
import shutil

import numpy as np
from _train_runs import (EVERY, STEPS, Worker, assert_resumed_state, final_state, flat_arrays,
                         keep_checkpoints_up_to, reference_workdir, saved_mesh_shape)

from jaxcl.train import checkpoint


def _checkpoint_at_step_2(tmp_path_factory, dest: str) -> None:
  """The reference run's 8-device checkpoints up to step 2 (later ones removed: a run stopped there)."""
  shutil.copytree(os.path.join(reference_workdir(tmp_path_factory), "checkpoints"),
                  os.path.join(dest, "checkpoints"))
  keep_checkpoints_up_to(dest, EVERY)


def test_checkpoint_from_8_devices_resumes_on_fewer(tmp_path, tmp_path_factory):
  saved_at_2 = final_state(reference_workdir(tmp_path_factory), step=EVERY)
  devices = (4, 1)
  workdirs = {n: str(tmp_path / f"on_{n}") for n in devices}
  dumps = {n: str(tmp_path / f"restored_on_{n}.npz") for n in devices}
  for workdir in workdirs.values():
    _checkpoint_at_step_2(tmp_path_factory, workdir)
    saved = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    assert saved.all_steps() == [EVERY]
    saved.close()
  # Both at once: the 2-core CI host compiles them side by side.
  workers = {n: Worker(w, devices=n, hooks=[f"--dump_restored={dumps[n]}"], log_name=f"resume_on_{n}")
             for n, w in workdirs.items()}
  try:
    for w in workers.values():
      w.wait()
  finally:
    for w in workers.values():
      w.kill()
  saved = flat_arrays(saved_at_2)
  for n, workdir in workdirs.items():
    with np.load(dumps[n]) as restored:
      assert int(restored["__devices__"]) == n  # restored onto the smaller mesh itself
      assert sorted(restored.files) == sorted([*saved, "__devices__"])
      for name, array in saved.items():  # moving shards between meshes does no arithmetic
        np.testing.assert_array_equal(restored[name], array, err_msg=name)
    assert saved_mesh_shape(workdir, EVERY) == [8]
    assert saved_mesh_shape(workdir, STEPS) == [n]  # the resumed run really ran on n devices
    assert_resumed_state(final_state(workdir), tmp_path_factory)
