"""jaxcl: contrastive representation learning in JAX/Flax.

Subpackages are imported on demand (``import jaxcl.losses``) so that a user who needs only the losses
does not pay for Grain, TFDS or Orbax at import time.
"""

__version__ = "0.1.0"
