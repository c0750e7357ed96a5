r"""DINO (Caron et al. 2021) on digits at 32 px: self-distillation with an EMA teacher, centring and
sharpening, no negatives and no predictor.

Command:

  jaxcl train --config configs/dino_digits.py --workdir runs/dino_digits

Expected (seed 0; 493 s of training on the shared 2-core CPU while two other jobs ran): kNN (k=20) 95.0%, linear probe 98.1%, online probe 93.0%, against the same
encoder at random init 87.8% / 96.3% and raw pixels 96.9% / 96.7%. Over seeds and on Animal-Shape:
`python benchmarks/methods.py --rows dino` and the README's methods table (3 seeds: kNN 94.7 ± 0.3%,
linear 97.8 ± 0.3%; about 105 s of training per run when nothing else runs).
Variant of configs/simclr_digits.py (same data, encoder, views, optimiser and evaluation);
`get_config("smoke")` shrinks it for tests. Multi-crop: add --config.augment.num_local=4 (14 px local
views next to the 32 px global ones).

Why these settings: the paper's head (3-layer GELU MLP, 256-d bottleneck, weight-normalised last layer)
scaled to a 128-d SmallCNN (256 hidden, 64-d bottleneck, K = 1024 prototypes), with BatchNorm in the
head as the paper uses for ResNets: without it the convnet's post-ReLU features share one large mean
direction, every image lands on the same prototype within 4 steps and centring then flattens the
teacher to uniform (measured: teacher entropy 6.77 of log K = 6.93 after 150 steps; with BN 4.4, loss
falling, kNN 93% at 150 steps). A 300-step run is about
1.5 epochs of ImageNet-style warm-up, so the teacher temperature is the paper's fixed 0.04 without
warm-up, the last layer is frozen for the first epoch (5 steps), and the teacher momentum starts at
0.99 (BYOL's digits config) instead of 0.996; weight decay follows the paper's cosine 0.04 -> 0.4.
"""

from jaxcl import experiment


def get_config(arg=None):
  c, a = experiment.variant(__file__, "simclr_digits", arg, "dino", out_dim=1024, head_hidden_dim=256,
                            head_bottleneck_dim=64, teacher_temp=0.04, warmup_teacher_temp=0.04,
                            momentum=0.99, freeze_last_layer_steps=5, head_bn=True)
  c.optim.weight_decay = 0.04
  c.optim.weight_decay_schedule = "cosine"
  c.optim.weight_decay_end = 0.4
  c.optim.grad_clip_norm = 3.0
  if a.smoke:
    c.method.freeze_last_layer_steps = 1
  return experiment.lock(c)
