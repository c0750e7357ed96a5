r"""SimCLR on ImageNet: ResNet-50, batch 4096, LARS, 100 epochs (Chen et al. 2020), for pods.

Prepare ImageNet as TFDS array_record once (imagenet2012 needs the manual download), then on every host
of a TPU pod slice (add --distributed there, so JAX finds the coordinator from the TPU metadata) or
under SLURM (one process per GPU; detected from the environment):

  jaxcl prepare-data imagenet2012 --manual_dir /data/imagenet
  jaxcl train --config configs/simclr_imagenet.py --workdir gs://bucket/runs/simclr_r50 [--distributed]

Expected: not measured here (no accelerator); the paper reports ~1.5 hours on 128 TPU v3 cores for
100 epochs (31.3k steps) at this batch, and 64.5%
(100 epochs) linear top-1 (69.3% at 1000 epochs); not run here. kNN runs on a 100k-image memory bank.
Settings as in the paper: LARS lr 0.3 x B/256 (= 4.8), weight decay 1e-6 off biases/norms, 10 warmup
epochs, cosine decay, temperature 0.1, 2048-2048-128 projector, global BN, bfloat16 compute.
``get_config("smoke")`` shrinks it for tests (digits stand in).
"""

from jaxcl import experiment

EPOCH_STEPS = 1_281_167 // 4096


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False)
  c = experiment.base(method="simclr", dataset="imagenet2012", encoder="resnet50", recipe="simclr",
                      crop_size=224, batch_size=4096, steps=100 * EPOCH_STEPS)
  c.method.temperature = 0.1
  c.optim.name = "lars"
  c.optim.lr = 0.3
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1e-6
  c.optim.warmup_steps = 10 * EPOCH_STEPS
  c.data.num_workers = 8
  c.train.compute_dtype = "bfloat16"
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.eval.knn_every = 10 * EPOCH_STEPS
  c.eval.batch_size = 1024
  c.eval.max_train_examples = 100_000
  c.eval.embedding_map = False
  if a.smoke:
    _smoke(c)
  return experiment.lock(c)


def _smoke(c):
  c.data = experiment.data_config("digits")
  c.augment = experiment.augment_config(c.augment.recipe, size=16)
  experiment.smoke(c)
  c.model.width_multiplier = 0.125
  c.train.compute_dtype = "float32"
  experiment.shrink_heads(c.method)
