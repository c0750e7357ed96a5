r"""SimCLR on Animal-Shape silhouettes: configs/simclr_digits.py's job with the data swapped.

Command (from the repository root; the silhouettes ship in an installed package, nothing is
downloaded):

  jaxcl train --config configs/simclr_animal_shapes.py --workdir runs/simclr_animal_shapes

Expected: filled in from benchmarks/results/default_job.json once its test seeds are measured.

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
