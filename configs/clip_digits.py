r"""CLIP-style two-tower training (Radford et al. 2021) on digits: images vs templated class captions.

Command:

  jaxcl train --config configs/clip_digits.py --workdir runs/clip_digits

Expected: 3-5 minutes on a 2-core CPU; accuracy not measured here; zero-shot via method.zero_shot_logits.
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation); `get_config("smoke")`
shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, _ = experiment.variant(__file__, "simclr_digits", arg, "clip",
                                 embed_dim=64, text_width=64)
  return experiment.lock(c)
