r"""DINO (Caron et al. 2021) on Animal-Shape silhouettes: configs/dino_digits.py with the data swapped,
as `benchmarks/methods.py` runs its Animal-Shape cells.

Command:

  jaxcl train --config configs/dino_animal_shapes.py --workdir runs/dino_animal_shapes

Expected: the README's methods table, row dino on animal_shapes (3 seeds, `python benchmarks/methods.py
--rows dino`): kNN (k=20) 84.6 ± 0.3%, linear probe 82.8 ± 1.0%, against the SmallCNN at random init
72.6 / 78.4% and raw pixels 84.2 / 78.9%; about 260 s of training per run on the shared 2-core CPU.

Variant of configs/dino_digits.py (same encoder, head, views, optimiser and evaluation): the 28 px
silhouettes are resized to the config's 32 px on the host (data.image_size stays 32, so the views and
the encoder are the digits job's), and horizontal flips are on (a mirrored animal is still that animal;
a mirrored digit is not). `get_config("smoke")` is dino_digits' smoke config, on digits, for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  return experiment.on_animal_shapes(__file__, "dino_digits", arg)
