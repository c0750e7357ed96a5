r"""Fine-tune a pretrained sentence embedding model (all-MiniLM-L6-v2, or any BERT-family folder: BGE,
E5, ...) on the embedded ``stdlib_code`` pairs with in-batch negatives: sentence-transformers'
MultipleNegativesRankingLoss (InfoNCE over the global batch at scale 20, i.e. temperature 0.05), AdamW
at 2e-5 with a 10% linear warmup and a linear decay, and the checkpoint's dropout, as its training
scripts do.

Point at a model folder (a Hugging Face or sentence-transformers folder with config.json,
model.safetensors and tokenizer.json; jaxcl never downloads), fine-tune, export:

  jaxcl train --config configs/finetune_minilm_stdlib_code.py --workdir runs/minilm \
      --config.model.pretrained=~/.cache/jaxcl/models/all-MiniLM-L6-v2
  jaxcl export --workdir runs/minilm --out runs/minilm/st_model

``SentenceTransformer("runs/minilm/st_model")`` then loads the fine-tuned model. Hard negatives mined
with the pretrained towers, before any jaxcl training, then a fine-tune with them:

  jaxcl mine --config configs/finetune_minilm_stdlib_code.py --name stdlib_code_minilm_mined \
      --config.model.pretrained=~/.cache/jaxcl/models/all-MiniLM-L6-v2
  jaxcl train --config configs/finetune_minilm_stdlib_code.py:negatives=4 --workdir runs/minilm_mined \
      --config.model.pretrained=~/.cache/jaxcl/models/all-MiniLM-L6-v2 \
      --config.data.name=stdlib_code_minilm_mined

``:matryoshka`` trains 384/128/64-dimension prefixes (Kusupati et al. 2022) and the final table reports
NDCG@10 at each. Expected: the final table ranks the 442 test queries against all 4,161 documents for
the fine-tuned model, the same model before fine-tuning (zero-shot) and BM25; the fine-tuned model
beats both (``benchmarks/finetune_vs_sentence_transformers.py`` measures it over 3 seeds next to
sentence-transformers on the same recipe). ``model.pretrained`` is required: unset, the run stops
with a line naming it. ``get_config("smoke")`` shrinks it for tests (give a tiny folder).
"""

from jaxcl import experiment, models


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False, negatives=0, matryoshka=False)
  c = experiment.base(method="retrieval", dataset="stdlib_code", encoder="small_cnn",
                      recipe="simclr", crop_size=32, batch_size=64, steps=110)
  c.model = models.default_config("bert")
  c.model.pretrained = ""         # required: a Hugging Face / sentence-transformers folder
  c.model.pool = ""               # "": the folder's (1_Pooling; mean without one) | mean | cls | max
  c.data.max_length = 128         # code: the first 128 word pieces of a function
  c.data.query_max_length = 32    # a docstring's first sentence
  c.method.temperature = 0.05     # MNRL's scale 20
  c.method.num_negatives = a.negatives  # hard negatives per query: `jaxcl mine` writes them
  c.method.matryoshka_dims = (384, 128, 64) if a.matryoshka else ()
  c.optim.name = "adamw"
  c.optim.lr = 2e-5
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 0.01
  c.optim.warmup_fraction = 0.1
  c.optim.decay = "linear"        # sentence-transformers' WarmupLinear
  c.train.log_every = 10
  c.train.checkpoint_every = 50
  c.train.export_encoder = False  # `jaxcl export` writes the sentence-transformers folder
  c.eval.knn_every = 0            # an embedding of the whole corpus costs more than a few steps
  c.eval.batch_size = 128
  c.eval.online_probe = False     # no labels
  c.eval.linear_probe = False
  c.eval.embedding_map = False
  if a.smoke:
    experiment.smoke(c)
    c.data.max_length = 16
    c.data.query_max_length = 0
    c.method.matryoshka_dims = (16, 8) if a.matryoshka else ()
  return experiment.lock(c)
