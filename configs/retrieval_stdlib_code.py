r"""A text retriever (bi-encoder) trained on the embedded ``stdlib_code`` pairs: the first sentence of
a standard-library function's docstring is the query, the function's code (docstring removed) the
document; test queries come from packages never seen in training.

Command:

  jaxcl train --config configs/retrieval_stdlib_code.py --workdir runs/retrieval

Then search with it:

  jaxcl search --workdir runs/retrieval "remove a directory tree"

Expected: see the README's retrieval table (``python benchmarks/retrieval.py``). The final table
ranks the 484 test queries against all 4,161 documents (MRR@10, NDCG@10, Recall@1/10/100) for the
trained towers, the same towers at initialisation and BM25. ``get_config("smoke")`` shrinks it for
tests.
"""

from jaxcl import experiment, models


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False, negatives=0)
  c = experiment.base(method="retrieval", dataset="stdlib_code", encoder="small_cnn",
                      recipe="simclr", crop_size=32, batch_size=128, steps=1000)
  c.model = models.default_config("text_transformer")
  c.data.max_length = 128
  c.data.vocab_size = 8192
  c.method.num_negatives = a.negatives  # hard negatives per query: `jaxcl mine` writes them
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 0.01
  c.optim.warmup_steps = 100
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.eval.knn_every = 250          # NDCG@10 of the validation queries every 250 steps
  c.eval.batch_size = 256
  c.eval.online_probe = False     # no labels
  c.eval.linear_probe = False
  c.eval.embedding_map = False
  if a.smoke:
    experiment.smoke(c)
    c.model.width, c.model.depth, c.model.heads = 16, 1, 2
    c.data.max_length = 16
    c.data.vocab_size = 300
    c.eval.knn_every = 0
  return experiment.lock(c)
