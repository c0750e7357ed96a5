"""Encoders (ResNet, ViT, SmallCNN, TextTransformer, BertEncoder with pretrained weights), CPC's
sequence networks (Conv1DEncoder, GRUContext, CausalTransformerContext), heads, I-JEPA's predictor and
synchronised BatchNorm, in Flax NNX.

Every image encoder is called as ``encoder(images [B,H,W,C], *, train, axis_name=None)`` and returns
float32 features [B, encoder.out_dim]; ``axis_name`` synchronises BatchNorm statistics inside
``jax.shard_map``.
"""

from jaxcl.models import pretrained
from jaxcl.models.bert import BertEncoder
from jaxcl.models.config import (ENCODERS, TEXT_ENCODERS, EncoderFactory, check_config, count_params,
                                 create_encoder, create_text_tower, default_config, dtypes)
from jaxcl.models.heads import DINOHead, PredictionHead, ProjectionHead
from jaxcl.models.jepa import JEPAPredictor, sincos_pos_embed_2d
from jaxcl.models.norm import BatchNorm
from jaxcl.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from jaxcl.models.sequence import (CausalTransformerContext, Conv1DEncoder, GRUContext,
                                   sincos_pos_embed_1d)
from jaxcl.models.small_cnn import SmallCNN
from jaxcl.models.text import TextTransformer
from jaxcl.models.vit import TransformerBlock, ViT, vit_base, vit_small, vit_tiny

__all__ = [
    "BertEncoder", "DINOHead", "ENCODERS", "EncoderFactory", "TEXT_ENCODERS", "create_text_tower",
    "pretrained", "BasicBlock", "BatchNorm", "Bottleneck", "CausalTransformerContext",
    "Conv1DEncoder", "GRUContext", "PredictionHead", "ProjectionHead", "ResNet", "JEPAPredictor",
    "SmallCNN", "TextTransformer", "TransformerBlock", "ViT", "check_config", "count_params",
    "create_encoder",
    "default_config", "dtypes", "resnet18", "resnet34", "resnet50", "sincos_pos_embed_1d",
    "sincos_pos_embed_2d", "vit_base", "vit_small", "vit_tiny",
]
