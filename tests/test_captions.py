"""Image-caption datasets (``prepare-data --from_captions``), image <-> text Recall@K, and CLIP trained on
a dataset's own captions. Every file is made here, in tmp_path; nothing is downloaded."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxcl.data as data
from jaxcl import losses
from jaxcl.data import captions as caption_data
from jaxcl.data import sources, transforms
from jaxcl.evaluate.image_text import image_text_recall

COLOURS = ("red", "green", "blue", "yellow", "black", "white", "purple", "orange", "pink", "brown",
           "grey", "cyan")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = ("a {} square", "the colour {} everywhere", "a picture that is mostly {}")


def _caption_folder(root, n=len(COLOURS), per_image=len(TEMPLATES)):
  """n real PNG/JPEG files of mixed sizes in root/imgs and a captions.jsonl naming each per_image
  times; returns {image path: [captions]}."""
  rng = np.random.default_rng(0)
  (root / "imgs").mkdir(parents=True)
  made = {}
  lines = []
  for i in range(n):
    path = f"imgs/{i}.{'png' if i % 2 else 'jpg'}"
    size = (40, 50) if i % 2 else (30, 30)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / path)
    made[path] = [t.format(COLOURS[i]) for t in TEMPLATES[:per_image]]
    lines += [json.dumps({"image": path, "caption": c}) for c in made[path]]
  rng.shuffle(lines)  # an image's captions need not be next to each other
  (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
  return made


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """The made caption folder prepared through the CLI at 32 px: (config, {path: captions}, root)."""
  from jaxcl import main
  tmp = tmp_path_factory.mktemp("captions")
  made = _caption_folder(tmp / "pics")
  main.run(["jaxcl", "prepare-data", "--from-captions", str(tmp / "pics"), "--name", "pics",
            "--image_size", "32", "--data_dir", str(tmp / "tfds")])
  cfg = data.default_config("pics")
  cfg.data_dir = str(tmp / "tfds")
  return cfg, made, tmp / "pics"


def test_prepare_round_trip_splits_by_image(prepared, capsys):
  cfg, made, root = prepared
  info = caption_data.info(cfg)
  assert (info.image_shape, info.num_images) == ((32, 32, 3), 12)
  assert (info.num_train, info.num_test) == (30, 6)  # 2 of 12 images held out, 3 captions each
  assert caption_data.is_caption_dataset(cfg) and not caption_data.is_caption_dataset(
      data.default_config("digits"))
  train, test = caption_data.load_captions(cfg, "train"), caption_data.load_captions(cfg, "test")
  assert len(test.image_ids) == 2 and not set(train.image_ids) & set(test.image_ids)
  for split in (train, test):  # every caption of an image, in the image's split, with its pixels
    for row, image_id in enumerate(split.image_ids):
      got = sorted(c for c, i in zip(split.captions, split.caption_image) if i == row)
      assert got == sorted(made[image_id])
      with Image.open(root / image_id) as im:
        expected = transforms.resize_and_crop(np.asarray(im.convert("RGB")), 32)
      np.testing.assert_array_equal(split.images[row], expected)
  # The same split on every preparation: chosen by hash of the image path, not by a seed.
  from jaxcl.data.builders import captions as builder
  assert builder.plan(str(root), image_size=8).split_of_image.count("test") == 2
  tok = data.text.train_tokenizer(data.text.training_texts(cfg), vocab_size=64)
  batch = next(data.train_iterator(cfg, seed=0, global_batch_size=4,
                                   caption_encoder=data.text.TextEncoder(tok, 12)))
  assert batch["image"].shape == (4, 32, 32, 3) and batch["caption_ids"].shape == (4, 12)
  assert batch["caption_ids"].dtype == np.int32
  with pytest.raises(ValueError, match="already prepared"):
    sources.prepare_captions(str(root), "pics", data_dir=cfg.data_dir)


def _broken_png(path):
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), np.uint8)).save(path)
  path.write_bytes(path.read_bytes()[:200])  # a valid header, most pixels cut off


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.joinpath("captions.jsonl").write_text('{"image": "imgs/0.jpg"}\n'),
     r"captions.jsonl:1: no 'caption'"),
    (lambda r: r.joinpath("captions.jsonl").write_text(
        '{"image": "imgs/0.jpg", "caption": "a"}\n{"image": "../x.png", "caption": "b"}\n'),
     r"captions.jsonl:2: image '../x.png' is not inside"),
    (lambda r: r.joinpath("captions.jsonl").open("a").write('{"image": "imgs/nope.png", '
                                                            '"caption": "c"}\n'),
     r"captions.jsonl:37: image file .*nope.png is not a file"),
    (lambda r: r.joinpath("captions.jsonl").open("a").write("{not json\n"),
     r"captions.jsonl:37: invalid JSON"),
    (lambda r: r.joinpath("captions.jsonl").open("a").write('{"image": "imgs/1.png", '
                                                            '"caption": "  "}\n'),
     r"captions.jsonl:37: 'caption' is empty"),
    (lambda r: _broken_png(r / "imgs" / "1.png"), r"1.png is not a readable image"),
    (lambda r: r.joinpath("captions.jsonl").unlink(), r"a folder without captions.jsonl"),
    (lambda r: r.joinpath("captions.jsonl").write_text('{"image": "imgs/0.jpg", "caption": "a"}\n'),
     r"1 distinct image\(s\); a dataset needs at least 2"),
])
def test_bad_caption_files_fail_in_one_line_and_prepare_nothing(tmp_path, edit, match):
  _caption_folder(tmp_path / "pics")
  edit(tmp_path / "pics")
  data_dir = tmp_path / "tfds"
  with pytest.raises(ValueError, match=match) as err:
    sources.prepare_captions(str(tmp_path / "pics"), "pics", data_dir=str(data_dir))
  assert "\n" not in str(err.value)
  assert not list(data_dir.glob("**/dataset_info.json"))


def _recall_reference(image_emb, text_emb, caption_image, k):
  """The definition, transcribed: rank every candidate by cosine similarity, look in the top K."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  sim = unit(image_emb) @ unit(text_emb).T
  i2t = [np.any(caption_image[np.argsort(-sim[i], kind="stable")[:k]] == i)
         for i in range(len(image_emb))]
  t2i = [c_img in np.argsort(-sim[:, c], kind="stable")[:k] for c, c_img in enumerate(caption_image)]
  return np.mean(i2t), np.mean(t2i)


