r"""VICReg (Bardes et al. 2022) on digits at 32 px: variance, invariance, covariance terms.

Command:

  jaxcl train --config configs/vicreg_digits.py --workdir runs/vicreg_digits

Expected: 3-5 minutes on a 2-core CPU; accuracy not measured here (run it: the final table prints it).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "vicreg",
                                 proj_hidden_dim=512, proj_out_dim=512)
  return experiment.lock(c)
