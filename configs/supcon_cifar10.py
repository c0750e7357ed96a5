r"""Supervised contrastive learning (Khosla et al. 2020) on CIFAR-10 with ResNet-18.

Command:

  jaxcl train --config configs/supcon_cifar10.py --workdir runs/supcon_cifar10

Expected: ~3 GPU-hours for 200 epochs; not run here (no GPU/TPU on the development machine); the final table prints kNN and linear probe next to random init and raw pixels. (a supervised reference: ~95% after 1000 epochs in the paper with ResNet-50)
Variant of configs/simclr_cifar10.py (same data, encoder, views and schedule unless overridden below);
`get_config("smoke")` shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_cifar10", arg, "supcon",
                            temperature=0.1)

  return experiment.lock(c)
