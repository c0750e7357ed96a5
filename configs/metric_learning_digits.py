r"""Metric learning with labels on digits: triplets with a margin, trained on digits 0-4, evaluated by
retrieval on digits 5-9, never seen in training (the CUB / Cars / SOP protocol).

Command:

  jaxcl train --config configs/metric_learning_digits.py --workdir runs/metric_learning_digits

Expected: about 1.5 minutes on a 2-core CPU. Besides the usual kNN / linear table (all 10 classes), it
prints Recall@1/2/4/8, R-precision and MAP@R over every image of the 5 unseen classes next to the
random-init encoder and raw pixels. Measured (3 seeds; `python benchmarks/metric_learning.py`): R@1
99.3 +- 0.1%, MAP@R 65.1 +- 2.4%; raw pixels 98.9% / 62.2%, random init 98.8% / 62.5%. With the global
average pool the same protocol gave R@1 96.1% (see the README).
Variant of configs/simclr_digits.py (same data, views, optimiser; the 3-layer SmallCNN, flattened);
`get_config("smoke")` shrinks it for tests; `get_config("loss=batch_hard_triplet")` (or
batch_semi_hard_triplet, contrastive_margin) trains another margin loss.
"""

from jaxcl import experiment

MARGINS = {"batch_hard_triplet": 0.2, "batch_semi_hard_triplet": 0.2, "triplet_margin": 0.2,
           "contrastive_margin": 0.5}


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False, loss="triplet_margin")  # chosen on validation classes
  c, _ = experiment.variant(__file__, "simclr_digits", "smoke" if a.smoke else None,
                            "metric_learning", loss=a.loss)
  c.method.loss_kwargs.margin = MARGINS.get(a.loss, 0.2)
  c.data.train_classes = 5               # digits 0-4; 5-9 are held out for retrieval
  # Retrieval features keep the layout of the last feature map rather than its global average: on the
  # validation classes a random-init encoder then scores as raw pixels do (MAP@R 95.4 vs 95.3; 75.5
  # with the mean pool), and training lifts it from there (benchmarks/metric_learning.py --tune).
  c.model.pool = "flatten"
  # The online probe would train on digits 0-4 only and score all 10 (about 50%): no measure here.
  c.eval.online_probe = False
  if not a.smoke:  # P x K batches of 3 classes x 64 images (3 classes: tuning trains on 3 only)
    # The 3-layer SmallCNN the benchmark measured: simclr_digits' 4th layer did not help here
    # (validation MAP@R 87-89 against 90 with the mean pool).
    c.model.widths = (32, 64, 128)
    c.model.strides = (2, 2, 2)
    c.steps = 100  # the budget chosen on validation classes (benchmarks/metric_learning.py --tune)
    c.batch_size = 192
    c.data.examples_per_class = 64
  else:
    c.data.examples_per_class = 4
  return experiment.lock(c)
