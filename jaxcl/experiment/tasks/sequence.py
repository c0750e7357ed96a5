"""Sequence runs (``data_kind == "sequence"``, CPC on [T, C] signals such as PLAID's currents).

The signals travel the image pipeline (a TFDS data source read through Grain; the method crops its own
windows inside the step) and are evaluated by the same protocol as images (``tasks.image``): kNN and
the linear probe of the pretrained encoder next to the random-init encoder and the raw signal itself.
"""

from __future__ import annotations

import jax
import ml_collections

from jaxcl.experiment.tasks import image


def prepare(config: ml_collections.ConfigDict, workdir: str, mesh_: jax.sharding.Mesh):
  """(setup, evaluator, ``iterator(start_state)``) of a sequence run: the image task's."""
  return image.prepare(config, workdir, mesh_)
