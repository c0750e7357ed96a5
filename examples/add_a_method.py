"""Adding a method: one class, one ``register`` line, then any config can train it.

``AlignUniform`` trains an encoder by Wang and Isola's (2020) two objectives on the unit sphere,
``L_align + weight * (L_uniform(z1) + L_uniform(z2)) / 2``: positives close together, everything
else spread out. It reuses what every image method shares (``ImageMethod``: the encoder at the view
recipe's size, two views through encoder and projector in one pass, eval features) and jaxcl's
losses, which gather the other devices' rows (``axis_name``), so it is exact when sharded.

What it declares is all the experiment reads about it: ``data_kind`` (images: the image task, its
pipeline and its kNN / linear-probe evaluation), ``multi_crop`` (False: a config with
``augment.num_local`` is refused before anything is built), ``uses_labels``; ``check_config`` checks
its own section. It is built from that section and plain objects (the encoder factory, the view
recipe, the data's facts), never from the rest of the config.

Run it (a few steps of the digits smoke config on the CPU, then the usual evaluation table)::

  python examples/add_a_method.py --workdir /tmp/align_uniform [--steps 30]
"""

from __future__ import annotations

import argparse
import os

import ml_collections
from flax import nnx

from jaxcl import augment, experiment, losses, methods, models
from jaxcl.methods import heads
from jaxcl.methods.base import Facts, bad_field
from jaxcl.methods.image import ImageMethod, view_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_config() -> ml_collections.ConfigDict:
  """The method's own section: its name and hyperparameters (the paper's t = 2, weight 1)."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "align_uniform"
  cfg.uniformity_weight = 1.0  # lambda in front of the uniformity term
  cfg.t = 2.0                   # the uniformity kernel's scale
  cfg.proj_hidden_dim = 512     # the projector (read by jaxcl.methods.heads.projector)
  cfg.proj_out_dim = 128
  cfg.proj_layers = 2
  cfg.proj_bn = True
  cfg.proj_last_bn = False
  cfg.proj_last_bn_affine = True
  cfg.sync_bn = True
  return cfg


class AlignUniform(ImageMethod):
  """Encoder + projector trained with alignment and uniformity (module docstring)."""

  data_kind = "image"
  multi_crop = False
  uses_labels = False

  def __init__(self, method_config: ml_collections.ConfigDict, *, encoder: models.EncoderFactory,
               recipe: augment.ViewRecipe, facts: Facts, rngs: nnx.Rngs):
    super().__init__(method_config, encoder=encoder, recipe=recipe, facts=facts, rngs=rngs)
    self.weight = float(method_config.uniformity_weight)
    self.t = float(method_config.t)
    self.projector = heads.projector(self.encoder.out_dim, method_config, encoder.dtypes, rngs)

  @classmethod
  def check_config(cls, method_config, *, model=None, augment=None):
    super().check_config(method_config, model=model, augment=augment)
    if not method_config.t > 0:
      bad_field("method.t", method_config.t, "the uniformity scale must be > 0 (2 in the paper).")
    if method_config.uniformity_weight < 0:
      bad_field("method.uniformity_weight", method_config.uniformity_weight, "must be >= 0.")

  def loss(self, batch, *, axis_name=None):
    z1, z2, features = self.project_two_views(batch, axis_name)
    uniform = (losses.uniformity(z1, t=self.t, axis_name=axis_name)
               + losses.uniformity(z2, t=self.t, axis_name=axis_name)) / 2
    loss = losses.alignment(z1, z2, axis_name=axis_name) + self.weight * uniform
    return loss, view_metrics(z1, z2, axis_name, features=features)


def register() -> None:
  """The one registry line (in jaxcl/methods/__init__.py's ``_REGISTRY`` for a built-in method)."""
  if "align_uniform" not in methods.names():
    methods.register("align_uniform", default_config, AlignUniform)


def config(steps: int) -> ml_collections.ConfigDict:
  """The digits smoke config with this method's section in place of SimCLR's."""
  register()
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smoke")
  c.unlock()
  c.method = default_config()
  experiment.shrink_heads(c.method)
  c.steps = steps
  c.eval.final = True
  return experiment.lock(c)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=30)
  args = parser.parse_args()
  result = experiment.train_and_evaluate(config(args.steps), args.workdir)
  print(f"align_uniform: {result['step']} steps, final loss {result['loss']:.3f}, "
        f"kNN {100 * result['knn']:.1f}%")


if __name__ == "__main__":
  main()
