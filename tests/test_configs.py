"""Every config in configs/: loads, is locked, documents its command, and its smoke variant validates."""

import glob
import os

import pytest

from jaxcl import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
NAMES = [os.path.splitext(os.path.basename(p))[0] for p in CONFIGS]


def test_the_expected_configs_exist():
  for method in ("simclr", "moco_v3", "byol", "barlow_twins", "vicreg", "supcon", "clip"):
    for data in ("digits", "cifar10"):
      assert f"{method}_{data}" in NAMES
  assert {"simclr_imagenet", "byol_imagenet", "moco_v3_imagenet"} <= set(NAMES)


def _with_model_folder(c, folder):
  """A pretrained-tower config (model.pretrained is required) pointed at the tests' tiny BERT."""
  if c.model.name == "bert":
    with pytest.raises(ValueError, match="config.model.pretrained=''"):
      experiment.validate(c, num_devices=8, check_data=False)
    c.model.pretrained = folder
  return c


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
  import tiny_bert  # pylint: disable=g-import-not-at-top
  return tiny_bert.write_folder(tmp_path_factory.mktemp("bert"), max_position_embeddings=128)[0]


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_config_is_documented_locked_and_valid(path, tiny_bert_folder):
  name = os.path.splitext(os.path.basename(path))[0]
  c = _with_model_folder(experiment.load_config_file(path), tiny_bert_folder)
  doc = open(path).read()
  assert f"jaxcl train --config configs/{name}.py --workdir" in doc
  assert "Expected" in doc
  with pytest.raises(AttributeError):
    c.optim.lrr = 1.0  # a misspelt field is an error, not a silent no-op
  assert c.method.name in name or (name.startswith("finetune_") and c.method.name == "retrieval")
  # Full configs of datasets that are not prepared here are checked without touching the data.
  experiment.validate(c, num_devices=8, check_data=c.data.name == "digits")
  smoke = _with_model_folder(experiment.load_config_file(path, "smoke"), tiny_bert_folder)
  # Smoke runs use the embedded data: digits, PLAID for the sequence method, stdlib_code for text.
  assert smoke.steps <= 5 and smoke.batch_size <= 32
  assert smoke.data.name in ("digits", "plaid", "stdlib_code")
  assert smoke.method.name == c.method.name
  experiment.validate(smoke, num_devices=8)


def test_unknown_config_argument_is_an_error():
  with pytest.raises(ValueError, match="unknown config argument"):
    experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smok")
