"""Independent NumPy (float64) references for jaxcl.losses, written from the papers' equations.

Deliberately naive: explicit loops over anchors / pairs and the formulas as printed, with plain exp and
log (float64 has the range for temperature 0.01). Nothing here shares code with jaxcl.
"""

from __future__ import annotations

import numpy as np


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def nt_xent(z1, z2, temperature):
  z = np.concatenate([_unit(z1), _unit(z2)])
  m, n = len(z), len(z1)
  total = 0.0
  for i in range(m):
    p = (i + n) % m
    denom = sum(np.exp(z[i] @ z[k] / temperature) for k in range(m) if k != i)
    total += -np.log(np.exp(z[i] @ z[p] / temperature) / denom)
  return total / m


def info_nce(q, k, temperature):
  q, k = _unit(q), _unit(k)
  total = 0.0
  for i in range(len(q)):
    denom = sum(np.exp(q[i] @ k[j] / temperature) for j in range(len(k)))
    total += -np.log(np.exp(q[i] @ k[i] / temperature) / denom)
  return total / len(q)


def _cross_entropy_rows(logits):
  total = 0.0
  for i in range(len(logits)):
    total += -np.log(np.exp(logits[i, i]) / np.sum(np.exp(logits[i])))
  return total / len(logits)


def clip_loss(a, b, logit_scale):
  logits = logit_scale * _unit(a) @ _unit(b).T
  return 0.5 * (_cross_entropy_rows(logits) + _cross_entropy_rows(logits.T))


def sigmoid_loss(a, b, logit_scale, logit_bias):
  a, b = _unit(a), _unit(b)
  n = len(a)
  total = 0.0
  for i in range(n):
    for j in range(n):
      z = 1.0 if i == j else -1.0
      total += -np.log(1.0 / (1.0 + np.exp(-z * (logit_scale * a[i] @ b[j] + logit_bias))))
  return total / n


def dcl(z1, z2, temperature, weight_sigma=None):
  """The reference DCL code's one-way formula, averaged over the two directions."""
  u1, u2 = _unit(z1), _unit(z2)
  n = len(u1)
  pair = np.array([u1[i] @ u2[i] for i in range(n)])
  if weight_sigma is None:
    w = np.ones(n)
  else:
    e = np.exp(pair / weight_sigma)
    w = 2.0 - n * e / e.sum()

  def one_direction(x, y):
    total = 0.0
    for i in range(n):
      neg = sum(np.exp(x[i] @ x[k] / temperature) for k in range(n) if k != i)
      neg += sum(np.exp(x[i] @ y[k] / temperature) for k in range(n) if k != i)
      total += -w[i] * (x[i] @ y[i]) / temperature + np.log(neg)
    return total / n

  return 0.5 * (one_direction(u1, u2) + one_direction(u2, u1))


def hard_negative_nt_xent(z1, z2, temperature, beta, tau_plus):
  """Robinson et al. (2021) HCL code, in exp space."""
  z = np.concatenate([_unit(z1), _unit(z2)])
  m, n = len(z), len(z1)
  num_neg = m - 2
  total = 0.0
  for i in range(m):
    p = (i + n) % m
    pos = np.exp(z[i] @ z[p] / temperature)
    neg = np.array([np.exp(z[i] @ z[k] / temperature) for k in range(m) if k not in (i, p)])
    imp = neg ** beta
    reweight = np.sum(imp * neg) / np.mean(imp)
    ng = (-tau_plus * num_neg * pos + reweight) / (1.0 - tau_plus)
    ng = max(ng, num_neg * np.exp(-1.0 / temperature))
    total += -np.log(pos / (pos + ng))
  return total / m


def supcon(z, labels, temperature):
  z = _unit(z)
  total, anchors = 0.0, 0
  for i in range(len(z)):
    positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
    if not positives:
      continue
    denom = sum(np.exp(z[i] @ z[a] / temperature) for a in range(len(z)) if a != i)
    total += -np.mean([np.log(np.exp(z[i] @ z[p] / temperature) / denom) for p in positives])
    anchors += 1
  return total / max(anchors, 1)


def moco_infonce(q, k, queue, temperature):
  q, k, queue = _unit(q), _unit(k), _unit(queue)
  total = 0.0
  for i in range(len(q)):
    pos = np.exp(q[i] @ k[i] / temperature)
    neg = sum(np.exp(q[i] @ queue[j] / temperature) for j in range(len(queue)))
    total += -np.log(pos / (pos + neg))
  return total / len(q)


