"""Encoder configs: ``default_config(name)``, ``check_config(cfg)``, ``create_encoder(cfg, ...)`` and
``EncoderFactory`` (what a method is given to build its encoder with its own keys)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxcl.models import pretrained
from jaxcl.models.resnet import ResNet
from jaxcl.models.sequence import Conv1DEncoder
from jaxcl.models.small_cnn import POOLS as CNN_POOLS
from jaxcl.models.small_cnn import SmallCNN
from jaxcl.models.text import TextTransformer
from jaxcl.models.vit import _VIT_SIZES, ViT

ENCODERS = ("small_cnn", "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small", "vit_base")
TEXT_ENCODERS = ("text_transformer", "bert")  # the towers of text methods (method.name='retrieval')
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _check_name(name: str) -> None:
  if name not in ENCODERS + TEXT_ENCODERS:
    raise ValueError(f"model.name must be one of {ENCODERS + TEXT_ENCODERS}, got {name!r}")


def default_config(encoder: str = "small_cnn") -> ml_collections.ConfigDict:
  """The ``model`` sub-config of an experiment: the encoder's name and every constructor argument.

  Args:
    encoder: one of ``ENCODERS`` (images) or ``TEXT_ENCODERS`` (text towers).

  Returns:
    A ConfigDict with ``name``, ``dtype`` (compute) and ``param_dtype`` ("float32" | "bfloat16"), and
    the encoder's own fields (ResNet: stem, width_multiplier, zero_init_residual; ViT: image_size,
    patch_size, pool, mlp_ratio, and width, depth, heads, which default to the size the name gives;
    SmallCNN: widths, strides, pool; text_transformer: width, depth, heads, mlp_ratio, pool; bert:
    pretrained, the model folder whose config.json sizes the tower, and pool, '' for the folder's).
  """
  _check_name(encoder)
  cfg = ml_collections.ConfigDict()
  cfg.name = encoder
  cfg.dtype = "float32"
  cfg.param_dtype = "float32"
  if encoder == "small_cnn":
    cfg.widths = (32, 64, 128)
    # Stride 2 from the first layer: 5x cheaper than 1-2-2 on 32 px digits and better features there
    # (SimCLR digits job, 300 steps: kNN 97.4% / linear 99.4% vs 94.6% / 98.1% with 1-2-2).
    cfg.strides = (2, 2, 2)
    cfg.pool = "mean"  # "mean": global average pool | "flatten": the last map, layout kept
  elif encoder == "text_transformer":
    cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio = 128, 2, 4, 4.0
    cfg.pool = "mean"  # "mean" over real tokens | "cls": the first token's output
    cfg.position_embedding = True  # False with depth 0: a bag of tokens
  elif encoder == "bert":
    cfg.pretrained = ""  # a Hugging Face / sentence-transformers folder (required)
    cfg.pool = ""        # "" the folder's (1_Pooling; mean without one) | "mean" | "cls" | "max"
    cfg.dropout = True   # drop out in training at config.json's rates, as Hugging Face fine-tunes
  elif encoder.startswith("resnet"):
    cfg.stem = "imagenet"
    cfg.width_multiplier = 1.0
    cfg.zero_init_residual = False
  else:
    cfg.width, cfg.depth, cfg.heads = _VIT_SIZES[encoder[len("vit_"):]]
    cfg.image_size = 224
    cfg.patch_size = 16
    cfg.pool = "cls"
    cfg.mlp_ratio = 4.0
  return cfg


def _dtype(cfg, field):
  value = cfg.get(field, "float32")
  if value not in _DTYPES:
    raise ValueError(f"model.{field} must be one of {tuple(_DTYPES)}, got {value!r}")
  return _DTYPES[value]


def dtypes(cfg: ml_collections.ConfigDict) -> dict[str, jnp.dtype]:
  """``dtype`` (compute) and ``param_dtype`` keyword arguments from a ``model`` config."""
  return dict(dtype=_dtype(cfg, "dtype"), param_dtype=_dtype(cfg, "param_dtype"))


def create_encoder(
    cfg: ml_collections.ConfigDict,
    *,
    in_channels: int,
    rngs: nnx.Rngs,
    image_size: int | None = None,
) -> nnx.Module:
  """Builds the encoder that ``cfg`` (a ``default_config`` result, possibly edited) describes.

  Args:
    cfg: the ``model`` config.
    in_channels: channels of the input images (1 for digits, 3 for RGB).
    rngs: initialisation keys.
    image_size: training image side; overrides ``cfg.image_size`` for ViTs (their position-embedding
      grid) and SmallCNN's ``pool="flatten"`` (its output size); ResNets ignore it.

  Returns:
    An ``nnx.Module`` called as ``encoder(images, *, train, axis_name=None) -> [B, encoder.out_dim]``.
  """
  _check_name(cfg.name)
  if cfg.name in TEXT_ENCODERS:
    raise ValueError(f"model.name={cfg.name!r} is a text tower: it trains with method.name='retrieval' "
                     "on a text dataset; image methods need one of " + ", ".join(ENCODERS) + ".")
  kw = dict(in_channels=in_channels, rngs=rngs, **dtypes(cfg))
  if cfg.name == "small_cnn":
    return SmallCNN(widths=tuple(cfg.widths), strides=tuple(cfg.strides), pool=cfg.get("pool", "mean"),
                    image_size=image_size, **kw)
  if cfg.name.startswith("resnet"):
    return ResNet(int(cfg.name[len("resnet"):]), stem=cfg.stem, width_multiplier=cfg.width_multiplier,
                  zero_init_residual=cfg.zero_init_residual, **kw)
  # Configs written before width/depth/heads were fields (old config.json files) get the named size.
  width, depth, heads = _VIT_SIZES[cfg.name[len("vit_"):]]
  width, depth, heads = cfg.get("width", width), cfg.get("depth", depth), cfg.get("heads", heads)
  return ViT(image_size=image_size or cfg.image_size, patch_size=cfg.patch_size, width=width,
             depth=depth, heads=heads, mlp_ratio=cfg.mlp_ratio, pool=cfg.pool, **kw)


def create_text_tower(cfg: ml_collections.ConfigDict, *, vocab_size: int, max_len: int, pad_id: int,
                      rngs: nnx.Rngs) -> nnx.Module:
  """The text tower ``cfg`` (a text ``model`` config) describes: bidirectional ``TextTransformer``, or
  ``BertEncoder`` sized by ``cfg.pretrained``'s config.json (its weights are loaded after init by
  ``pretrained.load_into``).

  Args:
    cfg: the ``model`` config (``name`` in ``TEXT_ENCODERS``).
    vocab_size: the tokenizer's vocabulary (a BERT checkpoint's must hold every id).
    max_len: longest token sequence.
    pad_id: the tokenizer's padding id.
    rngs: initialisation keys.

  Returns:
    An ``nnx.Module`` called as ``tower(ids [B, T]) -> float32 [B, tower.out_dim]``.
  """
  if cfg.name == "bert":
    folder = pretrained.read_folder(cfg.pretrained)
    if vocab_size > folder.config["vocab_size"]:
      raise ValueError(f"the tokenizer has {vocab_size} ids but {folder.path}/config.json has "
                       f"vocab_size={folder.config['vocab_size']}; use the folder's own tokenizer.")
    return pretrained.build_tower(folder, rngs=rngs, pool=cfg.get("pool") or None, pad_id=pad_id,
                                  dropout=bool(cfg.get("dropout", False)), **dtypes(cfg))
  return TextTransformer(
      vocab_size=vocab_size, max_len=max_len, width=cfg.width, depth=cfg.depth, heads=cfg.heads,
      mlp_ratio=cfg.mlp_ratio, causal=False, pool=cfg.pool, pad_id=pad_id,
      position_embedding=cfg.get("position_embedding", True), rngs=rngs, **dtypes(cfg))


TEXT_POOLS = ("mean", "cls")  # text_transformer's; a BERT tower's: validation._check_pretrained


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the ``model`` field and the fix for a setting no encoder can build.

  Only the rules of the encoders themselves; what a method needs of its encoder (I-JEPA's ViT, the
  retriever's text tower) its method checks.
  """
  name = cfg.get("name")
  if name == "small_cnn" and cfg.get("pool", "mean") not in CNN_POOLS:
    raise ValueError(f"config.model.pool={cfg.pool!r}: small_cnn pools with one of {CNN_POOLS}: "
                     "'mean' (global average) or 'flatten' (the last feature map as it is).")
  if name == "text_transformer" and cfg.get("pool") not in TEXT_POOLS:
    raise ValueError(f"config.model.pool={cfg.get('pool')!r}: a text tower pools with 'mean' or "
                     "'cls'.")


