r"""DINO (Caron et al. 2021) with a ViT on digits at 32 px: the paper's own kind of encoder, next to
configs/dino_digits.py's SmallCNN.

Command:

  jaxcl train --config configs/dino_vit_digits.py --workdir runs/dino_vit_digits

Expected (3 seeds, `python benchmarks/methods.py --rows dino_vit`, about 160 s of training each on the
2-core CPU): kNN (k=20) 80.5 +- 3.2%, linear probe 91.8 +- 0.9%, online probe 88.2 +- 2.4%; on
Animal-Shape 66.5 +- 0.5 / 74.4 +- 1.2. That is below the SmallCNN's random init (87.9 / 96.3) and raw
pixels (96.9 / 96.7): at this budget DINO does not make this small ViT useful (README, methods table).

Variant of configs/dino_digits.py (same data, views, head size, teacher and evaluation as there and as
configs/simclr_digits.py) on the ViT of configs/ijepa_digits.py (width 64, depth 4, 4 heads, 4 px
patches: an 8x8 grid, mean pooling); `get_config("smoke")` shrinks both for tests (width 16, depth 1,
2 heads, a tiny head). 150 steps of 128: about 4.5-5 minutes on the 2-core CPU while other jobs ran
(1.7 s per step, 250-270 s of training, 7 s of evaluation without baselines); ~12 epochs.

Why these settings: DINO's ViT recipe where it differs from its ResNet one: AdamW at the ViT base
learning rate 5e-4 (the rate configs/ijepa_digits.py trains this ViT at), weight decay on a cosine from
0.04 to 0.4, gradients clipped at norm 3, the last layer frozen for the first epoch (10 steps of 128
of the 1,257 training digits), and the teacher temperature at 0.04 throughout (a run this short is
inside the paper's 30-epoch warm-up). One exception, measured: the head keeps dino_digits' BatchNorm.
Without it (the paper's ViT head, --config.method.head_bn=False) this ViT collapses to the uniform
output as the SmallCNN does: its mean-pooled features of different digits share one direction
(embedding std 0.026 where spread features give 1/sqrt(64) = 0.125), so once centred the teacher's
logits barely differ; teacher entropy 6.91 of log K = 6.93 from step 50 on, loss stuck at log K, and
after 150 steps kNN 78.0% / linear 91.7% / online probe 74.4%, the ViT's random-init level (78.5 / 91.1
in ijepa_digits). With BN (same seed and steps): teacher entropy 5.4, loss falling (7.0 -> 6.4), kNN
81.7% / linear 92.8% / online probe 86.5%. Also tried without BN, 60 steps each: lr 2e-3 and CLS
pooling collapse the same way.
"""

from jaxcl import experiment


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False)
  size = "smoke" if a.smoke else None
  c = experiment.sibling(__file__, "dino_digits", size)
  c.unlock()
  # The encoder exactly as I-JEPA trains it (its smoke variant: the tiny ViT).
  c.model = experiment.sibling(__file__, "ijepa_digits", size).model
  c.method.head_bn = True  # see the docstring: without it this ViT's teacher collapses to uniform
  c.method.warmup_teacher_temp = c.method.teacher_temp = 0.04
  c.optim.name = "adamw"
  c.optim.lr = 5e-4
  c.optim.weight_decay, c.optim.weight_decay_schedule, c.optim.weight_decay_end = 0.04, "cosine", 0.4
  c.optim.grad_clip_norm = 3.0
  if not a.smoke:
    c.batch_size = 128
    c.steps = 150
    c.method.freeze_last_layer_steps = 10  # one epoch: 1,257 training digits / 128
  return experiment.lock(c)
