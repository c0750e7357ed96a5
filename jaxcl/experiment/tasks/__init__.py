"""One module a kind of run, chosen by what the method declares.

``kind(config)`` is the method's ``data_kind`` ("image", "sequence", "text"), or "captions" when the
method ``reads_captions`` and the dataset has them. Each task module has
``prepare(config, workdir, mesh) -> (setup, evaluator, iterator(start_state))``: its data stream, its
``TrainSetup`` and its evaluator (``monitor`` during training, ``final`` at the end; see
``tasks.base``). ``jaxcl.experiment.run`` holds the one loop around them and knows no kind of run.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from jaxcl import methods
from jaxcl.experiment.tasks import captions, image, sequence, text

#: The task module of each kind of run.
TASKS = {"image": image, "sequence": sequence, "text": text, "captions": captions}


def kind(config: ml_collections.ConfigDict) -> str:
  """The kind of run ``config`` is: its method's ``data_kind``, or "captions" (see module doc)."""
  if captions.is_caption_run(config):
    return "captions"
  return methods.method_class(config.method.name).data_kind


def prepare(config: ml_collections.ConfigDict, workdir: str | None,
            mesh_: jax.sharding.Mesh) -> tuple[Any, Any, Any]:
  """``(setup, evaluator, iterator(start_state))`` of the task ``kind(config)`` picks."""
  return TASKS[kind(config)].prepare(config, workdir, mesh_)


__all__ = ["TASKS", "captions", "image", "kind", "prepare", "sequence", "text"]
