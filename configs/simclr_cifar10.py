r"""SimCLR on CIFAR-10: ResNet-18 (CIFAR stem), batch 512, LARS, 200 epochs.

Prepare the data once (needs cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html in
~/Downloads or --manual_dir):

  jaxcl prepare-data cifar10 --manual_dir ~/Downloads
  jaxcl train --config configs/simclr_cifar10.py --workdir runs/simclr_cifar10

Expected: about 3 hours on one A100-class GPU (19.5k steps); not run here (2-core CPU). For orientation,
solo-learn reports 90.7% linear accuracy for SimCLR/ResNet-18 after 1000 epochs; 200 epochs land a few
points lower. The final table prints kNN (k=200) and the linear probe next to random init and raw pixels.

Settings follow SimCLR's CIFAR appendix (B.9) and solo-learn: 0.08-1 crops, colour strength 0.5, no
blur at 32 px, temperature 0.2, LARS with lr 0.4 x B/256 (no decay on biases/norms), 10 warmup epochs.
``get_config("smoke")`` shrinks it for tests (digits stand in for CIFAR-10 there, so tests need no files).
"""

from jaxcl import experiment

EPOCH_STEPS = 50_000 // 512


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False)
  c = experiment.base(method="simclr", dataset="cifar10", encoder="resnet18", recipe="simclr",
                      crop_size=32, batch_size=512, steps=200 * EPOCH_STEPS)
  c.model.stem = "cifar"
  c.augment.strength = 0.5
  c.augment.scale = (0.08, 1.0)
  c.method.temperature = 0.2
  c.method.proj_hidden_dim = 2048
  c.method.proj_out_dim = 256
  c.optim.name = "lars"
  c.optim.lr = 0.4
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1e-5
  c.optim.warmup_steps = 10 * EPOCH_STEPS
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.eval.knn_every = 20 * EPOCH_STEPS
  c.eval.batch_size = 512
  if a.smoke:
    # The test machine has no CIFAR-10 archive: the embedded digits (also 32 px) stand in.
    c.data = experiment.data_config("digits")
    experiment.smoke(c)
    c.model.width_multiplier = 0.125
    experiment.shrink_heads(c.method)
  return experiment.lock(c)
