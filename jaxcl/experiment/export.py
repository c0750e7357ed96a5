"""``jaxcl export``: a run that fine-tuned a pretrained BERT-family tower, written back as a
sentence-transformers folder (``jaxcl.serve.export``) from its newest complete checkpoint.

  export.export_run(config, "runs/minilm", "runs/minilm/st_model")
"""

from __future__ import annotations

import os

import jax
import ml_collections

from jaxcl import data, methods, models
from jaxcl.experiment import run
from jaxcl.serve import export as export_lib


def check_exportable(config: ml_collections.ConfigDict) -> models.pretrained.PretrainedFolder:
  """The run's source folder, or one ValueError line saying why this run cannot be exported."""
  m, mc = config.method, config.model
  if m.name not in methods.TEXT_METHODS or mc.get("name") != "bert":
    raise ValueError(f"jaxcl export writes a BERT-family tower fine-tuned from a pretrained folder "
                     f"(method.name='retrieval', model.name='bert'); this run trained "
                     f"model.name={mc.get('name')!r} with method.name={m.name!r}.")
  if not m.shared_towers:
    raise ValueError("method.shared_towers=False: this run has separate query and document towers; "
                     "a sentence-transformers folder holds one.")
  if m.projection_dim:
    raise ValueError(f"method.projection_dim={m.projection_dim}: the projection after pooling is "
                     "not exported; fine-tune with projection_dim=0.")
  return models.pretrained.read_folder(mc.pretrained, field="config.model.pretrained (the run's "
                                       "source folder, whose config and tokenizer are copied)")


def export_run(config: ml_collections.ConfigDict, workdir: str, out: str, *, step: int | None = None,
               overwrite: bool = False) -> str:
  """Writes the fine-tuned tower of the run in ``workdir`` as a sentence-transformers folder ``out``.

  Args:
    config: the run's config (its ``config.json``).
    workdir: the run directory (its checkpoints and tokenizer.json).
    out: the folder to create.
    step: which checkpoint (default: the newest complete one).
    overwrite: replace an existing ``out``.

  Returns:
    ``out`` (absolute).
  """
  source = check_exportable(config)
  if not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir!r} is not a folder; give the directory of a jaxcl train run.")
  if os.path.exists(out) and not overwrite:
    raise ValueError(f"--out={out!r} exists; choose a new folder (or remove it).")
  method, _, _, _ = run.restore_method(config, workdir, step=step)
  tok = os.path.join(workdir, data.text.dataset.TOKENIZER_FILE)
  path = out
  if jax.process_index() == 0:
    path = export_lib.write_sentence_transformers(
        method.query_tower, source, out, max_seq_length=int(config.data.max_length),
        tokenizer_json=tok if os.path.isfile(tok) else None, overwrite=overwrite)
  return path
