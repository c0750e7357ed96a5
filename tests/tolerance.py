"""Float32 tolerances that follow from the arithmetic, for tests that compare two ways of computing the
same thing (8 devices vs 1, chunked vs plain, tiled vs plain).

Both sides sum the same terms in another order (another device split, chunk split, vector width or
thread split: the last two differ between CPUs). A float32 sum of n terms then moves by about
``sqrt(n) * u`` of its terms' scale (rounding errors behave as a random walk; ``u = 2^-24``), and a
result that goes through k dependent sums by about k times that. Relative to each *element* this can
be arbitrarily large where terms cancel to nearly zero, so the allowed error is relative to the
array's largest magnitude, not to each element: that is what makes such a test pass on any CPU
without loosening it where values are large.
"""

import math

import numpy as np

U32 = 2.0**-24  # float32 unit roundoff


def reordered_rtol(n_terms: int, *, sums: int = 1, margin: float = 10.0) -> float:
  """Error bound, relative to scale, of ``sums`` dependent float32 sums of ``n_terms`` reordered."""
  return margin * sums * math.sqrt(n_terms) * U32


def assert_close_to_scale(actual, desired, *, rtol: float, err_msg: str = "") -> None:
  """``|actual - desired| <= rtol * (|desired| + max|desired|)`` elementwise."""
  desired = np.asarray(desired)
  scale = float(np.max(np.abs(desired), initial=0.0))
  np.testing.assert_allclose(np.asarray(actual), desired, rtol=rtol, atol=rtol * scale,
                             err_msg=err_msg)
