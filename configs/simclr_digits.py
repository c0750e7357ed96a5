r"""SimCLR on the embedded digits dataset at 32 px: the base of the default job.

The default job (README command 1) is configs/simclr_animal_shapes.py, this job on Animal-Shape
silhouettes: on digits raw pixels are a near-ceiling floor (8x8 images upsampled), and the margin
below is within the seed-to-seed spread (benchmarks/default_job.py).

Command (from the repository root; the digits dataset is built on first use, nothing is downloaded):

  jaxcl train --config configs/simclr_digits.py --workdir runs/simclr_digits

Expected: about 2 minutes on a 2-core CPU (measured: 122 s wall for pretraining + evaluation, 96 s of
it training 300 steps at ~860 images/s, nothing else running), then this table (540 test digits;
kNN k=20, temperature 0.1; seed 0):

  | representation             | kNN   | linear probe | online probe |
  | simclr (pretrained)        | 96.9% | 98.9%        | 98.3%        |
  | random init (same encoder) | 94.6% | 96.5%        | -            |
  | raw pixels                 | 96.9% | 96.7%        | -            |

Over seeds 0-2: kNN 97.2 +- 0.6%, linear 98.9 +- 0.2% (raw pixels 96.9 / 96.7%); see the README.

Tests use ``get_config("smoke")``: a few steps at a tiny batch, no evaluation.

Why these settings: digits are 8x8 images upsampled to 32 px, single channel, so views use gentle crops
(scale 0.4-1, aspect 3/4-4/3), no flips (a mirrored 2 is not a 2), brightness/contrast jitter only, and no
blur; a small projector (256-256-64) fits a 128-d SmallCNN; stride 2 from the first layer lets each unit see
more of the digit (tuning runs, 200 steps: kNN 93.7% -> 97.4% at equal cost), and a 4th layer lets the
last one see all of it (3 validation folds: kNN 0.9 points below raw pixels -> 0.7 above); AdamW
converges in a few hundred steps at batch 256, where LARS needs thousands. kNN uses k=20: with ~126
training images per class, k=200 votes across classes (raw pixels: 92.4% at k=200, 96.9% at k=20).
"""

from jaxcl import experiment


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False)
  c = experiment.base(method="simclr", dataset="digits", encoder="small_cnn", recipe="simclr",
                      crop_size=32, batch_size=256, steps=300)
  c.augment.scale = (0.4, 1.0)
  c.augment.flip_prob = 0.0
  c.augment.jitter = (0.4, 0.4, 0.0, 0.0)
  c.augment.jitter_prob = 0.8
  c.augment.grayscale_prob = 0.0
  c.augment.blur_prob = (0.0, 0.0)
  # Stride 2 from the first layer: each unit then sees more of the (4x upsampled) 8x8 digit, which
  # raised kNN accuracy from 93.7% (strides 1-2-2) to 97.4% at the same cost per step. A 4th layer
  # (2x2 map) lets each final unit see the whole 32 px image before the global average pool: on 3
  # validation folds of the train split kNN went from 0.9 points below raw pixels to 0.7 above.
  c.model.widths = (32, 64, 128, 128)
  c.model.strides = (2, 2, 2, 2)
  c.method.temperature = 0.2
  c.method.proj_hidden_dim = 256
  c.method.proj_out_dim = 64
  c.optim.name = "adamw"
  c.optim.lr = 2e-3
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 20
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  c.eval.batch_size = 256
  # ~126 training images per class: k=200 would vote across classes (raw pixels: 92.4% at k=200,
  # 96.9% at k=20, the figure the project's reference table uses).
  c.eval.knn_k = 20
  # Chosen on the online probe's own training loss over the last 50 steps (lr 1e-3: 1.29, 1e-2: 0.50,
  # 3e-2: 0.38), not on test accuracy.
  c.eval.online_probe_lr = 3e-2
  if a.smoke:
    experiment.smoke(c)
    c.method.proj_hidden_dim = 32
    c.method.proj_out_dim = 16
    c.model.widths = (8, 8, 16)  # 3 layers: a 4th adds compile time to every test and tests nothing new
    c.model.strides = (2, 2, 2)
  return experiment.lock(c)
