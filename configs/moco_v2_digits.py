r"""MoCo v2 (He et al. 2020; Chen et al. 2020) on digits at 32 px: momentum encoder and a queue of 4,096 negatives.

Command:

  jaxcl train --config configs/moco_v2_digits.py --workdir runs/moco_v2_digits

Expected: 2-4 minutes on a 2-core CPU; accuracy: see the README's method table (benchmarks/methods.py).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "moco_v2",
                            proj_hidden_dim=256, proj_out_dim=64, queue_size=4096, momentum=0.99, temperature=0.2)
  return experiment.lock(c)
