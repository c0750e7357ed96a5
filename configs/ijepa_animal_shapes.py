r"""I-JEPA (Assran et al. 2023) on Animal-Shape silhouettes: configs/ijepa_digits.py with the data
swapped, as `benchmarks/methods.py` runs its Animal-Shape cells.

Command:

  jaxcl train --config configs/ijepa_animal_shapes.py --workdir runs/ijepa_animal_shapes

Expected: the README's methods table, row ijepa on animal_shapes (3 seeds, `python benchmarks/methods.py
--rows ijepa`): kNN (k=20) 68.2 ± 0.9%, linear probe 74.8 ± 0.7%, below raw pixels (84.2 / 78.9%), as
on digits; about 190 s of training per run on the shared 2-core CPU.

Variant of configs/ijepa_digits.py (same ViT, predictor, masks, optimiser and evaluation): the 28 px
silhouettes are resized to the config's 32 px on the host (data.image_size stays 32, so the 8x8 patch
grid is the digits job's), and horizontal flips are on (a mirrored animal is still that animal).
`get_config("smoke")` is ijepa_digits' smoke config, on digits, for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  return experiment.on_animal_shapes(__file__, "ijepa_digits", arg)
