r"""MoCo v3 (Chen, Xie & He 2021) on ImageNet: ResNet-50, batch 4096, LARS, 100 epochs, for pods.

Command:

  jaxcl train --config configs/moco_v3_imagenet.py --workdir runs/moco_v3_imagenet

Expected: not run here (no GPU/TPU on the development machine); the final table prints kNN and linear probe next to random init and raw pixels. The paper reports 68.9% linear top-1 at 100 epochs.
Variant of configs/simclr_imagenet.py (same data, encoder, views and schedule unless overridden below);
`get_config("smoke")` shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_imagenet", arg, "moco_v3",
                            momentum=0.99, temperature=1.0)
  c.augment = experiment.augment_config("byol", size=c.augment.size)
  c.optim.lr = 0.3
  c.optim.weight_decay = 1.5e-6
  return experiment.lock(c)
