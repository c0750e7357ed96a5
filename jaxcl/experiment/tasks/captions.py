"""Caption runs: CLIP/SigLIP on a dataset's own captions (``jaxcl prepare-data --from_captions``).

``tasks.prepare`` hands a run here when ``is_caption_run(config)``: the method declares
``reads_captions`` (CLIP, SigLIP) and the dataset has a ``caption`` feature. ``prepare`` then builds

* the tokenizer as a text run does (``tasks.text.tokenizer``): ``data.tokenizer`` when set, else the
  run's ``workdir/tokenizer.json``, else a BPE vocabulary of ``data.vocab_size`` trained on the
  training captions and saved there, so a resumed run, ``jaxcl eval`` and the evaluation use it;
* the method with the tokenizer's ``vocab_size`` and ``pad_id`` (its text tower reads
  ``batch["caption_ids"]``, ``data.max_length`` tokens per caption);
* the training stream: the image pipeline with each example's caption tokenized in Grain;
* ``CaptionEvaluator``.

Evaluation is retrieval as CLIP reports it on COCO / Flickr30k: every image of ``data.eval_split``
against every caption of it, image -> text and text -> image Recall@1/5/10
(``jaxcl.evaluate.image_text``), the trained towers next to the random-init towers they started
from. kNN and the linear probe are not run: a caption dataset's labels are image indices, and no
test image is a training image, so there is nothing for them to classify (nor an online probe).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxcl import data, evaluate, methods
from jaxcl.data import captions as caption_data
from jaxcl.evaluate import image_text
from jaxcl.experiment import parts
from jaxcl.experiment.tasks import text
from jaxcl.experiment.tasks.base import EvaluatorBase
from jaxcl.train import TrainSetup

KS = (1, 5, 10)
COLUMNS = {**{f"i2t_recall@{k}": f"image->text R@{k}" for k in KS},
           **{f"t2i_recall@{k}": f"text->image R@{k}" for k in KS}}


def is_caption_run(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config``'s method reads captions (CLIP/SigLIP) and its dataset has them."""
  return (methods.method_class(config.method.name).reads_captions
          and caption_data.is_caption_dataset(config.data))


def prepare(config: ml_collections.ConfigDict, workdir: str | None, mesh_: jax.sharding.Mesh):
  """(setup, evaluator, ``iterator(start_state)``) of a caption run (module doc).

  Args:
    config: the validated experiment config.
    workdir: the run directory (the tokenizer is saved there).
    mesh_: the data mesh.
  """
  tokens = text.tokenizer(config, workdir)
  info = data.info(config.data)
  # No DataInfo: the online probe would classify image indices (module doc).
  setup = parts.build_setup(config, mesh_, None, image_shape=tuple(info.image_shape),
                            num_classes=info.num_classes, class_names=(),
                            vocab_size=tokens.vocab_size, pad_id=tokens.pad_id)

  def iterator(start_state: Any = None):
    it = data.train_iterator(config.data, seed=config.seed, global_batch_size=config.batch_size,
                             process_index=jax.process_index(), process_count=jax.process_count(),
                             caption_encoder=tokens.encoder)
    if start_state is not None:
      it.set_state(start_state)
    return it

  return setup, CaptionEvaluator(config, setup, tokens), iterator


class CaptionEvaluator(EvaluatorBase):
  """Image <-> text Recall@K of the towers on the eval split (``monitor`` and ``final``, as
  ``tasks.image.ImageEvaluator``); at most ``eval.max_test_examples`` images when > 0."""

  def __init__(self, config: ml_collections.ConfigDict, setup: TrainSetup,
               tokens: text.Tokens):
    super().__init__(config, setup)
    self.tokens = tokens
    self._test: tuple[caption_data.CaptionSet, np.ndarray] | None = None

  def test_set(self) -> tuple[caption_data.CaptionSet, np.ndarray]:
    """The eval split's images and captions, and the captions' token ids [C, data.max_length]."""
    if self._test is None:
      found = caption_data.load_captions(self.config.data, self.config.data.eval_split,
                                         max_images=self.config.eval.max_test_examples)
      self._test = found, self.tokens.encoder(found.captions)[0]
    return self._test

  def scores(self, method: nnx.Module, name: str | None = None,
             timings: dict[str, float] | None = None) -> dict[str, float]:
    """Recall@K of ``method``'s towers on the eval split; with ``timings``, encoding the images, the
    captions and the recall are timed phases of ``name``."""
    found, ids = self.test_set()
    bar = (lambda what: f"{name}: {what}") if name and self._is_main else (lambda what: None)
    phase = self._clock(timings, name or "")
    kw = dict(batch_size=self.batch_size(), mesh=self.mesh)
    images = phase("encode images", lambda: evaluate.extract_features(
        method.encode_images, found.images, progress=bar("images"), **kw))
    texts = phase("encode captions", lambda: evaluate.extract_features(
        method.encode_text, ids, pixels=False, progress=bar("captions"), **kw))
    return phase("recall", lambda: image_text.image_text_recall(images, texts, found.caption_image,
                                                                ks=KS))

  def monitor(self, method: nnx.Module, probe: Any = None) -> dict[str, float]:
    """Recall@1 both ways (the in-training monitor, ``eval.knn_every``)."""
    del probe
    got = self.scores(method)
    return {"i2t_recall@1": got["i2t_recall@1"], "t2i_recall@1": got["t2i_recall@1"]}

  def final(self, method: nnx.Module, *, workdir: str, is_main: bool, probe: Any = None) -> dict:
    """The final table: trained towers, and (``eval.baselines``) the random-init towers."""
    del probe
    e = self.config.eval
    if not e.final:
      return {}
    timings = self._begin(is_main)
    found, _ = self._timed(timings, "load and tokenize captions", self.test_set)
    result = self.scores(method, "trained", timings)
    rows = {f"{self.config.method.name} (trained)": result}
    result = dict(result)
    if e.baselines:
      fresh = self._fresh(timings, "random init")  # the towers the run started from
      result["random_init"] = self.scores(fresh, "random init", timings)
      rows["random init (same towers)"] = result["random_init"]
    protocol = {"split": self.config.data.eval_split, "images": len(found.image_ids),
                "captions": len(found.captions), "recall_at": list(KS)}
    return self._finish(result, evaluate.format_table(rows, column_titles=COLUMNS), timings,
                        protocol=protocol,
                        what=f"{self.config.data.name}: {len(found.image_ids)} "
                             f"{self.config.data.eval_split} images against {len(found.captions)} "
                             "captions", workdir=workdir)
