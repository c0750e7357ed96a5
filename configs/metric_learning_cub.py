r"""Metric learning on CUB-200-2011 (Wah et al. 2011), the field's standard protocol: ResNet-50 from
scratch or from a checkpoint, batch-hard triplets, trained on classes 0-99, Recall@K / MAP@R on every
image of classes 100-199.

Command (after `jaxcl prepare-data caltech_birds2011`, which needs the TFDS catalog extra and the
CUB archive; nothing is downloaded by jaxcl):

  jaxcl train --config configs/metric_learning_cub.py --workdir runs/metric_learning_cub

Expected: not run here (no GPU and no CUB copy on the development machine). Published ImageNet-
pretrained ResNet-50s reach Recall@1 of 60-65% with triplet losses (Musgrave et al. 2020, Table 3);
from scratch it is far lower. Start from pretrained weights with
`--config.train.init_checkpoint=<another run's checkpoints dir>`. The same config serves Cars-196
(`--config.data.name=cars196 --config.data.train_classes=98`).
`get_config("smoke")` runs on digits for tests.
"""

from jaxcl import experiment


def get_config(arg=None):
  a = experiment.parse_arg(arg, smoke=False)
  if a.smoke:
    return experiment.sibling(__file__, "metric_learning_digits", "smoke")
  c = experiment.base(method="metric_learning", dataset="caltech_birds2011", encoder="resnet50",
                      recipe="byol", crop_size=224, batch_size=128, steps=20_000)
  c.data.image_size = 256
  c.data.train_classes = 100
  c.data.examples_per_class = 4            # 32 birds x 4 images per batch
  c.augment.jitter_prob = 0.0              # crops and flips: colour is what tells birds apart
  c.augment.grayscale_prob = 0.0
  c.augment.solarize_prob = (0.0, 0.0)
  c.augment.blur_prob = (0.0, 0.0)
  c.augment.scale = (0.16, 1.0)
  c.method.proj_out_dim = 512
  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 1e-4
  c.eval.knn_k = 20
  c.eval.linear_probe = False              # 200 classes x ~30 images: retrieval is the measure
  return experiment.lock(c)
