"""Every contrastive / self-supervised objective as a pure JAX function of embeddings.

Losses take arrays and keyword-only hyperparameters and return a float32 scalar. Those whose negatives
or batch statistics span the batch take ``axis_name``: called inside ``jax.shard_map`` over that mesh
axis with each device's rows, they return the loss of the global batch, with the single-device value
and gradient. Both ``jax.grad`` of the ``shard_map``-ed loss and ``jax.grad`` inside it w.r.t. replicated
parameters are tested equal to the single-device gradient; the latter comes out already summed over
devices, so do not ``psum`` it again (details in ``jaxcl.losses.contrastive``). Per-row losses without
negatives (``byol_loss``, ``negative_cosine``, ``contrastive_margin``, ``triplet_margin``) return the
local mean: take ``jax.lax.pmean`` of it; the triplet miners take ``axis_name`` and mine the global batch. ``nt_xent``, ``info_nce``, ``clip_loss``, ``sigmoid_loss`` and ``retrieval_infonce`` also take
``block_size`` to switch to the memory-linear tiled variants in ``jaxcl.losses.blockwise``.
``cpc_infonce`` (and its ``cpc_accuracy``) take sequences: predictions [B, S, K, D] and latents [B, S, D].
``dino_loss`` takes views of prototype logits: student [Vs, N, K], teacher [Vt, N, K] and the centre [K].
``retrieval_infonce`` takes queries, positives [n, D] and hard negatives [n, H, D].
``matryoshka(loss_fn, dims)`` sums any of them over renormalised embedding prefixes (Kusupati et al.
2022). ``jepa_loss`` takes I-JEPA's patch predictions [b, M, N, D], targets [b, N, D] and block masks [b, M, N].
``two_view_loss(name_or_path, kwargs)`` (``jaxcl.losses.registry``) turns any of them, or a user's own
loss, into the two-view objective that a method is given by config (``method.loss``).

Inputs are upcast to float32 before any arithmetic. Similarity matrices use JAX's default matmul
precision, which on TPU (and on GPU with TF32) rounds float32 products; wrap the call in
``jax.default_matmul_precision("highest")`` where the last digits matter.
"""

# A helper, not an objective (so not in __all__, which lists what the tests cover as losses).
from jaxcl.losses.ops import l2_normalize  # noqa: F401
from jaxcl.losses.contrastive import clip_loss, info_nce, moco_infonce, nt_xent
from jaxcl.losses.cpc import cpc_accuracy, cpc_infonce
from jaxcl.losses.debiased import dcl, hard_negative_nt_xent
from jaxcl.losses.dino import dino_center, dino_loss
from jaxcl.losses.jepa import jepa_loss
from jaxcl.losses.metric_learning import (
    batch_hard_triplet,
    batch_semi_hard_triplet,
    contrastive_margin,
    triplet_margin,
)
from jaxcl.losses.retrieval import retrieval_infonce
from jaxcl.losses.metrics import alignment, embedding_std, positive_top1, rankme, uniformity
from jaxcl.losses.sigmoid import sigmoid_loss
from jaxcl.losses.ssl import barlow_twins, byol_loss, negative_cosine, vicreg
from jaxcl.losses.supervised import supcon
# The loss plug-in of the two-view methods (losses by name or by "module:function" path).
from jaxcl.losses.registry import NAMES as TWO_VIEW_LOSSES  # noqa: F401
from jaxcl.losses.registry import two_view_loss  # noqa: F401
# A wrapper of any loss over embedding prefixes (Matryoshka), not an objective of its own.
from jaxcl.losses.matryoshka import matryoshka  # noqa: F401

__all__ = [
    "alignment",
    "barlow_twins",
    "batch_hard_triplet",
    "batch_semi_hard_triplet",
    "byol_loss",
    "clip_loss",
    "contrastive_margin",
    "cpc_accuracy",
    "cpc_infonce",
    "dcl",
    "dino_loss",
    "embedding_std",
    "hard_negative_nt_xent",
    "info_nce",
    "jepa_loss",
    "moco_infonce",
    "negative_cosine",
    "nt_xent",
    "positive_top1",
    "rankme",
    "retrieval_infonce",
    "sigmoid_loss",
    "supcon",
    "triplet_margin",
    "uniformity",
    "vicreg",
]
