r"""Metric learning with labels on Animal-Shape silhouettes: semi-hard triplets, trained on 5 animals
(bear, bird, cat, cow, dog), evaluated by retrieval on the other 5 (elephant, giraffe, horse, sheep,
zebra), never seen in training.

Command:

  jaxcl train --config configs/metric_learning_animal_shapes.py --workdir runs/metric_learning_animal_shapes

Expected: about 3.5 minutes on a 2-core CPU; Recall@1/2/4/8, R-precision and MAP@R on the unseen
animals next to the random-init encoder and raw pixels. Measured with its defaults (semi-hard triplets,
300 steps, the flattened encoder, chosen on validation classes; 3 seeds,
`python benchmarks/metric_learning.py`): R@1 97.9 +- 0.2%, MAP@R 32.5 +- 0.1%; raw pixels 93.5% /
22.2%, random init 94.2% / 21.9%. `--config.model.pool=mean` (global average pool): R@1 96.9 +- 0.2%,
MAP@R 38.5 +- 1.4%.
Variant of configs/metric_learning_digits.py with the data swapped (28 px silhouettes resized to 32,
horizontal flips on); `get_config("smoke")` runs on digits for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False, loss="batch_semi_hard_triplet")  # chosen on validation
  c = experiment.sibling(__file__, "metric_learning_digits",
                         "smoke" if a.smoke else f"loss={a.loss}")
  c.unlock()
  if not a.smoke:
    c.steps = 300
    c.data = experiment.data_config("animal_shapes")
    c.data.image_size = 32
    c.data.train_classes = 5
    c.data.examples_per_class = 64
    c.augment.flip_prob = 0.5
  return experiment.lock(c)
