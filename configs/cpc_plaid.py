r"""Contrastive Predictive Coding (van den Oord et al. 2018) on PLAID, real current signals of 11 kinds
of household appliance (the UCR/UEA archive's version, shipped in the sktime wheel).

Command:

  jaxcl train --config configs/cpc_plaid.py --workdir runs/cpc_plaid

Expected: about 3 minutes on a 2-core CPU. The final table scores the context vectors averaged over
each 1,024-sample signal (kNN and linear probe on the 537 test signals) next to the random-init encoder
and the raw signal; `cpc_accuracy` in the log is the share of predictions whose best-scoring latent of
the whole global batch is the true future (chance: 1 / (64 x 11 latents) = 0.14%). Measured over 3
seeds on a 2-core CPU (`python benchmarks/cpc.py`): kNN 61.7 +- 0.3%, linear probe 77.5 +- 0.4%,
future-prediction accuracy 83.6 +- 1.5%; random init 49.3% / 56.7%, raw signal 46.0% / 40.2%.
`get_config("smoke")` shrinks it for tests.

The context network is a GRU; for CPC's other choice, a causal transformer (2 blocks, 4 heads, width
`method.context_dim`, sinusoidal positions), add `--config.method.context=transformer` (depth and heads:
`--config.method.context_depth`, `--config.method.context_heads`). The numbers above are the GRU's;
one transformer run (seed 0, 2-core CPU shared with another job, 2 min 53 s) gave kNN 57.7%, linear
probe 72.4%, future-prediction accuracy 74.8%, random init 43.4% / 48.2%.
"""

from jaxcl import experiment
from jaxcl.methods import cpc


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False)
  c = experiment.base(method="cpc", dataset="plaid", encoder="small_cnn", recipe="simclr",
                      crop_size=32, batch_size=64, steps=600)
  c.model = cpc.sequence_model_config()
  c.optim.name = "adamw"
  c.optim.lr = 2e-3
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 30
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  c.eval.knn_k = 20              # ~50 training signals per class
  c.eval.online_probe = False    # the online probe is for image methods
  c.eval.embedding_map = True
  if a.smoke:
    experiment.smoke(c)
    c.model.widths = (8, 8, 16, 16)
    c.method.context_dim = 16
  return experiment.lock(c)