def test_image_text_recall_matches_the_definition():
  rng = np.random.default_rng(0)
  caption_image = np.concatenate([np.arange(9), rng.integers(0, 9, 14)])  # 1 to several captions
  images = rng.normal(size=(9, 6)).astype(np.float32)
  texts = (images[caption_image] + 1.2 * rng.normal(size=(len(caption_image), 6))).astype(np.float32)
  got = image_text_recall(images, texts, caption_image, ks=(1, 3, 5))
  for k in (1, 3, 5):
    i2t, t2i = _recall_reference(images, texts, caption_image, k)
    assert got[f"i2t_recall@{k}"] == pytest.approx(i2t) and got[f"t2i_recall@{k}"] == pytest.approx(t2i)
  assert 0 < got["i2t_recall@1"] < 1 and 0 < got["t2i_recall@1"] < 1  # the test is not trivial
  perfect = image_text_recall(images, images[caption_image], caption_image, ks=(1,))
  assert perfect == {"i2t_recall@1": 1.0, "t2i_recall@1": 1.0}
  with pytest.raises(ValueError, match=r"image 3 \(of 6\) has no caption"):
    image_text_recall(images, texts[:3], caption_image[:3])


def test_clip_caption_loss_masks_captions_of_the_same_image():
  rng = np.random.default_rng(1)
  img, txt = (jnp.asarray(rng.normal(size=(6, 4)), jnp.float32) for _ in range(2))
  scale = 7.0
  distinct = losses.retrieval_infonce(img, txt, temperature=1 / scale, symmetric=True,
                                      positive_keys=jnp.arange(6))
  np.testing.assert_allclose(distinct, losses.clip_loss(img, txt, logit_scale=scale), rtol=1e-5)
  # Rows 0 and 1 show one image: neither direction counts the other row as a negative.
  keys = np.array([0, 0, 1, 2, 3, 4])
  unit = lambda x: np.asarray(x) / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  logits = scale * unit(img) @ unit(txt).T
  mask = (keys[:, None] != keys[None, :]) | np.eye(6, dtype=bool)

  def ce(z):
    z = np.where(mask, z, -np.inf)
    return np.mean(np.log(np.exp(z).sum(1)) - np.diag(z))

  masked = losses.retrieval_infonce(img, txt, temperature=1 / scale, symmetric=True,
                                    positive_keys=jnp.asarray(keys))
  np.testing.assert_allclose(masked, 0.5 * (ce(logits) + ce(logits.T)), rtol=1e-5)


def test_clip_trains_on_captions_and_reports_recall(prepared, tmp_path):
  from jaxcl import experiment
  cfg, _, _ = prepared
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "clip_digits.py"), "smoke")
  c.data.name, c.data.data_dir = cfg.name, cfg.data_dir
  c.data.max_length = 16
  c.steps = 2
  c.eval.final = True
  result = experiment.train_and_evaluate(c, str(tmp_path / "run"))
  assert result["step"] == 2 and np.isfinite(result["loss"])
  for key in ("i2t_recall@1", "i2t_recall@5", "i2t_recall@10", "t2i_recall@1", "t2i_recall@10"):
    assert 0 <= result[key] <= 1 and 0 <= result["random_init"][key] <= 1
  assert result["i2t_recall@5"] == 1.0  # 2 test images: every image's caption is in its top 5
  assert "knn" not in result and "text->image R@1" in result["table"]
  seconds = {k: v for k, v in result["eval_seconds"].items() if k != "total"}
  assert {"load and tokenize captions", "trained/encode images", "trained/recall",
          "random init/setup", "other"} <= set(seconds)
  assert sum(seconds.values()) == pytest.approx(result["eval_seconds"]["total"], abs=0.01 * len(seconds))
  # The BPE tokenizer trained on the training captions, saved with the run.
  tok = data.text.load_tokenizer(str(tmp_path / "run" / "tokenizer.json"))
  assert tok.token_to_id("picture") is not None
