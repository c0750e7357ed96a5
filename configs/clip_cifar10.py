r"""CLIP-style training (Radford et al. 2021) on CIFAR-10: images vs templated class captions.

Command:

  jaxcl train --config configs/clip_cifar10.py --workdir runs/clip_cifar10

Expected: ~3 GPU-hours for 200 epochs; not run here (no GPU/TPU on the development machine); the final table prints kNN and linear probe next to random init and raw pixels. Zero-shot accuracy via method.zero_shot_logits.
Variant of configs/simclr_cifar10.py (same data, encoder, views and schedule unless overridden below);
`get_config("smoke")` shrinks it for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_cifar10", arg, "clip",
                            embed_dim=256)
  c.optim.name = "adamw"
  c.optim.lr = 5e-4
  c.optim.weight_decay = 0.2
  return experiment.lock(c)
