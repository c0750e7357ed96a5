r"""BYOL (Grill et al. 2020) on ImageNet: ResNet-50, batch 4096, LARS, 300 epochs, for pods.

Command:

  jaxcl train --config configs/byol_imagenet.py --workdir runs/byol_imagenet

Expected: not run here (no GPU/TPU on the development machine); the final table prints kNN and linear probe next to random init and raw pixels. The paper reports 74.3% linear top-1 after 1000 epochs (72.5% at 300).
Variant of configs/simclr_imagenet.py (same data, encoder, views and schedule unless overridden below);
`get_config("smoke")` shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_imagenet", arg, "byol",
                            momentum=0.996)
  c.augment = experiment.augment_config("byol", size=c.augment.size)
  c.optim.lr = 0.2
  c.optim.weight_decay = 1.5e-6
  if not a.smoke:
    c.steps = 300 * 1_281_167 // 4096
  return experiment.lock(c)
