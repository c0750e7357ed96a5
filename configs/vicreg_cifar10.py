r"""VICReg (Bardes et al. 2022) on CIFAR-10 with ResNet-18 (CIFAR stem).

Command:

  jaxcl train --config configs/vicreg_cifar10.py --workdir runs/vicreg_cifar10

Expected: ~3 GPU-hours for 200 epochs; not run here (no GPU/TPU on the development machine); the final table prints kNN and linear probe next to random init and raw pixels. (solo-learn: 92.1% linear after 1000 epochs)
Variant of configs/simclr_cifar10.py (same data, encoder, views and schedule unless overridden below);
`get_config("smoke")` shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_cifar10", arg, "vicreg",
                            sim_weight=25.0)
  if not a.smoke:
    c.method.proj_hidden_dim = c.method.proj_out_dim = 2048
  c.optim.lr = 0.3
  return experiment.lock(c)
