r"""A text retriever (bi-encoder) trained on the embedded ``stdlib_code`` pairs: the first sentence of
a standard-library function's docstring is the query, the function's code (docstring removed) the
document; test queries come from packages never seen in training.

Command:

  jaxcl train --config configs/retrieval_stdlib_code.py --workdir runs/retrieval

Then search with it:

  jaxcl search --workdir runs/retrieval "remove a directory tree"

Expected: about 70 s on a 2-core CPU, then a table ranking the 442 test queries against all 4,161
documents (MRR@10, NDCG@10, Recall@1/10/100) for the trained towers, the same towers at
initialisation and BM25. Over 3 seeds (``python benchmarks/retrieval.py``): NDCG@10 28.2 +- 0.5,
MRR@10 24.1 +- 0.4; random init 11.5 / 9.7; BM25 39.4 / 34.6, which this model does not beat (the
README's retrieval section says what was tried). ``get_config("smoke")`` shrinks it for tests.
"""

from jaxcl import experiment, models


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False, negatives=0)
  c = experiment.base(method="retrieval", dataset="stdlib_code", encoder="small_cnn",
                      recipe="simclr", crop_size=32, batch_size=128, steps=600)
  c.model = models.default_config("text_transformer")
  # A bag of tokens (no attention layer): with 3,360 training queries, attention layers memorise the
  # training pairs (validation NDCG@10 after 300 steps: depth 0 22.0%, depth 1 20.3%; depth 2 at
  # 8,192 tokens 8.4% against depth 0's 16.2%), and depth 0 is 5x faster.
  c.model.depth = 0
  c.data.max_length = 128        # code: the first 128 tokens of a function
  c.data.query_max_length = 32   # a docstring's first sentence
  # A small vocabulary shares more sub-words between the training packages and unseen ones
  # (validation NDCG@10 at 300 steps: 8,192 tokens 16.2%, 2,048 19.4%, 1,024 22.0%, 512 21.9%).
  c.data.vocab_size = 1024
  c.method.num_negatives = a.negatives  # hard negatives per query: `jaxcl mine` writes them
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 0.01
  c.optim.warmup_fraction = 0.05
  c.train.log_every = 50
  c.train.checkpoint_every = 300
  c.eval.knn_every = 100          # NDCG@10 / MRR@10 of the validation queries every 100 steps
  c.eval.batch_size = 256
  c.eval.online_probe = False     # no labels
  c.eval.linear_probe = False
  c.eval.embedding_map = False
  if a.smoke:
    experiment.smoke(c)
    c.model.width, c.model.depth, c.model.heads = 16, 1, 2
    c.data.max_length = 16
    c.data.query_max_length = 0
    c.data.vocab_size = 300
    c.eval.knn_every = 0
  return experiment.lock(c)
