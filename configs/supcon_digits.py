r"""Supervised contrastive learning (Khosla et al. 2020) on digits at 32 px: labels define positives.

Command:

  jaxcl train --config configs/supcon_digits.py --workdir runs/supcon_digits

Expected: 3-5 minutes on a 2-core CPU; accuracy not measured here (a supervised upper reference for SimCLR).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "supcon",
                                 proj_hidden_dim=256, proj_out_dim=64, temperature=0.2)
  return experiment.lock(c)
