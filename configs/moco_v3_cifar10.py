r"""MoCo v3 (Chen, Xie & He 2021) on CIFAR-10 with ResNet-18 (CIFAR stem).

Command:

  jaxcl train --config configs/moco_v3_cifar10.py --workdir runs/moco_v3_cifar10

Expected: ~3 GPU-hours for 200 epochs; not run here (no GPU/TPU on the development machine); the final table prints kNN and linear probe next to random init and raw pixels.
Variant of configs/simclr_cifar10.py (same data, encoder, views and schedule unless overridden below);
`get_config("smoke")` shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_cifar10", arg, "moco_v3",
                            momentum=0.99, temperature=0.2)
  if not a.smoke:
    c.method.proj_hidden_dim = c.method.pred_hidden_dim = 2048
  return experiment.lock(c)
