r"""BYOL (Grill et al. 2020) on CIFAR-10 with ResNet-18 (CIFAR stem).

Command:

  jaxcl train --config configs/byol_cifar10.py --workdir runs/byol_cifar10

Expected: ~3 GPU-hours for 200 epochs; not run here (no GPU/TPU on the development machine); the final table prints kNN and linear probe next to random init and raw pixels. (solo-learn: 92.6% linear after 1000 epochs)
Variant of configs/simclr_cifar10.py (same data, encoder, views and schedule unless overridden below);
`get_config("smoke")` shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_cifar10", arg, "byol",
                            momentum=0.99)
  if not a.smoke:
    c.method.proj_hidden_dim = c.method.pred_hidden_dim = 4096
  c.optim.lr = 1.0  # solo-learn's BYOL CIFAR recipe (x B/256)
  return experiment.lock(c)
