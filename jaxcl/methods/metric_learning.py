"""Siamese and triplet metric learning with labels (Hadsell, Chopra and LeCun 2006; Schroff, Kalenichenko
and Philbin 2015; Hermans, Beyer and Leibe 2017).

An encoder and a linear embedding head trained with a margin loss on labelled pairs or triplets mined
from the global batch: ``batch_hard_triplet`` (default), ``batch_semi_hard_triplet``,
``triplet_margin`` or ``contrastive_margin`` (the Siamese loss), or any loss of the plug-in
(``method.loss``). Mining runs over every device's rows (the losses' ``axis_name``), so it sees the
whole global batch. ``distance="cosine"`` L2-normalises the embeddings before the loss (distances on
the unit sphere, margins in [0, 2]); ``"euclidean"`` uses them as they are. Pair it with
``data.examples_per_class`` (P classes x K images per batch) and, for the metric-learning protocol,
``data.train_classes`` (train on the first classes, evaluate Recall@K / MAP@R on the others).
"""

from __future__ import annotations

import ml_collections

from jaxcl import losses
from jaxcl.methods.base import bad_field
from jaxcl.methods.image import TwoViewMethod

DISTANCES = ("cosine", "euclidean")


def default_config() -> ml_collections.ConfigDict:
  """Batch-hard triplets, margin 0.2 on cosine distance, a linear 128-d embedding head."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "metric_learning"
  cfg.loss = "batch_hard_triplet"  # or batch_semi_hard_triplet, triplet_margin, contrastive_margin
  cfg.loss_kwargs = ml_collections.ConfigDict({"margin": 0.2})
  cfg.loss_block_size = 0
  cfg.distance = "cosine"          # "cosine": L2-normalised embeddings; "euclidean": as they are
  cfg.temperature = 0.1            # for a temperature loss chosen through method.loss
  cfg.proj_hidden_dim = 512
  cfg.proj_out_dim = 128
  cfg.proj_layers = 1              # one linear layer: the embedding head of the metric-learning papers
  cfg.proj_bn = False
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.sync_bn = True
  return cfg


class MetricLearning(TwoViewMethod):
  """Encoder + embedding head trained with a labelled margin loss (see the module docstring).

  Both augmented views of each image are embedded and stacked with their labels, so every image
  brings a positive of its own even in a batch without ``examples_per_class``.
  """

  def __init__(self, method_config: ml_collections.ConfigDict, **parts):
    super().__init__(method_config, **parts)
    self.distance = str(method_config.distance)
    if self.distance not in DISTANCES:
      raise ValueError(f"method.distance={self.distance!r}: use one of {DISTANCES}.")

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    super().check_config(method_config, model=model, augment=augment)
    if method_config.distance not in DISTANCES:
      bad_field("method.distance", method_config.distance, "use 'cosine' (L2-normalised embeddings) "
                "or 'euclidean'.")

  def loss_from_embeddings(self, emb, batch, *, axis_name=None):
    if self.distance == "cosine":
      emb = dict(emb, z1=losses.l2_normalize(emb["z1"]), z2=losses.l2_normalize(emb["z2"]))
    return super().loss_from_embeddings(emb, batch, axis_name=axis_name)
