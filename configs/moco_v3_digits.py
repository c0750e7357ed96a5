r"""MoCo v3 (Chen, Xie & He 2021) on digits at 32 px: momentum encoder, predictor, InfoNCE.

Command:

  jaxcl train --config configs/moco_v3_digits.py --workdir runs/moco_v3_digits

Expected: 3-5 minutes on a 2-core CPU; accuracy not measured here (run it: the final table prints it).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "moco_v3",
                                 proj_hidden_dim=256, pred_hidden_dim=256, proj_out_dim=64, momentum=0.99, temperature=0.2)
  return experiment.lock(c)
