"""Tokenization through Hugging Face ``tokenizers``: a BPE vocabulary trained on a training split (or a
user's ``tokenizer.json``), and the Grain transform that turns text pairs into fixed-length ids.

  tok = train_tokenizer(texts, vocab_size=8192)     # BERT's normaliser and splitting, BPE sub-words
  save_tokenizer(tok, "run/tokenizer.json")          # saved with the run; load_tokenizer reads it
  encode = TextEncoder(tok, max_length=128)
  ids, mask = encode(["first text", "second"])       # int32 [2, 128] each; mask 1 on real tokens

Training is deterministic: the same texts in the same order give the same tokenizer.json (a test
checks it). That is why the sub-words are BPE and not WordPiece: ``tokenizers``' WordPiece trainer
numbers its ``##`` sub-words in hash-map order, so two trainings on the same texts can differ
(huggingface/tokenizers#1794); its BPE trainer, without a sub-word prefix, does not. A ``tokenizer.json`` is JSON, read by ``tokenizers``' own parser: loading one runs no code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence

from typing import TYPE_CHECKING

import grain
import numpy as np

from jaxcl import extras

if TYPE_CHECKING:
  import tokenizers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<PAD>")
MAX_TOKENIZER_BYTES = 256 * 2**20  # BERT-sized vocabularies are ~1 MB, large multilingual ones ~20 MB


def _tokenizers():
  """Hugging Face ``tokenizers``, imported on first use: it comes with the 'text' extra."""
  return extras.require("tokenizers", "text", "text retrieval (tokenization)")


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2,
                    lowercase: bool = True) -> tokenizers.Tokenizer:
  """A BPE tokenizer with BERT's normaliser and pre-tokeniser, trained on ``texts``.

  Words split at whitespace and punctuation (so ``get_file`` is ``get _ file``), then into BPE
  sub-words; every encoding is ``[CLS] ... [SEP]``; characters never seen in training are ``[UNK]``.

  Args:
    texts: the training texts (an iterator is read once).
    vocab_size: the vocabulary's size, the special tokens and the alphabet included.
    min_frequency: the fewest occurrences a merged sub-word needs.
    lowercase: lower-case before splitting.
  """
  if vocab_size < 2 * len(SPECIAL_TOKENS):
    raise ValueError(f"config.data.vocab_size={vocab_size}: too small for a vocabulary; use e.g. 8192.")
  tokenizers = _tokenizers()
  models, normalizers = tokenizers.models, tokenizers.normalizers
  pre_tokenizers, processors, trainers = (tokenizers.pre_tokenizers, tokenizers.processors,
                                          tokenizers.trainers)
  tok = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                              strip_accents=None, lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  tok.train_from_iterator(texts, trainer=trainer)
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
      special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
  return tok


def save_tokenizer(tok: tokenizers.Tokenizer, path: str) -> str:
  """Writes ``tok`` as ``path`` (a tokenizer.json) atomically: a killed save leaves no half file."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tokenizer-", suffix=".json")
  os.close(fd)
  try:
    tok.save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  """A ``tokenizer.json`` saved by Hugging Face ``tokenizers`` (``save_tokenizer``, or a pretrained
  model's file), or a one-line ValueError naming the file and the fix."""
  fix = ("give a tokenizer.json saved by Hugging Face tokenizers (Tokenizer.save), or leave "
         "config.data.tokenizer unset to train one on the training split")
  if not os.path.isfile(path):
    raise ValueError(f"config.data.tokenizer={path!r} is not a file; {fix}.")
  size = os.path.getsize(path)
  if size > MAX_TOKENIZER_BYTES:
    raise ValueError(f"{path} is {size:,} bytes, more than any tokenizer.json jaxcl reads "
                     f"({MAX_TOKENIZER_BYTES:,}); {fix}.")
  tokenizers = _tokenizers()  # outside the try: a missing extra is not a bad file
  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # pylint: disable=broad-except  # tokenizers raises plain Exception
    reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f"{path} is not a tokenizer.json ({reason}); {fix}.") from None


