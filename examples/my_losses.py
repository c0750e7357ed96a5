"""A loss of one's own, trained by name: ``--config.method.loss=my_losses:nt_xent_am``.

NT-Xent with an additive margin on the positive (as AM-Softmax does for classes): the positive's cosine
must beat every negative's by ``margin`` before the loss lets go. It uses jaxcl's building blocks, so
it gathers negatives over every device like ``nt_xent`` (``axis_name``) and is exact when sharded.
"""

import jax
from jaxcl.losses import collective, ops


def nt_xent_am(z1, z2, *, temperature=0.1, margin=0.1, axis_name=None):
  logits, positive, is_self, _ = ops.two_view_logits(z1, z2, temperature, axis_name)
  logits = logits - (margin / temperature) * jax.nn.one_hot(positive, logits.shape[1])
  per_anchor = ops.cross_entropy(logits, positive, ~is_self)
  return collective.psum(per_anchor.sum(), axis_name) / logits.shape[1]
