r"""SimCLR on Animal-Shape silhouettes: configs/simclr_digits.py's job with the data swapped.

Command (from the repository root; the silhouettes ship in an installed package, nothing is
downloaded):

  jaxcl train --config configs/simclr_animal_shapes.py --workdir runs/simclr_animal_shapes

Expected (benchmarks/results/default_job.json, 5 seeds; `python benchmarks/default_job.py --table`):
2,000 test silhouettes, kNN k=20 87.8 +- 0.6%, linear probe 90.4 +- 0.8%, against the same encoder at
random init 78.4 +- 1.0 / 79.4 +- 1.4% and raw pixels 84.2 / 79.0%: margins of 3.6 kNN points (5.9
standard deviations of the seed-to-seed spread) and more on every other comparison. Training: 300
steps at batch 256, ~96 s on an idle 2-core CPU (300 x the 0.315 s quiet step of this encoder in
benchmarks/results/step_vs_pytorch.json, plus compilation; the digits job, same encoder and batch,
trained in 96 s there); measured runs took 260-1,181 s on a shared CPU 5-15x loaded. Evaluation
(three representations, 8,000 + 2,000 images, t-SNE map) comes on top. Chosen on validation fold 0
of the train split (benchmarks/default_job.py): kNN 86.7 vs raw pixels 81.1, linear 90.9 vs 79.6.

Arguments (``--config configs/simclr_animal_shapes.py:steps=300,min_scale=0.2``), the knobs that
``benchmarks/default_job.py`` chose between on validation folds of the train split:

* ``layers``: SmallCNN depth, 3 (32-64-128) or 4 (32-64-128-128), every layer stride 2;
* ``steps``: optimizer steps at batch 256;
* ``min_scale``: the smallest random crop, as a fraction of the image's area.

Variant of configs/simclr_digits.py (same projector, loss, optimiser and evaluation): the 28 px
silhouettes are resized to the config's 32 px on the host and horizontal flips are on (a mirrored
animal is still that animal; a mirrored digit is not). ``get_config("smoke")`` is simclr_digits' smoke
config, on digits, for tests.
"""

from jaxcl import experiment

_WIDTHS = (32, 64, 128, 128)


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False, layers=4, steps=300, min_scale=0.4)
  c = experiment.on_animal_shapes(__file__, "simclr_digits", "smoke" if a.smoke else None)
  if a.smoke:
    return c
  if a.layers not in (3, 4):
    raise ValueError(f"config argument layers={a.layers}: 3 or 4 (SmallCNN depth)")
  c.unlock()
  c.steps = a.steps
  c.augment.scale = (a.min_scale, 1.0)
  c.model.widths = _WIDTHS[:a.layers]
  c.model.strides = (2,) * a.layers
  return experiment.lock(c)