def pad_id(tok: tokenizers.Tokenizer) -> int:
  """The padding token's id: the file's own padding setting, a [PAD]-like token, else 0 (the mask
  marks padding in any case)."""
  if tok.padding is not None:
    return int(tok.padding["pad_id"])
  for token in PAD_TOKENS:
    if tok.token_to_id(token) is not None:
      return int(tok.token_to_id(token))
  return 0


class TextEncoder:
  """Texts -> (ids int32 [N, max_length], mask int32 [N, max_length]): truncated (special tokens
  kept), padded at the end with the pad id, mask 1 on real tokens.

  It pickles as the tokenizer's JSON and ``max_length`` (Grain workers rebuild it).
  """

  def __init__(self, tok: tokenizers.Tokenizer | str, max_length: int):
    if max_length < 2:
      raise ValueError(f"config.data.max_length={max_length}: must be at least 2 ([CLS] and [SEP]).")
    self._json = tok if isinstance(tok, str) else tok.to_str()
    self.max_length = int(max_length)
    self._tok = _tokenizers().Tokenizer.from_str(self._json)
    self.pad_id = pad_id(self._tok)
    self._tok.enable_truncation(self.max_length)
    self._tok.enable_padding(length=self.max_length, pad_id=self.pad_id,
                             pad_token=self._tok.id_to_token(self.pad_id) or "[PAD]")

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def __getstate__(self):
    return {"json": self._json, "max_length": self.max_length}

  def __setstate__(self, state):
    self.__init__(state["json"], state["max_length"])

  def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encodings = self._tok.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encodings], np.int32).reshape(len(texts), self.max_length)
    mask = np.asarray([e.attention_mask for e in encodings], np.int32).reshape(ids.shape)
    return ids, mask


def text_key(text: str) -> int:
  """A stable int32 of an id or text (SHA-256), so a batch can tell which rows share a query or a
  document (in-batch negatives that are in fact positives)."""
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little", signed=True)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class TokenizePairs(grain.transforms.Map):
  """A stored text pair (``jaxcl.data.builders.text_pairs`` features) -> fixed-length arrays:

    query_ids, query_mask                                int32 [query length]
    positive_ids, positive_mask                          int32 [max_length]
    query_key, positive_key                              int32 (``text_key`` of the ids, or of the
                                                         text where the positive has no id)
    negative_ids, negative_mask  int32 [num_negatives, max_length], negative_valid bool
                                 [num_negatives]      (only with num_negatives > 0: the first ones
                                 stored; missing ones are all padding with valid False)
  """

  encoder: TextEncoder
  num_negatives: int = 0
  query_encoder: TextEncoder | None = None  # queries' own (shorter) length; None: ``encoder``

  def map(self, example: dict) -> dict:
    query, positive = _text(example["query"]), _text(example["positive"])
    negatives = [_text(n) for n in example.get("negatives", [])][:self.num_negatives]
    valid = np.arange(self.num_negatives) < len(negatives)
    texts = [positive] + negatives + [""] * (self.num_negatives - len(negatives))
    ids, mask = self.encoder(texts)
    query_ids, query_mask = (self.query_encoder or self.encoder)([query])
    positive_id = _text(example.get("positive_id", b""))
    out = {"query_ids": query_ids[0], "query_mask": query_mask[0], "positive_ids": ids[0],
           "positive_mask": mask[0],
           "query_key": np.int32(text_key(_text(example.get("query_id", b"")) or query)),
           "positive_key": np.int32(text_key(positive_id or positive))}
    if self.num_negatives:
      out["negative_ids"] = np.where(valid[:, None], ids[1:], self.encoder.pad_id).astype(np.int32)
      out["negative_mask"] = (mask[1:] * valid[:, None]).astype(np.int32)
      out["negative_valid"] = valid
    return out
