"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision")
and SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training").

Two towers: the image encoder with a linear projection, and a small ``TextTransformer`` with a linear
projection, trained on (image, caption) pairs. Without a captioned dataset the captions are templated
from the class names ("a photo of the digit three"), tokenised by a word-level vocabulary built from those
templates; this also gives zero-shot classification by text prompt (``zero_shot_logits``). CLIP learns
``log`` of its logit scale (init ``log(1/0.07)``, scale clipped at 100) with the symmetric cross-entropy;
SigLIP learns ``log`` scale (init ``log 10``) and a bias (init -10) with the pairwise sigmoid loss.

With a captioned dataset (``jaxcl prepare-data --from_captions``; the method is built with the BPE
tokenizer's ``vocab_size`` and ``pad_id``) the text tower reads each row's own caption,
``batch["caption_ids"]`` [b, data.max_length], instead of the class-prompt table. Several rows can show
one image (COCO has five captions per image): CLIP's loss then does not count a caption of the same
image (same ``batch["label"]``, the image's index) as a negative, through ``retrieval_infonce``'s
``positive_keys`` (symmetric, ``temperature = 1 / logit_scale``: CLIP's loss with that mask). The
memory-linear form (``loss_block_size > 0``) and SigLIP's sigmoid loss have no such mask: there a
same-image pair in one batch counts as a negative (rare when images far outnumber the batch).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxcl import augment, losses, models
from jaxcl.methods.base import Facts
from jaxcl.methods.image import ImageMethod, global_mean

PAD, EOS, UNK = 0, 1, 2


def _base_config(name: str) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.embed_dim = 256
  cfg.text_width = 128
  cfg.text_depth = 2
  cfg.text_heads = 4
  cfg.text_causal = True
  cfg.text_pool = "eos"
  # "{}" is the class name (numerals spelled out); digits configs use ("a photo of the digit {}",).
  cfg.caption_templates = ("a photo of the {}",)
  cfg.sync_bn = True
  cfg.loss_block_size = 0  # > 0: memory-linear tiled loss with this block size
  return cfg


def clip_default_config() -> ml_collections.ConfigDict:
  """CLIP's hyperparameters: logit scale init 1/0.07, clipped at 100; a tiny causal text tower."""
  cfg = _base_config("clip")
  cfg.init_logit_scale = 1 / 0.07
  cfg.max_logit_scale = 100.0
  return cfg


def siglip_default_config() -> ml_collections.ConfigDict:
  """SigLIP's hyperparameters: logit scale init 10, bias init -10."""
  cfg = _base_config("siglip")
  cfg.init_logit_scale = 10.0
  cfg.init_logit_bias = -10.0
  cfg.max_logit_scale = 100.0
  return cfg


def words(text: str) -> list[str]:
  """Lower-cased alphanumeric words of ``text``."""
  return re.findall(r"[a-z0-9]+", text.lower())


class WordTokenizer:
  """A word-level tokenizer whose vocabulary is the words of the given texts.

  Ids: 0 padding, 1 end-of-sequence, 2 unknown word, then the vocabulary in sorted order. Every
  sequence is the word ids, then EOS, then padding to ``max_len``.
  """

  def __init__(self, texts: Sequence[str]):
    vocab = sorted({w for t in texts for w in words(t)})
    self.vocab = ("<pad>", "<eos>", "<unk>", *vocab)
    self.ids = {w: i for i, w in enumerate(self.vocab)}
    self.max_len = max(len(words(t)) for t in texts) + 1

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    """Token ids [len(texts), max_len] (int32); longer texts are cut to fit their EOS."""
    out = np.full((len(texts), self.max_len), PAD, np.int32)
    for i, t in enumerate(texts):
      ids = [self.ids.get(w, UNK) for w in words(t)][: self.max_len - 1] + [EOS]
      out[i, : len(ids)] = ids
    return out


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                 "eighteen", "nineteen", "twenty")


def class_words(name: str) -> str:
  """A class name as words: numerals up to 20 are spelled out ("3" -> "three"), the rest unchanged.

  Datasets such as digits name their classes "0".."9"; spelled out they read as captions do.
  """
  stripped = name.strip()
  if stripped.isdigit() and int(stripped) < len(_NUMBER_WORDS):
    return _NUMBER_WORDS[int(stripped)]
  return name.replace("_", " ")


def captions(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
  """Captions for every (class, template) pair, class-major: ``[c * len(templates) + t]``.

  ``captions(["3"], ["a photo of the digit {}"]) == ["a photo of the digit three"]``.
  """
  return [t.format(class_words(name)) for name in class_names for t in templates]


class CLIP(ImageMethod):
  """Image and text towers trained with CLIP's contrastive loss on class-name captions, or on a
  dataset's own captions (``vocab_size > 0``; module doc)."""

  uses_labels = True
  reads_captions = True
  sigmoid = False

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    """Builds both towers.

    Args:
      method_config: the method's section (``embed_dim``, ``text_*``, ``caption_templates``, ...).
      encoder: builds the image encoder; its ``dtypes`` are the text tower's too.
      recipe: the view recipe (one view is used).
      facts: ``image_shape``; ``num_classes`` / ``class_names``, the classes the prompt captions are
        made from; with a captioned dataset ``vocab_size`` > 0 (the tokenizer's; the text tower then
        reads ``batch["caption_ids"]``, ``max_length`` tokens, instead of class prompts) and
        ``pad_id``.
      rngs: initialisation keys.
    """
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    mcfg = method_config
    num_classes, class_names = facts.num_classes, facts.class_names
    self.captioned = facts.vocab_size > 0
    dt = encoder.dtypes
    if self.captioned:
      self._init_towers(mcfg, dt, vocab_size=facts.vocab_size, max_len=int(facts.max_length),
                        pad_id=facts.pad_id, rngs=rngs)
      self.num_classes, self.num_templates = num_classes, 0
      self.captions, self.tokenizer_vocab, self.caption_tokens = (), (), ()
      return
    class_names = tuple(str(c) for c in class_names)
    if len(class_names) != num_classes:
      raise ValueError(f"{mcfg.name} needs one class name per class: got {len(class_names)} names for"
                       f" {num_classes} classes")
    templates = tuple(mcfg.caption_templates)
    if not templates or any("{}" not in t for t in templates):
      raise ValueError(f"method.caption_templates must be non-empty, each with a '{{}}' for the class "
                       f"name, got {templates}")
    self.num_classes = num_classes
    self.num_templates = len(templates)
    self.captions = tuple(captions(class_names, templates))
    self.tokenizer_vocab = WordTokenizer(self.captions).vocab
    # A tuple keeps the token table static (hashable) in the graph definition.
    self.caption_tokens = tuple(map(tuple, WordTokenizer(self.captions)(self.captions).tolist()))
    self._init_towers(mcfg, dt, vocab_size=len(self.tokenizer_vocab),
                      max_len=len(self.caption_tokens[0]), pad_id=PAD, rngs=rngs)

  def _init_towers(self, mcfg: ml_collections.ConfigDict, dt: dict, *, vocab_size: int, max_len: int,
                   pad_id: int, rngs: nnx.Rngs) -> None:
    """The text tower, both projections, the logit scale and the loss's block size."""
    self.text = models.TextTransformer(
        vocab_size=vocab_size, max_len=max_len, width=mcfg.text_width, depth=mcfg.text_depth,
        heads=mcfg.text_heads, causal=mcfg.text_causal, pool=mcfg.text_pool, pad_id=pad_id,
        rngs=rngs, **dt)
    self.image_proj = nnx.Linear(self.encoder.out_dim, mcfg.embed_dim, use_bias=False, rngs=rngs, **dt)
    self.text_proj = nnx.Linear(self.text.out_dim, mcfg.embed_dim, use_bias=False, rngs=rngs, **dt)
    if mcfg.init_logit_scale <= 0:
      raise ValueError(f"method.init_logit_scale must be positive, got {mcfg.init_logit_scale}")
    self.log_scale = nnx.Param(jnp.asarray(math.log(mcfg.init_logit_scale), jnp.float32))
    self.max_log_scale = math.log(mcfg.max_logit_scale)
    self.block_size = int(mcfg.loss_block_size) or None

  def logit_scale(self) -> jax.Array:
    """The exponentiated, clipped logit scale."""
    return jnp.exp(jnp.minimum(self.log_scale[...], self.max_log_scale))

  def encode_text(self, tokens: jax.Array) -> jax.Array:
    """Text embeddings [N, embed_dim] (not normalised) of token ids [N, L]."""
    return self.text_proj(self.text(tokens)).astype(jnp.float32)

  def encode_images(self, images: jax.Array) -> jax.Array:
    """Image embeddings [B, embed_dim] (not normalised) of float images [B, H, W, C] in [0, 1]
    (eval mode)."""
    return self.image_proj(self.features(images)).astype(jnp.float32)

  def caption_embeddings(self) -> jax.Array:
    """Embeddings of every caption, [num_classes * num_templates, embed_dim], class-major."""
    if self.captioned:
      raise ValueError("this CLIP/SigLIP was trained on a dataset's own captions and has no class "
                       "prompts; embed texts with encode_text(token ids) instead.")
    return self.encode_text(jnp.asarray(self.caption_tokens, jnp.int32))

  def class_embeddings(self) -> jax.Array:
    """One unit vector per class: the mean of its normalised caption embeddings (CLIP's ensembling)."""
    e = losses.l2_normalize(self.caption_embeddings())
    e = e.reshape(self.num_classes, self.num_templates, -1).mean(axis=1)
    return losses.l2_normalize(e)

  def _pair_loss(self, img, txt, axis_name, image_keys=None):
    if image_keys is not None and self.block_size is None:
      # CLIP's symmetric cross-entropy, captions of one image not each other's negatives.
      return losses.retrieval_infonce(img, txt, temperature=1.0 / self.logit_scale(),
                                      positive_keys=image_keys, symmetric=True,
                                      axis_name=axis_name)
    return losses.clip_loss(img, txt, logit_scale=self.logit_scale(), axis_name=axis_name,
                            block_size=self.block_size)

  def loss(self, batch, *, axis_name=None):
    # One augmented view per image (CLIP trains on light crops; the recipe decides how light).
    image = self.recipe(batch["key"], batch["image"])[0]
    labels = batch["label"]
    bn = self.bn_axis(axis_name)
    img = self.image_proj(self.encoder(image, train=True, axis_name=bn)).astype(jnp.float32)
    if self.captioned:
      txt = self.encode_text(batch["caption_ids"])
      loss = self._pair_loss(img, txt, axis_name, image_keys=labels)
      metrics = dict(
          positive_top1=losses.positive_top1(jax.lax.stop_gradient(img), jax.lax.stop_gradient(txt),
                                             axis_name=axis_name),
          logit_scale=self.logit_scale(),
          embedding_std=losses.embedding_std(jax.lax.stop_gradient(img), axis_name=axis_name),
      )
      return loss, metrics
    # Embed each distinct caption once, then look rows up: far cheaper than a text pass per example.
    table = self.caption_embeddings()
    if self.num_templates > 1:
      pick = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 0x7E47), (), 0,
                                                   self.num_templates))(batch["key"])
    else:
      pick = jnp.zeros_like(labels)
    txt = table[labels * self.num_templates + pick]
    loss = self._pair_loss(img, txt, axis_name)
    classes = jax.lax.stop_gradient(
        losses.l2_normalize(table).reshape(self.num_classes, self.num_templates, -1).mean(1))
    hits = jnp.argmax(jax.lax.stop_gradient(img) @ classes.T, axis=-1) == labels
    metrics = dict(
        zero_shot_top1=global_mean(jnp.mean(hits.astype(jnp.float32)), axis_name),
        logit_scale=self.logit_scale(),
        embedding_std=losses.embedding_std(jax.lax.stop_gradient(img), axis_name=axis_name),
    )
    return loss, metrics

  def zero_shot_logits(self, images: jax.Array) -> jax.Array:
    """Zero-shot class logits [B, num_classes] of float images [B, H, W, C] in [0, 1] (eval mode).

    ``logit_scale * cos(image, class prompt)`` (plus the bias for SigLIP); the argmax is the predicted
    class.
    """
    img = losses.l2_normalize(self.encode_images(images))
    logits = self.logit_scale() * img @ self.class_embeddings().T
    if self.sigmoid:
      logits = logits + self.logit_bias[...]
    return logits


class SigLIP(CLIP):
  """CLIP's towers trained with SigLIP's pairwise sigmoid loss and a learnable bias."""

  sigmoid = True

  def __init__(self, method_config: ml_collections.ConfigDict, **parts):
    super().__init__(method_config, **parts)
    self.logit_bias = nnx.Param(jnp.asarray(method_config.init_logit_bias, jnp.float32))

  def _pair_loss(self, img, txt, axis_name, image_keys=None):
    del image_keys  # the sigmoid loss has no mask (module doc)
    return losses.sigmoid_loss(img, txt, logit_scale=self.logit_scale(),
                               logit_bias=self.logit_bias[...], axis_name=axis_name,
                               block_size=self.block_size)
