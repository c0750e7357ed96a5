r"""Barlow Twins (Zbontar et al. 2021) on digits at 32 px: cross-correlation to identity.

Command:

  jaxcl train --config configs/barlow_twins_digits.py --workdir runs/barlow_twins_digits

Expected: 3-5 minutes on a 2-core CPU; accuracy not measured here (run it: the final table prints it).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "barlow_twins",
                                 proj_hidden_dim=512, proj_out_dim=512)
  return experiment.lock(c)
