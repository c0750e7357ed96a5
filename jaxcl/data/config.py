"""Default data configuration (`jaxcl.data.default_config`)."""

import os

import ml_collections
from ml_collections import config_dict

# Stored image side per dataset; None keeps the stored size (the dataset must then have a fixed shape).
_DEFAULT_IMAGE_SIZE = {"digits": 32, "cifar10": 32, "imagenet2012": 224, "stl10": 96}
_DEFAULT_EVAL_SPLIT = {"imagenet2012": "validation", "imagenette": "validation"}


def default_data_dir() -> str:
  """The TFDS data directory: `$JAXCL_DATA_DIR`, else `~/.cache/jaxcl/tensorflow_datasets`."""
  env = os.environ.get("JAXCL_DATA_DIR")
  if env:
    return env
  return os.path.join(os.path.expanduser("~"), ".cache", "jaxcl", "tensorflow_datasets")


def default_config(name: str = "digits") -> ml_collections.ConfigDict:
  """Returns the `data` sub-config for dataset `name`.

  Fields:
    name: "digits" or "animal_shapes" (embedded images, prepared on first use), "plaid" (embedded
      appliance current signals, sequences of 1,024 samples), "stdlib_code" (embedded text
      retrieval: docstring -> code of Python's standard library), "cifar10" (from a user's
      cifar-10-python.tar.gz), or any TFDS catalog name already prepared as array_record in data_dir
      (a text dataset of your own: `jaxcl prepare-data --from_pairs FILE --name NAME`).
    data_dir: TFDS data directory (`$JAXCL_DATA_DIR` or ~/.cache/jaxcl/tensorflow_datasets).
    manual_dir: where `prepare` finds user-supplied archives (cifar10: cifar-10-python.tar.gz).
    image_size: side of the square uint8 images the pipeline yields. digits are stored at this size
      (8x8 upsampled); other datasets are resized on the host when their stored size differs
      (shorter side to image_size, then centre crop). None keeps the stored size.
    resize_method: "bilinear" or "nearest" (used for upsampling digits and for host-side resizing).
    num_workers: Grain worker processes (0: read in the main process with threads).
    read_threads: threads per process that read and decode batches.
    prefetch_buffer_size: batches (not examples) read ahead per process by those threads.
    shuffle_seed: if not None, overrides the `seed` given to `train_iterator`.
    examples_per_class: m > 0 makes every global batch hold m examples of each of batch / m classes
      (what batch-hard / semi-hard mining and SupCon need); 0 shuffles the split instead.
    train_classes: n > 0 trains on the examples of classes 0 .. n-1 only and evaluates retrieval
      (Recall@K, MAP@R) on every image of the other classes, never seen in training: the
      metric-learning protocol of CUB-200 / Cars-196 / SOP (Musgrave et al. 2020). 0: all classes.
    validation_classes: v > 0 (with train_classes) scores retrieval on classes n .. n+v-1 only: for
      tuning, carve the validation classes out of the final run's training classes, so the test
      classes are never looked at.
    train_split / eval_split: TFDS split names used for training and evaluation.
    image_key / label_key: feature names of the image (or, for sequence datasets such as plaid or a
      TFDS audio dataset, the [T] or [T, C] sequence, fed to the method as float32 [T, C] under the
      batch key "image") and the integer label.
    sequence_length: for sequences: the steps kept (the first ones; shorter ones zero-padded);
      needed where the stored length varies (audio: e.g. 16000 for speech_commands' 1 s clips).
    max_length: for text: tokens per text after tokenization ([CLS] and [SEP] included); longer
      texts are truncated, shorter ones padded.
    query_max_length: for text: tokens per query when queries are much shorter than documents
      (a docstring's first sentence against a function's code); 0: max_length.
    tokenizer: for text: a tokenizer.json (Hugging Face tokenizers) to use; None trains a BPE
      vocabulary on the training split and saves it with the run.
    vocab_size: for text: the size of the vocabulary trained when tokenizer is None.

  Args:
    name: dataset name.

  Returns:
    An unlocked ConfigDict (the trainer locks the whole experiment config).
  """
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.data_dir = default_data_dir()
  cfg.manual_dir = config_dict.placeholder(str)
  cfg.image_size = config_dict.placeholder(int)
  cfg.image_size = _DEFAULT_IMAGE_SIZE.get(name)
  cfg.resize_method = "bilinear"
  cfg.num_workers = 0
  cfg.read_threads = 2
  cfg.prefetch_buffer_size = 4
  cfg.shuffle_seed = config_dict.placeholder(int)
  cfg.examples_per_class = 0
  cfg.train_classes = 0
  cfg.validation_classes = 0
  cfg.train_split = "train"
  cfg.eval_split = _DEFAULT_EVAL_SPLIT.get(name, "test")
  cfg.image_key = "signal" if name == "plaid" else "image"
  cfg.sequence_length = config_dict.placeholder(int)
  cfg.label_key = "label"
  cfg.max_length = 128
  cfg.query_max_length = 0
  cfg.tokenizer = config_dict.placeholder(str)
  cfg.vocab_size = 8192
  return cfg
