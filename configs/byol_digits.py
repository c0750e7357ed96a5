r"""BYOL (Grill et al. 2020) on digits at 32 px: EMA target, predictor, no negatives.

Command:

  jaxcl train --config configs/byol_digits.py --workdir runs/byol_digits

Expected: 3-5 minutes on a 2-core CPU; accuracy not measured here (run it: the final table prints it).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "byol",
                                 proj_hidden_dim=256, pred_hidden_dim=256, proj_out_dim=64, momentum=0.99)
  return experiment.lock(c)
