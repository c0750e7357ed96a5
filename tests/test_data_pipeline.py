"""jaxcl.data pipeline: per-process slices, epoch reshuffles, resumable state, worker processes."""

import json

import numpy as np
import pytest

import jaxcl.data as data
from jaxcl.data import pipeline


@pytest.fixture(scope="module")
def digits_cfg(tmp_path_factory):
  cfg = data.default_config("digits")
  cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
  cfg.image_size = 8  # Native size: the smallest prepared copy, and a cheap one.
  data.prepare(cfg, progress=False)
  return cfg


def _take(ds, start, count):
  return [ds[i] for i in range(start, start + count)]


@pytest.mark.parametrize("n", [40, 43])
def test_process_slices_are_disjoint_and_cover_each_epoch(n):
  global_batch, steps = 8, n // 8
  single = pipeline.sliced_dataset(list(range(n)), seed=3, global_batch_size=global_batch)
  halves = [pipeline.sliced_dataset(list(range(n)), seed=3, global_batch_size=global_batch,
                                    process_index=p, process_count=2) for p in range(2)]
  epochs = []
  for epoch in range(3):
    ex_single = _take(single, epoch * steps * 8, steps * 8)
    ex_halves = [_take(h, epoch * steps * 4, steps * 4) for h in halves]
    p0, p1 = set(ex_halves[0]), set(ex_halves[1])
    assert len(p0) == len(p1) == steps * 4 and not p0 & p1  # Disjoint, no repeats.
    # The processes' parts of each global batch, side by side, are the single-process batch.
    for s in range(steps):
      joined = ex_halves[0][s * 4:(s + 1) * 4] + ex_halves[1][s * 4:(s + 1) * 4]
      assert joined == ex_single[s * 8:(s + 1) * 8]
    # Together they cover the split, but for the n % 8 examples dropped this epoch.
    assert len(p0 | p1) == n - n % global_batch and (p0 | p1) <= set(range(n))
    epochs.append(ex_single)
  assert epochs[0] != epochs[1] != epochs[2]  # A fresh order every epoch.


def test_process_slices_of_real_batches_join_to_the_global_batch(digits_cfg):
  whole = data.train_iterator(digits_cfg, seed=7, global_batch_size=64)
  parts = [data.train_iterator(digits_cfg, seed=7, global_batch_size=64, process_index=p,
                               process_count=2) for p in range(2)]
  for _ in range(2):
    batch = next(whole)
    halves = [next(it) for it in parts]
    assert halves[0]["image"].shape == (32, 8, 8, 1) and halves[0]["label"].dtype == np.int32
    np.testing.assert_array_equal(
        np.concatenate([h["image"] for h in halves]), batch["image"])
    np.testing.assert_array_equal(
        np.concatenate([h["label"] for h in halves]), batch["label"])


def test_restored_iterator_state_gives_the_same_next_batches(digits_cfg):
  it = data.train_iterator(digits_cfg, seed=1, global_batch_size=100)
  for _ in range(11):  # Past the first epoch boundary (12 full batches per epoch).
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # Checkpointable as plain JSON.
  expected = [next(it) for _ in range(3)]
  restored = data.train_iterator(digits_cfg, seed=1, global_batch_size=100)
  restored.set_state(state)
  for want, got in zip(expected, [next(restored) for _ in range(3)]):
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_two_worker_processes_give_the_same_batches_as_none(digits_cfg):
  zero = data.train_iterator(digits_cfg, seed=5, global_batch_size=128)
  expected = [next(zero) for _ in range(12)]  # Crosses the epoch boundary (9 batches per epoch).
  cfg = digits_cfg.copy_and_resolve_references()
  cfg.num_workers = 2
  two = data.train_iterator(cfg, seed=5, global_batch_size=128)
  try:
    got = [next(two) for _ in range(10)]
    state = two.get_state()
    got += [next(two) for _ in range(2)]
  finally:
    two.close()
  for want, have in zip(expected, got):
    np.testing.assert_array_equal(have["image"], want["image"])
    np.testing.assert_array_equal(have["label"], want["label"])
  # A worker iterator's state restores into a fresh worker iterator.
  again = data.train_iterator(cfg, seed=5, global_batch_size=128)
  try:
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["label"], expected[10]["label"])
  finally:
    again.close()


