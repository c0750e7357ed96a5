"""kNN monitor, linear probe, feature extraction and baselines against independent NumPy references."""

import numpy as np
import pytest

from jaxcl import evaluate


def _knn_reference(train_x, train_y, test_x, *, k, temperature, num_classes):
  """Wu et al. 2018 weighted kNN, one test point at a time with explicit weights and votes."""
  train_n = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  preds = []
  for q in test_x:
    q = q / np.linalg.norm(q)
    sims = train_n @ q
    order = np.argsort(-sims, kind="stable")[: min(k, len(train_x))]
    votes = np.zeros(num_classes)
    for i in order:
      votes[train_y[i]] += np.exp(sims[i] / temperature)
    preds.append(int(np.argmax(votes)))
  return np.array(preds)


@pytest.mark.parametrize("k, temperature, batch_size", [(5, 0.1, 7), (200, 0.07, None), (1, 0.5, 3)])
def test_knn_matches_numpy_reference(k, temperature, batch_size):
  rng = np.random.default_rng(k)
  train_x = rng.normal(size=(60, 8)).astype(np.float32)
  train_y = rng.integers(0, 4, size=60)
  test_x = rng.normal(size=(23, 8)).astype(np.float32)
  test_y = rng.integers(0, 4, size=23)
  # k=200 > 60 train rows: clipped, so every train row votes.
  expected = _knn_reference(train_x, train_y, test_x, k=k, temperature=temperature, num_classes=4)
  got = evaluate.knn_predict(
      train_x, train_y, test_x, test_y, k=k, temperature=temperature, batch_size=batch_size
  )
  np.testing.assert_array_equal(got, expected)
  acc = evaluate.knn_accuracy(
      train_x, train_y, test_x, test_y, k=k, temperature=temperature, batch_size=batch_size
  )
  np.testing.assert_allclose(acc, np.mean(expected == test_y))


def test_knn_weights_decide_not_counts():
  # Two far, same-class neighbours against one identical neighbour: with a sharp temperature the
  # single near neighbour outweighs both; a majority vote would pick class 1.
  train_x = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]], np.float32)
  train_y = np.array([0, 1, 1])
  test_x = np.array([[1.0, 0.05]], np.float32)
  sharp = evaluate.knn_predict(train_x, train_y, test_x, k=3, temperature=0.1, num_classes=2)
  flat = evaluate.knn_predict(train_x, train_y, test_x, k=3, temperature=100.0, num_classes=2)
  assert sharp[0] == 0 and flat[0] == 1


def test_knn_ties_go_to_lower_index_and_class():
  # Duplicate train points at equal similarity: with k=1 the lower train index wins.
  train_x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
  test_x = np.array([[1.0, 0.0]], np.float32)
  assert evaluate.knn_predict(train_x, np.array([2, 1, 0]), test_x, k=1, num_classes=3)[0] == 2
  # Equal vote totals (one neighbour each of classes 1 and 0 at the same similarity): lower class.
  train_x = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
  test_x = np.array([[1.0, 0.0]], np.float32)
  assert evaluate.knn_predict(train_x, np.array([1, 0]), test_x, k=2, num_classes=2)[0] == 0


def test_knn_rejects_bad_arguments():
  x = np.ones((4, 3), np.float32)
  y = np.zeros(4, np.int32)
  with pytest.raises(ValueError, match="temperature"):
    evaluate.knn_accuracy(x, y, x, y, temperature=0.0)
  with pytest.raises(ValueError, match="widths"):
    evaluate.knn_accuracy(x, y, np.ones((4, 5)), y)
  with pytest.raises(ValueError, match="labels must be integers"):
    evaluate.knn_accuracy(x, y.astype(float), x, y)


def test_linear_probe_separates_random_linear_labelling():
  # Labels from a random linear map with a margin: a linear probe must get (almost) all right.
  rng = np.random.default_rng(0)
  w = rng.normal(size=(16, 5))
  # Very different feature scales and offsets: the probe must standardise to do well.
  x = rng.normal(size=(1200, 16)) * rng.uniform(0.1, 10.0, size=16) + rng.normal(size=16)
  scores = ((x - x.mean(0)) / x.std(0)) @ w
  top2 = np.sort(scores, axis=1)[:, -2:]
  keep = top2[:, 1] - top2[:, 0] > 1.0
  x, y = x[keep].astype(np.float32), np.argmax(scores[keep], axis=1)
  n = len(x) * 2 // 3
  acc = evaluate.linear_probe(x[:n], y[:n], x[n:], y[n:])
  assert acc >= 0.98, acc
  probe = evaluate.fit_linear_probe(x[:n], y[:n])
  assert set(probe.cv_accuracy) == set(evaluate.DEFAULT_L2_GRID)
  assert probe.accuracy(x[:n], y[:n]) >= 0.99
  assert probe.l2 in probe.cv_accuracy


