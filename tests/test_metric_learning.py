"""The metric-learning protocol end to end: a margin loss trained on some classes, retrieval scored on
the classes held out (here the validation classes 3-4 of a run trained on 0-2), baselines alongside."""

import os

import numpy as np

from jaxcl import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_trains_on_seen_classes_and_scores_retrieval_on_held_out_ones(tmp_path):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "metric_learning_digits.py"), "smoke")
  c.unlock()
  c.data.train_classes, c.data.validation_classes = 3, 2
  c.data.examples_per_class = 8  # 16 = 2 classes x 8
  c.eval.final, c.eval.linear_probe, c.eval.online_probe = True, False, False
  result = experiment.train_and_evaluate(experiment.lock(c), str(tmp_path))
  unseen = result["unseen_classes"]
  assert set(unseen) == {"pretrained", "random_init", "raw_pixels"}
  for scores in unseen.values():
    assert set(scores) == {"recall@1", "recall@2", "recall@4", "recall@8", "r_precision", "map@r"}
    assert 0 < scores["map@r"] <= scores["r_precision"] <= 1
    assert scores["recall@1"] <= scores["recall@8"]
  assert "Retrieval on the classes never trained on (3..4;" in result["table"]
  assert "| raw pixels |" in result["table"].split("Retrieval")[1]
  assert np.isfinite(result["loss"])
