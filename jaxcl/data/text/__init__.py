"""Text retrieval data: a user's pair / corpus / qrels files, prepared TFDS text datasets read through
Grain, and tokenization with Hugging Face ``tokenizers``.

  pairs = text.read_pairs("train.jsonl")           # [TextPair(query, positive, negatives)]
  beir = text.read_beir("scifact/")                # corpus, queries, qrels per split
  cfg = jaxcl.data.default_config("stdlib_code")   # the embedded corpus (prepared on first use)
  ids, docs = text.load_corpus(cfg)
  evalset = text.load_queries(cfg, "test", ids)
  train = text.load_train_queries(cfg, corpus=(ids, docs))   # training queries, positives' rows
  text.write_negatives(cfg, per_row, name="mined")           # a copy with new train negatives
  tok = text.tokenizer_for(cfg, workdir)
  batch = next(text.pairs_iterator(cfg, tok, seed=0, global_batch_size=64))

Modules: ``files`` (readers of user files), ``dataset`` (prepared datasets), ``negatives`` (a
prepared dataset stored again with mined negatives), ``tokenizer``.
"""

from jaxcl.data.text.dataset import (EvalQueries, TextInfo, TrainQueries, corpus_rows, info,
                                     is_text_dataset, load_corpus, load_queries, load_train_queries, pairs_iterator,
                                     query_encoder, tokenizer_for, training_texts)
from jaxcl.data.text.files import Beir, TextPair, read_beir, read_pairs, read_qrels, read_texts
from jaxcl.data.text.negatives import write_negatives
from jaxcl.data.text.tokenizer import (TextEncoder, TokenizePairs, load_tokenizer, save_tokenizer,
                                       train_tokenizer)

__all__ = [
    "Beir", "EvalQueries", "TextEncoder", "TextInfo", "TextPair", "TokenizePairs", "TrainQueries",
    "corpus_rows", "info", "is_text_dataset", "load_corpus", "load_queries", "load_tokenizer",
    "load_train_queries", "pairs_iterator", "query_encoder", "read_beir", "read_pairs", "read_qrels", "read_texts",
    "save_tokenizer", "tokenizer_for", "train_tokenizer", "training_texts", "write_negatives",
]