def test_linear_probe_blobs_fixed_l2_and_determinism():
  rng = np.random.default_rng(1)
  centers = rng.normal(size=(4, 16)) * 10
  y = rng.integers(0, 4, size=400)
  x = (centers[y] + rng.normal(size=(400, 16))).astype(np.float32)
  a = evaluate.fit_linear_probe(x[:300], y[:300], l2=1e-3)
  b = evaluate.fit_linear_probe(x[:300], y[:300], l2=1e-3)
  np.testing.assert_array_equal(a.weights, b.weights)
  assert a.accuracy(x[300:], y[300:]) == 1.0
  assert a.cv_accuracy == {}


def test_linear_probe_optimum_has_zero_gradient():
  # At the returned weights the regularised objective's gradient (written in NumPy) is ~0.
  # Same shapes as the blobs test above, so the solver is not compiled again.
  rng = np.random.default_rng(2)
  n = 300
  x = (rng.normal(size=(n, 16)) * rng.uniform(0.5, 3.0, size=16)).astype(np.float32)
  y = rng.integers(0, 4, size=n)
  l2 = 1e-2
  probe = evaluate.fit_linear_probe(x, y, l2=l2, tol=1e-6)
  xs = (x - x.mean(0)) / x.std(0)
  np.testing.assert_allclose(probe.mean, x.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(probe.scale, x.std(0), rtol=1e-5)
  logits = xs @ probe.weights + probe.bias
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  p[np.arange(n), y] -= 1.0
  grad_w = xs.T @ p / n + l2 * probe.weights
  grad_b = p.mean(0)
  np.testing.assert_allclose(grad_w, 0.0, atol=2e-5)
  np.testing.assert_allclose(grad_b, 0.0, atol=2e-5)


def test_raw_pixel_baseline_on_digits():
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  images = (digits.images * (255 / 16)).round().astype(np.uint8)[..., None]
  xtr, xte, ytr, yte = train_test_split(
      images, digits.target, test_size=0.3, stratify=digits.target, random_state=0
  )
  result = evaluate.raw_pixel_baseline((xtr, ytr), (xte, yte))
  assert result["knn"] > 0.9 and result["linear"] > 0.9, result


def test_extract_features_pads_and_shards(mesh):
  import jax.numpy as jnp
  from flax import nnx

  class Features(nnx.Module):
    def __init__(self):
      self.proj = nnx.Linear(12, 5, rngs=nnx.Rngs(0))

    def features(self, images):
      return self.proj(images.reshape(images.shape[0], -1))

  model = Features()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(21, 2, 2, 3), dtype=np.uint8)
  w = np.asarray(model.proj.kernel[...])
  b = np.asarray(model.proj.bias[...])
  expected = (images.reshape(21, -1) / 255.0) @ w + b
  # nnx.Module, its bound method, and a plain function; single device and 8-device mesh.
  for fn in (model, model.features):
    got = evaluate.extract_features(fn, images, batch_size=8)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  got = evaluate.extract_features(model.features, images, batch_size=16, mesh=mesh)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  got = evaluate.extract_features(lambda x: jnp.sum(x, axis=(1, 2, 3))[:, None], images, batch_size=8)
  np.testing.assert_allclose(got[:, 0], images.reshape(21, -1).sum(1) / 255.0, rtol=1e-5)
  with pytest.raises(ValueError, match="divisible"):
    evaluate.extract_features(model, images, batch_size=12, mesh=mesh)


