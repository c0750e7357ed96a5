"""A checkpoint saved on 8 devices resumes on 4 and on 1 (fresh processes that have only those devices)
with the same global batch, and training ends where the 8-device run ended.

SimCLR synchronises BatchNorm over the data axis and derives every view's key from the global example
index, so its trajectory does not depend on the device count; only float32 summation order does.
"""

import os
import shutil

from _train_runs import (EVERY, STEPS, Worker, assert_same_state, final_state,
                         keep_checkpoints_up_to, reference, reference_workdir, saved_mesh_shape)

from jaxcl.train import checkpoint


def _checkpoint_at_step_2(tmp_path_factory, dest: str) -> None:
  """The reference run's 8-device checkpoints up to step 2 (later ones removed: a run stopped there)."""
  shutil.copytree(os.path.join(reference_workdir(tmp_path_factory), "checkpoints"),
                  os.path.join(dest, "checkpoints"))
  keep_checkpoints_up_to(dest, EVERY)


def test_checkpoint_from_8_devices_resumes_on_fewer(tmp_path, tmp_path_factory):
  expected = reference(tmp_path_factory)
  devices = (4, 1)
  workdirs = {n: str(tmp_path / f"on_{n}") for n in devices}
  for workdir in workdirs.values():
    _checkpoint_at_step_2(tmp_path_factory, workdir)
    saved = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    assert saved.all_steps() == [EVERY]
    saved.close()
  # Both at once: the 2-core CI host compiles them side by side.
  workers = {n: Worker(w, devices=n, log_name=f"resume_on_{n}") for n, w in workdirs.items()}
  try:
    for w in workers.values():
      w.wait()
  finally:
    for w in workers.values():
      w.kill()
  for n, workdir in workdirs.items():
    assert saved_mesh_shape(workdir, EVERY) == [8]
    assert saved_mesh_shape(workdir, STEPS) == [n]  # the resumed run really ran on n devices
    assert_same_state(final_state(workdir), expected, rtol=1e-5, atol=1e-6)
