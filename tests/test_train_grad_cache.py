"""Gradient caching (train.grad_cache_chunks) gives the plain step's loss and update for SimCLR."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tolerance import reordered_rtol

from jaxcl import data, experiment, methods
from jaxcl.train import mesh as parallel
from jaxcl.train import make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _NoBatchStatsEncoder(nnx.Module):
  """conv-ReLU-pool-linear: each example's features depend on that example only (no BatchNorm),
  the condition under which gradient caching is exact."""

  def __init__(self, in_channels, rngs):
    self.conv = nnx.Conv(in_channels, 8, (3, 3), strides=(2, 2), rngs=rngs)
    self.out = nnx.Linear(8, 16, rngs=rngs)
    self.out_dim = 16

  def __call__(self, x, *, train=False, axis_name=None):
    del train, axis_name
    return self.out(jnp.mean(jax.nn.relu(self.conv(x)), axis=(1, 2)))


def _simclr(config, info):
  model = experiment.parts.create_method(config, image_shape=info.image_shape, num_classes=info.num_classes,
                         class_names=info.class_names, rngs=nnx.Rngs(0))
  model.encoder = _NoBatchStatsEncoder(info.image_shape[-1], nnx.Rngs(1))
  return model


def test_grad_cache_equals_plain_step(mesh):
  c = experiment.load_config_file(os.path.join(ROOT, "configs", "simclr_digits.py"), "smoke")
  c.unlock()
  c.method.proj_bn = False
  c.batch_size = 32  # 4 rows per device: 2 chunks of 2
  info = data.info(c.data)
  model = _simclr(c, info)
  graphdef, params, sharded, rest = nnx.split(model, nnx.Param, parallel.SHARDED_VARIABLES, ...)
  specs = {"params": parallel.state_specs(params), "sharded": parallel.state_specs(sharded),
           "rest": parallel.state_specs(rest)}
  tx = optax.sgd(1.0)
  state = {"step": jnp.int32(3), "params": params, "sharded": sharded, "rest": rest,
           "opt_state": tx.init(params),
           "guard": {"nonfinite_count": jnp.int32(0), "first_nonfinite_step": jnp.int32(-1)}}
  batch = next(data.train_iterator(c.data, seed=0, global_batch_size=c.batch_size))
  batch = parallel.shard_batch(batch, mesh)
  out = {}
  for chunks in (0, 2):
    step = make_train_step(graphdef=graphdef, trainable=nnx.Param, tx=tx, schedule=lambda s: 1.0,
                           mesh=mesh, state_specs=specs, train_key=jax.random.key(0),
                           total_steps=10, grad_cache_chunks=chunks)
    out[chunks] = jax.jit(step)(state, batch)
  (plain, m_plain), (cached, m_cached) = out[0], out[2]
  np.testing.assert_allclose(m_cached["loss"], m_plain["loss"], rtol=1e-6)
  np.testing.assert_allclose(m_cached["grad_norm"], m_plain["grad_norm"], rtol=1e-5)
  assert float(m_plain["grad_norm"]) > 0
  # Chunks split the batch sums (4 rows per device x 16 x 16 positions for the first conv) into two
  # partial sums: float32 reordering of about sqrt(1024) u per sum, a few sums deep, relative to the
  # scale of the summed terms. A bias gradient can cancel to far below its terms, so the scale is the
  # largest update of the whole step, not of each leaf.
  before = jax.tree.leaves(params)
  def updates(new):
    return [np.asarray(n) - np.asarray(b) for n, b in zip(jax.tree.leaves(new["params"]), before)]
  plain_updates, cached_updates = updates(plain), updates(cached)
  scale = max(float(np.max(np.abs(u))) for u in plain_updates)
  rtol = reordered_rtol(1024, sums=3, margin=3.0)
  for got, want in zip(cached_updates, plain_updates):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