def test_evaluate_representation_and_table():
  rng = np.random.default_rng(0)
  y = np.arange(80) % 4
  images = np.zeros((80, 2, 2, 1), np.uint8)
  images[np.arange(80), y // 2, y % 2, 0] = 255  # class = position of the one bright pixel
  flat = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731
  result = evaluate.evaluate_representation(
      flat, (images[:60], y[:60]), (images[60:], y[60:]), knn_k=10, batch_size=16
  )
  assert result == {"knn": 1.0, "linear": 1.0}
  monitor = evaluate.evaluate_representation(
      flat, (images[:60], y[:60]), (images[60:], y[60:]), linear=False
  )
  assert monitor == {"knn": 1.0}
  del rng
  table = evaluate.format_table({"raw pixels": {"knn": 0.969, "linear": 0.97}, "x": {"knn": 0.5}})
  assert table.splitlines() == [
      "| representation | kNN | linear probe |",
      "|---|---:|---:|",
      "| raw pixels | 96.9% | 97.0% |",
      "| x | 50.0% | - |",
  ]
  plain = evaluate.format_table({"raw pixels": {"knn": 0.969}}, style="plain")
  assert plain.splitlines()[1].split() == ["raw", "pixels", "96.9%"]


def _digits_split():
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  return train_test_split(x, digits.target, test_size=0.3, stratify=digits.target, random_state=0)


def test_knn_sharded_over_mesh_equals_unsharded(mesh):
  # Digits (1,257 train rows: not divisible by 8, so the last shard is padded); k=200 is more than a
  # shard's 158 rows, so the merge must combine every device's candidates.
  xtr, xte, ytr, yte = _digits_split()
  for k in (200, 20):
    expected = evaluate.knn_predict(xtr, ytr, xte, yte, k=k)
    got = evaluate.knn_predict(xtr, ytr, xte, yte, k=k, mesh=mesh, batch_size=128)
    np.testing.assert_array_equal(got, expected)
  # Exact duplicates spread over different shards: the tie still goes to the lower train index.
  train_x = np.tile(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), (8, 1))
  train_y = np.arange(16) % 5
  test_x = np.array([[1.0, 0.1], [0.1, 1.0]], np.float32)
  for k in (1, 3):
    np.testing.assert_array_equal(
        evaluate.knn_predict(train_x, train_y, test_x, k=k, num_classes=5, mesh=mesh),
        evaluate.knn_predict(train_x, train_y, test_x, k=k, num_classes=5))


