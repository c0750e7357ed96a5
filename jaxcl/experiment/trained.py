"""A finished run's encoders for serving: its config and checkpoint turned into
``jaxcl.serve.TrainedEncoders`` (what ``jaxcl embed`` / ``search`` / ``mine`` use).
"""

from __future__ import annotations

import os

import ml_collections

from jaxcl import evaluate, methods, serve
from jaxcl.experiment import run


def restore_encoders(config: ml_collections.ConfigDict, workdir: str | None, *,
                     step: int | None = None, text_for: str | None = None) -> serve.TrainedEncoders:
  """The encoders of the run in ``workdir`` at its newest complete checkpoint (or ``step``'s); with
  no workdir, the pretrained towers of ``model.pretrained`` before any jaxcl training.

  Args:
    config: the run's config (its ``config.json``).
    workdir: the run's folder; None: ``config.model.pretrained``'s weights.
    step: the checkpoint to restore; None: the newest complete one.
    text_for: the command that needs a text run (e.g. "jaxcl mine"): a run of another kind fails
      before its checkpoint is read.
  """
  if text_for and config.method.name not in methods.TEXT_METHODS:
    raise ValueError(f"{text_for} needs a text retrieval run (method.name='retrieval'); this run "
                     f"trained {config.method.name!r} on {config.data.name!r}.")
  pretrained = config.model.get("pretrained") or None
  if workdir is None:
    if not pretrained:
      raise ValueError(f"{text_for or 'this command'} needs --workdir (the run whose towers are "
                       f"used), or --config with model.pretrained (a pretrained model's towers).")
    (method, evaluator), meta = run.initial_method(config), {}
  else:
    workdir = os.path.abspath(workdir)
    method, evaluator, meta, _ = run.restore_method(config, workdir, step=step)
  facts = dict(workdir=workdir, step=int(meta.get("step", -1)), method=config.method.name,
               data=config.data.name, mesh=evaluator.mesh, pretrained=pretrained)
  if config.method.name in methods.TEXT_METHODS:
    tokens = evaluator.tokens

    def documents(texts, progress=None):
      return evaluator.embed(method.encode_documents, tokens.encoder(texts)[0], progress)

    def queries(texts, progress=None):
      # A few queries (jaxcl search) run as a small batch, not the evaluation's; a bucket size,
      # so every call reuses one compiled tower.
      size = serve.bucket(len(texts), multiple_of=evaluator.mesh.size, most=evaluator.batch_size())
      return evaluate.extract_features(method.encode_queries, tokens.query_encoder(texts)[0],
                                       batch_size=size, mesh=evaluator.mesh, pixels=False,
                                       progress=progress)

    return serve.TrainedEncoders(kind="text", encode_documents=documents, encode_queries=queries,
                                 **facts)

  def images(pixels, progress=None):
    size = serve.bucket(len(pixels), multiple_of=evaluator.mesh.size, most=evaluator.batch_size())
    return evaluate.extract_features(method, pixels, batch_size=size, mesh=evaluator.mesh,
                                     progress=progress)

  return serve.TrainedEncoders(kind="image", encode_images=images, **facts)
