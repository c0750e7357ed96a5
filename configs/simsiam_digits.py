r"""SimSiam (Chen & He 2021) on digits at 32 px: predictor and stop-gradient, no negatives, no EMA.

Command:

  jaxcl train --config configs/simsiam_digits.py --workdir runs/simsiam_digits

Expected: 2-4 minutes on a 2-core CPU; accuracy: see the README's method table (benchmarks/methods.py).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "simsiam",
                            proj_hidden_dim=256, proj_out_dim=256, pred_hidden_dim=64)
  return experiment.lock(c)
