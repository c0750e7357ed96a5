r"""SigLIP-style two-tower training (Zhai et al. 2023) on digits: images vs templated class captions, sigmoid loss.

Command:

  jaxcl train --config configs/siglip_digits.py --workdir runs/siglip_digits

Expected: 2-4 minutes on a 2-core CPU; accuracy: see the README's method table (benchmarks/methods.py).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "siglip",
                            embed_dim=64, text_width=64)
  return experiment.lock(c)