@dataclasses.dataclass(frozen=True, eq=False)
class EncoderFactory:
  """Builds the encoder a ``model`` config describes, when a method asks (with the method's keys, at
  the point of its construction the method chooses, so initialisation order stays the method's).

  A method is given this instead of the config: it calls ``factory(in_channels=..., rngs=...)`` for
  an image encoder, ``text_tower`` or ``sequence_encoder`` for the other kinds, and reads ``dtypes``
  for the heads it builds next to the encoder.
  """

  config: ml_collections.ConfigDict

  @property
  def name(self) -> str:
    """The encoder's name (``model.name``), for messages."""
    return str(self.config.name)

  @property
  def dtypes(self) -> dict[str, jnp.dtype]:
    """``dtype`` / ``param_dtype`` keyword arguments for the heads built next to the encoder."""
    return dtypes(self.config)

  def __call__(self, *, in_channels: int, rngs: nnx.Rngs, image_size: int | None = None) -> nnx.Module:
    """The image encoder (``create_encoder``)."""
    return create_encoder(self.config, in_channels=in_channels, rngs=rngs, image_size=image_size)

  def text_tower(self, *, vocab_size: int, max_len: int, pad_id: int, rngs: nnx.Rngs) -> nnx.Module:
    """A text tower (``create_text_tower``): bidirectional ``TextTransformer`` or a pretrained
    ``BertEncoder``."""
    c = self.config
    if c.name not in TEXT_ENCODERS:
      raise ValueError(f"config.model.name={c.name!r}: a text tower needs model.name in "
                       f"{TEXT_ENCODERS} (jaxcl.models.default_config('text_transformer')).")
    return create_text_tower(c, vocab_size=vocab_size, max_len=max_len, pad_id=pad_id, rngs=rngs)

  def sequence_encoder(self, *, in_channels: int, rngs: nnx.Rngs) -> Conv1DEncoder:
    """The strided 1-D convolutional encoder of a ``conv1d`` config (CPC's)."""
    c = self.config
    return Conv1DEncoder(in_channels, widths=c.widths, kernels=c.kernels, strides=c.strides,
                         rngs=rngs)


def count_params(module: nnx.Module) -> int:
  """Number of scalars in the module's ``nnx.Param`` variables (works on ``nnx.eval_shape`` output)."""
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
