"""The statistics of a sweep's table: mean and spread over seeds, and a paired comparison with a
baseline row over the seeds both rows have.

Two rows trained with the same seed share their data order, augmentations and initialisation, so their
difference on that seed is the fair unit: the comparison is a paired t-interval (Student 1908) over the
per-seed differences, with the count of seeds whose difference has the sign of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (ddof=1; None for one value)."""
  x = np.asarray(values, np.float64)
  return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else None)


def paired(row: Mapping[int, float], baseline: Mapping[int, float], *,
           confidence: float = 0.95) -> dict | None:
  """Paired comparison of ``row`` with ``baseline`` (both ``{seed: value}``) over their common seeds.

  Returns:
    ``{"seeds", "mean_difference", "ci_low", "ci_high", "agree"}``: the mean of the per-seed
    differences ``row - baseline``, its ``confidence`` t-interval (None with one seed), and how many
    seeds' differences have the mean's sign; None when no seed is common.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  seeds = sorted(set(row) & set(baseline))
  if not seeds:
    return None
  d = np.array([row[s] - baseline[s] for s in seeds], np.float64)
  mean = float(d.mean())
  low = high = None
  if len(d) > 1:
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    low, high = mean - half, mean + half
  sign = np.sign(mean)
  return {"seeds": len(seeds), "mean_difference": mean, "ci_low": low, "ci_high": high,
          "agree": int(np.sum(np.sign(d) == sign)) if sign else int(np.sum(d == 0))}
