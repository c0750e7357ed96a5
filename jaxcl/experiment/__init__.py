"""The top of the library: an experiment config turned into the parts each layer takes, and run.

``config`` holds the building blocks of the files in ``configs/`` (``base``, ``smoke``, ``variant``,
``lock``...); ``validate`` checks a config before anything is built (the checks that span sections;
each method checks its own); ``parts`` turns the config into the plain objects a method is built from
and the ``TrainSetup``; ``tasks`` has one module a kind of run (image, sequence, text, captions) with
its data stream and evaluator, picked by what the method declares; ``run`` builds the mesh,
checkpointer and task and calls ``jaxcl.train.fit``.
"""

from jaxcl.experiment.config import (augment_config, base, data_config, eval_defaults, load_config_file,
                                     lock, on_animal_shapes, parse_arg, shrink_heads, sibling, smoke,
                                     swap_method, train_defaults, variant)
from jaxcl.experiment import parts, tasks
from jaxcl.experiment.parts import build_setup, create_method
from jaxcl.experiment.run import apply_compute_dtype, evaluate_checkpoint, train_and_evaluate
from jaxcl.experiment.tasks.image import ImageEvaluator, data_iterator
from jaxcl.experiment.trained import restore_encoders
from jaxcl.experiment.validation import validate

__all__ = [
    "ImageEvaluator", "apply_compute_dtype", "augment_config", "base", "build_setup",
    "create_method", "data_config", "data_iterator", "eval_defaults", "evaluate_checkpoint",
    "load_config_file", "lock", "on_animal_shapes", "parse_arg", "parts", "restore_encoders",
    "shrink_heads", "sibling", "smoke", "swap_method",
    "tasks", "train_and_evaluate", "train_defaults", "validate", "variant",
]