def _dist(a, b):
  return float(np.sqrt(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def contrastive_margin(x1, x2, is_similar, margin):
  total = 0.0
  for i in range(len(x1)):
    d = _dist(x1[i], x2[i])
    y = float(is_similar[i])
    total += y * 0.5 * d**2 + (1 - y) * 0.5 * max(0.0, margin - d) ** 2
  return total / len(x1)


def triplet_margin(a, p, n, margin):
  return np.mean([max(0.0, _dist(a[i], p[i]) - _dist(a[i], n[i]) + margin) for i in range(len(a))])


def batch_hard_triplet(z, labels, margin):
  losses = []
  for a in range(len(z)):
    pos = [_dist(z[a], z[p]) for p in range(len(z)) if p != a and labels[p] == labels[a]]
    neg = [_dist(z[a], z[n]) for n in range(len(z)) if labels[n] != labels[a]]
    if pos and neg:
      losses.append(max(0.0, margin + max(pos) - min(neg)))
  return np.mean(losses) if losses else 0.0


def batch_semi_hard_triplet(z, labels, margin):
  losses = []
  for a in range(len(z)):
    neg = [_dist(z[a], z[n]) for n in range(len(z)) if labels[n] != labels[a]]
    if not neg:
      continue
    for p in range(len(z)):
      if p == a or labels[p] != labels[a]:
        continue
      d_ap = _dist(z[a], z[p])
      farther = [d for d in neg if d > d_ap]
      d_an = min(farther) if farther else max(neg)
      losses.append(max(0.0, margin + d_ap - d_an))
  return np.mean(losses) if losses else 0.0


def byol_loss(p, z):
  p, z = _unit(p), _unit(z)
  return np.mean([2.0 - 2.0 * p[i] @ z[i] for i in range(len(p))])


def negative_cosine(p, z):
  p, z = _unit(p), _unit(z)
  return -np.mean([p[i] @ z[i] for i in range(len(p))])


def barlow_twins(z1, z2, lambda_offdiag):
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n, d = z1.shape
  # BatchNorm1d(affine=False) in training mode: biased variance, eps 1e-5.
  n1 = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + 1e-5)
  n2 = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + 1e-5)
  loss = 0.0
  for i in range(d):
    for j in range(d):
      c_ij = np.sum(n1[:, i] * n2[:, j]) / n
      loss += (1.0 - c_ij) ** 2 if i == j else lambda_offdiag * c_ij**2
  return loss


def vicreg(z1, z2, sim_weight, var_weight, cov_weight):
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  d = z1.shape[1]
  invariance = np.mean((z1 - z2) ** 2)
  var_term, cov_term = 0.0, 0.0
  for x in (z1, z2):
    cov = np.cov(x, rowvar=False, ddof=1)
    var_term += np.mean(np.maximum(0.0, 1.0 - np.sqrt(np.diag(cov) + 1e-4))) / 2
    cov_term += (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / d
  return sim_weight * invariance + var_weight * var_term + cov_weight * cov_term


def alignment(z1, z2, alpha):
  a, b = _unit(z1), _unit(z2)
  return np.mean([np.linalg.norm(a[i] - b[i]) ** alpha for i in range(len(a))])


def uniformity(z, t):
  x = _unit(z)
  vals = [np.exp(-t * np.sum((x[i] - x[j]) ** 2)) for i in range(len(x)) for j in range(i + 1, len(x))]
  return np.log(np.mean(vals))


def rankme(z, eps=1e-7):
  s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  p = s / s.sum() + eps
  return np.exp(-np.sum(p * np.log(p)))


def embedding_std(z):
  return np.mean(np.std(_unit(z), axis=0))


def positive_top1(a, b):
  a, b = _unit(a), _unit(b)
  return np.mean([np.argmax(b @ a[i]) == i for i in range(len(a))])


def retrieval_infonce(q, p, negatives=None, temperature=0.05, valid=None, keys=None,
                      symmetric=False):
  """DPR / E5 InfoNCE, eq. as printed: query i's candidates are every positive p_j (j != i dropped
  when keys[j] == keys[i]) and every valid hard negative n_jh of every row j."""
  q, p = _unit(q), _unit(p)
  n = len(q)
  negs = [] if negatives is None else [
      _unit(negatives[j])[h] for j in range(n) for h in range(negatives.shape[1])
      if valid is None or valid[j][h]]

  def same(i, j):
    return keys is not None and i != j and keys[i] == keys[j]

  total = 0.0
  for i in range(n):
    denom = sum(np.exp(q[i] @ p[j] / temperature) for j in range(n) if not same(i, j))
    denom += sum(np.exp(q[i] @ d / temperature) for d in negs)
    total += -np.log(np.exp(q[i] @ p[i] / temperature) / denom)
  if symmetric:
    back = 0.0
    for i in range(n):
      denom = sum(np.exp(p[i] @ q[j] / temperature) for j in range(n) if not same(i, j))
      back += -np.log(np.exp(p[i] @ q[i] / temperature) / denom)
    total = 0.5 * (total + back)
  return total / n
