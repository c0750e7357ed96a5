"""The top of the library: an experiment config turned into the parts each layer takes, and run.

``config`` holds the building blocks of the files in ``configs/`` (``base``, ``smoke``, ``variant``,
``lock``...); ``validate`` checks a config before anything is built; ``run`` builds the mesh, method,
optimiser, data iterator, checkpointer and evaluator from it and calls ``jaxcl.train.fit``.
"""

from jaxcl.experiment.config import (augment_config, base, data_config, eval_defaults, load_config_file,
                                     lock, on_animal_shapes, parse_arg, shrink_heads, sibling, smoke,
                                     swap_method, train_defaults, variant)
from jaxcl.experiment.run import (Evaluator, apply_compute_dtype, build_setup, data_iterator,
                                  evaluate_checkpoint, train_and_evaluate)
from jaxcl.experiment.trained import restore_encoders
from jaxcl.experiment.validation import validate

__all__ = [
    "Evaluator", "apply_compute_dtype", "augment_config", "base", "build_setup", "data_config",
    "data_iterator", "eval_defaults", "evaluate_checkpoint", "load_config_file", "lock",
    "on_animal_shapes", "parse_arg", "restore_encoders", "shrink_heads", "sibling", "smoke",
    "swap_method", "train_and_evaluate", "train_defaults", "validate", "variant",
]
