"""PLAID, real electrical current signals of 11 kinds of household appliance, as a TFDS array_record
dataset of sequences.

PLAID (Plug Load Appliance Identification Dataset; Gao et al. 2014, in the version of the UCR/UEA time
series archive edited by Schafer and Leser) holds current measurements of air conditioners, fans,
fridges, heaters, laptops, microwaves... (11 classes), each a few seconds around the appliance being
switched on, 100 to 1,344 samples long (median 300); 537 train and 537 test series. It ships inside the
`sktime` wheel (BSD-3; the `signals` extra installs it), as the archive's `.ts` text files, parsed here
as text (no code runs, no sktime import): the header is checked, every value must be a finite number,
every line is bounded in length, labels must be among the header's classes, and nothing is written
until both files have parsed.

Stored: ``signal`` float32 [LENGTH, 1] (the first LENGTH samples; a shorter series is repeated from its
start until LENGTH, as the steady state of an appliance's current is periodic, so any window of it is
real signal), ``length`` (the real sample count, at most LENGTH) and ``label``.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from jaxcl import extras
from jaxcl.data.builders import local

PACKAGE = "sktime"
CLASS_NAMES = ("air conditioner", "compact fluorescent lamp", "fan", "fridge", "hairdryer", "heater",
               "incandescent light bulb", "laptop", "microwave", "vacuum", "washing machine")
LENGTH = 1024
SIZES = {"train": 537, "test": 537}
_MAX_LINE = 64 * 1024  # the longest real line is ~12 KB
_FIX = "reinstall it: pip install --force-reinstall sktime==1.2.0"


def data_dir() -> str:
  """The folder of the PLAID files inside the installed sktime package (found without importing it)."""
  what = "dataset 'plaid' (shipped in the sktime wheel)"
  return os.path.join(extras.package_dir(PACKAGE, "signals", what), "datasets", "data", "PLAID")


def parse_ts(path: str, *, classes: int) -> tuple[list[np.ndarray], np.ndarray]:
  """A univariate ``.ts`` file of the UCR/UEA archive: (list of float32 series, int64 labels).

  Raises ValueError naming the file and line for anything that is not such a file.
  """
  series, labels, in_data = [], [], False
  with open(path, encoding="utf-8-sig") as f:
    for number, line in enumerate(iter(lambda: f.readline(_MAX_LINE + 1), ""), start=1):
      if len(line) > _MAX_LINE:
        raise ValueError(f"{path}:{number}: a line longer than {_MAX_LINE:,} characters; {_FIX}.")
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      if not in_data:
        if line.lower().startswith("@univariate") and line.split()[-1].lower() != "true":
          raise ValueError(f"{path}: not a univariate series file; {_FIX}.")
        in_data = line.lower() == "@data"
        continue
      values, sep, label = line.rpartition(":")
      try:
        x = np.asarray([float(v) for v in values.split(",")], np.float32)
        y = int(label)
      except ValueError:
        raise ValueError(f"{path}:{number}: expected 'v1,v2,...:label' with numbers; {_FIX}.") from None
      if not sep or not np.isfinite(x).all() or not 0 <= y < classes or ":" in values:
        raise ValueError(f"{path}:{number}: a missing or non-finite value, a second dimension or a "
                         f"label outside 0..{classes - 1}; {_FIX}.")
      series.append(x)
      labels.append(y)
  if not in_data:
    raise ValueError(f"{path}: no @data section; not a .ts file of the time series archive; {_FIX}.")
  return series, np.asarray(labels, np.int64)


def splits() -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
  """Both splits parsed and checked: {split: (series, labels)}."""
  out = {}
  for split, size in SIZES.items():
    path = os.path.join(data_dir(), f"PLAID_{split.upper()}.ts")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} is missing; {_FIX}.")
    series, labels = parse_ts(path, classes=len(CLASS_NAMES))
    if len(series) != size:
      raise ValueError(f"{path} holds {len(series)} series, PLAID's {split} split has {size}; {_FIX}.")
    out[split] = series, labels
  return out


def fixed_length(x: np.ndarray) -> tuple[np.ndarray, int]:
  """The first LENGTH samples as float32 [LENGTH, 1] (a shorter series repeated), and the real length."""
  return np.resize(x, LENGTH).astype(np.float32)[:, None], min(len(x), LENGTH)


class Plaid(local.LocalFiles, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """PLAID appliance current signals (from the sktime wheel), fixed length with the real length."""

  name = "plaid"
  code_path = None  # no checksums file to look up (see animal_shapes)
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "sktime 1.2.0's PLAID (UCR/UEA archive), first 1,024 samples, short ones repeated."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="PLAID: 1,074 appliance current signals in 11 classes.",
        features=tfds.features.FeaturesDict({
            "signal": tfds.features.Tensor(shape=(LENGTH, 1), dtype=np.float32),
            "length": tfds.features.Scalar(dtype=np.int32),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("signal", "label"),
        homepage="https://www.timeseriesclassification.com/description.php?Dataset=PLAID",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the files ship with an installed package.
    parsed = splits()  # both checked whole before any split is written
    return {split: self._generate_examples(*data) for split, data in parsed.items()}

  def _generate_examples(self, series, labels):
    for i, (x, y) in enumerate(zip(series, labels)):
      signal, length = fixed_length(x)
      yield i, {"signal": signal, "length": length, "label": int(y)}
