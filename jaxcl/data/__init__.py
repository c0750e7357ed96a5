"""Data: TFDS datasets stored as array_record and read through Grain, without TensorFlow.

  cfg = jaxcl.data.default_config("digits")
  jaxcl.data.info(cfg)                       # DataInfo(image_shape=(32, 32, 1), num_classes=10, ...)
  it = jaxcl.data.train_iterator(cfg, seed=0, global_batch_size=256)
  batch = next(it)                           # {"image": uint8 [256,32,32,1], "label": int32 [256]}
  state = it.get_state()                     # checkpoint it; it.set_state(state) resumes exactly
  images, labels = jaxcl.data.load_arrays(cfg, "test")

Text retrieval datasets (query/positive pairs, a corpus and qrels) are read through
``jaxcl.data.text``; image-caption datasets (``prepare_captions``) through ``jaxcl.data.captions``.
"""

from jaxcl.data import captions, images, text
from jaxcl.data.config import default_config, default_data_dir
from jaxcl.data.pipeline import load_arrays, train_iterator
from jaxcl.data.sources import (
    EMBEDDED, DataInfo, NotPreparedError, check_prepared, info, prepare, prepare_command,
    prepare_captions, prepare_folder, prepare_text)

# Every process that reads data imports this package (Grain's workers too), so this one call sets
# Pillow's pixel limit wherever jaxcl decodes images.
images.limit_pil_pixels()

__all__ = [
    "EMBEDDED", "DataInfo", "NotPreparedError", "captions", "check_prepared", "default_config",
    "default_data_dir", "info", "load_arrays", "prepare", "prepare_captions", "prepare_command",
    "prepare_folder", "prepare_text", "text", "train_iterator",
]