def test_linear_probe_chunked_solver_matches_full_batch():
  # Above cv_max_examples the objective is summed over row slices (the last one shifted back);
  # with a fixed l2 both solvers must land on the same optimum.
  rng = np.random.default_rng(3)
  x = (rng.normal(size=(300, 16)) * rng.uniform(0.5, 3.0, size=16) + 2.0).astype(np.float32)
  y = rng.integers(0, 4, size=300)
  full = evaluate.fit_linear_probe(x, y, l2=1e-2, tol=1e-6)
  chunked = evaluate.fit_linear_probe(x, y, l2=1e-2, tol=1e-6, cv_max_examples=100, chunk_rows=70)
  np.testing.assert_allclose(chunked.mean, full.mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(chunked.scale, full.scale, rtol=1e-5)
  np.testing.assert_allclose(chunked.weights, full.weights, atol=1e-4)
  np.testing.assert_array_equal(chunked.predict(x), full.predict(x))


def test_linear_probe_holdout_protocol_above_threshold():
  rng = np.random.default_rng(1)
  centers = rng.normal(size=(4, 16)) * 3
  y = rng.integers(0, 4, size=400)
  x = (centers[y] + rng.normal(size=(400, 16))).astype(np.float32)
  small = evaluate.fit_linear_probe(x[:300], y[:300])
  assert small.protocol == "kfold" and len(small.cv_accuracy) == len(evaluate.DEFAULT_L2_GRID)
  big = evaluate.fit_linear_probe(x[:300], y[:300], cv_max_examples=200, chunk_rows=64)
  assert big.protocol == "holdout" and big.l2 in big.cv_accuracy
  # The grid is walked strong to weak and stops `patience` strengths after the best one.
  tried = sorted(big.cv_accuracy, reverse=True)
  best = tried.index(big.l2)
  assert len(tried) in (best + 2, len(evaluate.DEFAULT_L2_GRID))  # patience 1
  assert big.accuracy(x[300:], y[300:]) >= 0.95
  held = evaluate.linear.stratified_holdout(y, 0.1, seed=0)
  for c in range(4):
    assert abs(held[y == c].sum() - 0.1 * np.sum(y == c)) <= 1


def _probe_objective(probe, x, y, l2):
  """Mean softmax cross-entropy + l2/2 ||W||^2 of a fitted probe, in float64 NumPy."""
  logits = probe.logits(x).astype(np.float64)
  logits -= logits.max(1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  return -log_p[np.arange(len(y)), y].mean() + 0.5 * l2 * np.sum(probe.weights.astype(np.float64) ** 2)


def test_linear_probe_minibatch_solver_reaches_the_lbfgs_optimum():
  # Above minibatch_min_examples the probe is fitted by mini-batch Adam; on a fixed l2 it must land
  # near the convex optimum that full-batch L-BFGS finds, and score the same on held-out digits.
  xtr, xte, ytr, yte = _digits_split()
  exact = evaluate.fit_linear_probe(xtr, ytr, l2=1e-3, tol=1e-6)
  sgd = evaluate.fit_linear_probe(xtr, ytr, l2=1e-3, cv_max_examples=100,
                                  minibatch_min_examples=200, batch_rows=32)
  assert (exact.solver, sgd.solver, sgd.protocol) == ("lbfgs", "minibatch", "fixed")
  optimum = _probe_objective(exact, xtr, ytr, 1e-3)
  assert optimum <= _probe_objective(sgd, xtr, ytr, 1e-3) < optimum + 0.002
  assert abs(sgd.accuracy(xte, yte) - exact.accuracy(xte, yte)) <= 0.005  # 2 of 540 digits


def test_linear_probe_minibatch_grid_heads_are_independent_and_chosen_on_the_split():
  xtr, xte, ytr, yte = _digits_split()
  kw = dict(cv_max_examples=100, minibatch_min_examples=200, batch_rows=128)
  probe = evaluate.fit_linear_probe(xtr, ytr, **kw)
  again = evaluate.fit_linear_probe(xtr, ytr, **kw)
  np.testing.assert_array_equal(probe.weights, again.weights)  # seeded batch order: deterministic
  assert probe.protocol == "holdout" and set(probe.cv_accuracy) == set(evaluate.DEFAULT_L2_GRID)
  best = max(probe.cv_accuracy.values())
  assert probe.l2 == max(s for s, a in probe.cv_accuracy.items() if a == best)  # ties: stronger
  assert probe.accuracy(xte, yte) >= 0.95
  # Each strength is its own head: fitted with the others or alone, it ends the same.
  args = (xtr, ytr.astype(np.int32), np.arange(len(ytr)))
  stats = (xtr.mean(0), np.where(xtr.std(0) > 0, xtr.std(0), 1.0), 10)
  opts = dict(epochs=5, batch_rows=128, learning_rate=0.03, seed=0)
  grid = evaluate.linear._fit_minibatch(*args, [1.0, 1e-3, 1e-5], *stats, **opts)
  alone = evaluate.linear._fit_minibatch(*args, [1e-3], *stats, **opts)
  np.testing.assert_allclose(grid["w"][1], alone["w"][0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(grid["w"][0], grid["w"][1], atol=1e-3)


# ---------------------------------------------------------------- metric-learning retrieval scores


def _retrieval_reference(features, labels, ks, distance):
  """Musgrave et al. 2020's definitions, one query at a time, with a full stable sort."""
  f = np.asarray(features, np.float64)
  if distance == "cosine":
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    dist = -(f @ f.T)
  else:
    dist = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
  recalls = {q: [] for q in ks}
  r_prec, map_r = [], []
  for i in range(len(labels)):
    others = np.array([j for j in range(len(labels)) if j != i])
    order = others[np.argsort(dist[i, others], kind="stable")]
    rel = labels[order] == labels[i]
    r = int(rel.sum())
    if r == 0:
      continue
    for q in ks:
      recalls[q].append(rel[:q].any())
    r_prec.append(rel[:r].sum() / r)
    map_r.append(sum(rel[:k + 1].sum() / (k + 1) for k in range(r) if rel[k]) / r)
  out = {f"recall@{q}": np.mean(v) for q, v in recalls.items()}
  out.update(r_precision=np.mean(r_prec), map_r=np.mean(map_r))
  return out


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_retrieval_scores_match_the_definitions(distance):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 7, 90)
  labels[-1] = 9  # a class with one member: no relevant item, not a query of the averages
  features = rng.normal(size=(90, 5)) + labels[:, None] * 0.4
  got = evaluate.retrieval_scores(features, labels, ks=(1, 2, 4, 8), distance=distance, batch_size=16)
  want = _retrieval_reference(features, labels, (1, 2, 4, 8), distance)
  for q in (1, 2, 4, 8):
    np.testing.assert_allclose(got[f"recall@{q}"], want[f"recall@{q}"], rtol=1e-9)
  np.testing.assert_allclose(got["r_precision"], want["r_precision"], rtol=1e-6)
  np.testing.assert_allclose(got["map@r"], want["map_r"], rtol=1e-6)
  assert 0 < got["map@r"] < got["r_precision"] <= 1 and got["recall@1"] <= got["recall@8"]


def test_retrieval_scores_hand_example():
  # Two tight classes far apart: perfect retrieval; swapping one label breaks it measurably.
  features = np.array([[1, 0], [0.99, 0.1], [0.98, -0.1], [0, 1], [0.1, 0.99], [-0.1, 0.98]])
  labels = np.array([0, 0, 0, 1, 1, 1])
  perfect = evaluate.retrieval_scores(features, labels, ks=(1,))
  assert perfect == {"recall@1": 1.0, "r_precision": 1.0, "map@r": 1.0}
  # Query 0 of [0, 0, 1, 1, 1, 1]... with labels [0,0,1,1,1,1]: item 2 (near 0 and 1) is class 1.
  mixed = evaluate.retrieval_scores(features, np.array([0, 0, 1, 1, 1, 1]), ks=(1,))
  assert mixed["recall@1"] < 1.0 and mixed["map@r"] < 1.0
  with pytest.raises(ValueError, match="distance"):
    evaluate.retrieval_scores(features, labels, distance="manhattan")