def test_shuffle_seed_field_overrides_the_seed_argument(digits_cfg):
  cfg = digits_cfg.copy_and_resolve_references()
  cfg.shuffle_seed = 9
  a = next(data.train_iterator(cfg, seed=0, global_batch_size=16))
  b = next(data.train_iterator(digits_cfg, seed=9, global_batch_size=16))
  c = next(data.train_iterator(digits_cfg, seed=0, global_batch_size=16))
  np.testing.assert_array_equal(a["label"], b["label"])
  assert not np.array_equal(b["image"], c["image"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(global_batch_size=10, process_count=4), "multiple of the process count"),
    (dict(global_batch_size=2000), "exceeds the 1257 examples"),
    (dict(global_batch_size=8, process_index=2, process_count=2), "process_index=2"),
])
def test_bad_batch_settings_raise(digits_cfg, kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.train_iterator(digits_cfg, seed=0, **kwargs)


def _balanced(cfg, **kwargs):
  cfg = cfg.copy_and_resolve_references()
  cfg.examples_per_class = 4
  return data.train_iterator(cfg, seed=5, global_batch_size=24, **kwargs)


def test_class_balanced_batches_hold_m_of_each_of_b_over_m_classes(digits_cfg):
  it = _balanced(digits_cfg)
  class_sets = []
  for _ in range(20):
    labels = next(it)["label"]
    counts = np.bincount(labels, minlength=10)
    assert sorted(counts[counts > 0]) == [4] * 6  # 24 / 4 classes, 4 examples each
    assert len(set(labels[:4])) > 1  # rows are shuffled: a device's rows are not one class
    class_sets.append(frozenset(labels.tolist()))
  assert len(set(class_sets)) > 10 and set().union(*class_sets) == set(range(10))


def test_class_balanced_batches_resume_and_split_over_processes(digits_cfg):
  it = _balanced(digits_cfg)
  next(it)
  state = it.get_state()
  want = [next(it) for _ in range(2)]
  resumed = _balanced(digits_cfg)
  resumed.set_state(state)
  parts = [_balanced(digits_cfg, process_index=p, process_count=2) for p in range(2)]
  for p in parts:
    next(p)
  for batch in want:
    np.testing.assert_array_equal(next(resumed)["image"], batch["image"])
    halves = [next(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]), batch["label"])


@pytest.mark.parametrize("m, batch, match", [
    (5, 24, "examples_per_class=5: must be >= 2 and divide the global batch 24"),
    (2, 24, "into at most 10 classes"),  # 12 classes asked, digits has 10
    (1, 24, "must be >= 2"),
])
def test_bad_examples_per_class_raise(digits_cfg, m, batch, match):
  cfg = digits_cfg.copy_and_resolve_references()
  cfg.examples_per_class = m
  with pytest.raises(ValueError, match=match):
    data.train_iterator(cfg, seed=0, global_batch_size=batch)


def test_train_classes_reads_only_the_seen_classes(digits_cfg):
  cfg = digits_cfg.copy_and_resolve_references()
  cfg.train_classes = 4
  it = data.train_iterator(cfg, seed=1, global_batch_size=64)
  labels = np.concatenate([next(it)["label"] for _ in range(12)])  # more than one epoch of them
  assert set(labels.tolist()) == {0, 1, 2, 3}
  # With P x K batches: 4 per class, 3 classes per batch, all from the seen ones.
  cfg.examples_per_class = 4
  labels = next(data.train_iterator(cfg, seed=1, global_batch_size=12))["label"]
  counts = np.bincount(labels, minlength=10)
  assert sorted(counts[counts > 0]) == [4, 4, 4] and counts[4:].sum() == 0
  cfg.examples_per_class = 2  # 6 classes asked of the 4 seen
  with pytest.raises(ValueError, match="into at most 4 classes"):
    data.train_iterator(cfg, seed=1, global_batch_size=12)
  cfg.examples_per_class, cfg.train_classes = 0, 10
  with pytest.raises(ValueError, match="train_classes=10: the split has only 10 classes"):
    data.train_iterator(cfg, seed=1, global_batch_size=12)
