"""The one jitted training step, for any method.

The train state is a dict of pytrees (the functional boundary around the NNX method):
``step``, ``params`` (what ``method.trainable`` selects), ``sharded`` (``Queue``/``Stash``, split over
the data axis on dim 0), ``rest`` (targets, BatchNorm statistics, ...), ``opt_state`` and ``guard``
(non-finite step counter). One step:

1. per device, inside ``jax.shard_map``: per-example keys ``fold_in(fold_in(train_key, step), i)`` for the
   *global* example index ``i`` (views do not depend on the device count); ``method.loss(batch,
   axis_name='data')``; gradients w.r.t. the replicated parameters (JAX's transpose of the implicit
   broadcast sums them over devices), or with FSDP w.r.t. each device's slice of the split ones
   (all-gathered for the forward, so the gradient comes back reduce-scattered); device-varying
   non-trainable leaves (BatchNorm statistics) and metrics averaged over devices;
   or, with gradient caching (Gao et al. 2021), embed in chunks without keeping activations, take the
   loss gradient w.r.t. the embeddings, then re-run each chunk and back-propagate its slice;
2. optax update; ``method.after_step`` on the global state (EMA targets, queue pushes);
3. divergence guard: if the loss or a gradient is not finite the whole update is dropped (state stays
   the last good one) and the step is recorded in ``guard`` for the host to act on.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxcl.train import grad_cache
from jaxcl.methods.base import PROBE_FEATURES
from jaxcl.train.mesh import DATA_AXIS, SHARDED_VARIABLES, fsdp_dim


def example_keys(train_key: jax.Array, step: jax.Array, local_batch: int) -> jax.Array:
  """One key per local example: fold_in(fold_in(train_key, step), global example index).

  Call inside ``shard_map`` over ``'data'``: the device's rows are the contiguous block
  ``[axis_index * local_batch, (axis_index + 1) * local_batch)`` of the global batch.
  """
  step_key = jax.random.fold_in(train_key, step)
  offset = jax.lax.axis_index(DATA_AXIS) * local_batch
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(offset + jnp.arange(local_batch))


def _device_mean(tree: Any) -> Any:
  """Averages leaves over the data axis (floats by pmean, integers by pmax).

  Replicated leaves come back unchanged (the mean of equal values), so the code need not ask JAX
  which leaves vary across devices.
  """
  def mean(x):
    if jnp.issubdtype(x.dtype, jnp.floating):
      return jax.lax.pmean(x, DATA_AXIS)
    return jax.lax.pmax(x, DATA_AXIS)
  return jax.tree.map(mean, tree)


def _gather(tree: Any, specs: Any) -> Any:
  """FSDP inside ``shard_map``: every split leaf all-gathered whole (its transpose reduce-scatters the
  gradient); replicated leaves unchanged."""
  def whole(x, spec):
    dim = fsdp_dim(spec)
    return x if dim is None else jax.lax.all_gather(x, DATA_AXIS, axis=dim, tiled=True)
  return jax.tree.map(whole, tree, specs)


def _local(tree: Any, specs: Any) -> Any:
  """The inverse of ``_gather`` for values equal on every device: this device's slice of each split leaf."""
  def mine(x, spec):
    dim = fsdp_dim(spec)
    if dim is None:
      return x
    size = x.shape[dim] // jax.lax.axis_size(DATA_AXIS)
    return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(DATA_AXIS) * size, size, axis=dim)
  return jax.tree.map(mine, tree, specs)


def _reduce_scatter(tree: Any, specs: Any) -> Any:
  """Per-device gradients w.r.t. ``_gather``-ed leaves summed over devices, this device's slice kept
  (what the transpose of ``_gather`` does; for gradients computed w.r.t. the gathered values)."""
  def mine(x, spec):
    dim = fsdp_dim(spec)
    return x if dim is None else jax.lax.psum_scatter(x, DATA_AXIS, scatter_dimension=dim, tiled=True)
  return jax.tree.map(mine, tree, specs)


def _rows(batch: dict) -> int:
  """Rows of this device's batch (every leaf has one per example: images, or a text pair's tokens)."""
  return jax.tree.leaves(batch)[0].shape[0]


def _split(model: nnx.Module, trainable: Any):
  return nnx.split(model, trainable, SHARDED_VARIABLES, ...)


def make_train_step(
    *,
    graphdef: Any,
    trainable: Any,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: jax.sharding.Mesh,
    state_specs: dict[str, Any],
    train_key: jax.Array,
    total_steps: int,
    grad_cache_chunks: int = 0,
    online_probe: Any = None,
) -> Callable[[dict, dict], tuple[dict, dict]]:
  """Builds ``step(state, batch) -> (state, metrics)`` (not yet jitted).

  Args:
    graphdef: the method's ``nnx`` graph definition.
    trainable: the method's ``trainable`` filter.
    tx: the optax optimizer.
    schedule: learning-rate schedule (logged).
    mesh: the 1-D data mesh.
    state_specs: PartitionSpecs of ``params``, ``sharded`` and ``rest`` (keys ``'params'``,
      ``'sharded'``, ``'rest'``); a ``params`` or ``rest`` leaf split over 'data' (FSDP) is
      all-gathered inside the step and its gradient reduce-scattered.
    train_key: the run's training key.
    total_steps: length of the run (for ``after_step`` schedules).
    grad_cache_chunks: > 1 enables gradient caching with this many chunks per device batch; needs a
      method with ``embed`` and ``loss_from_embeddings``.
    online_probe: an ``online_probe.OnlineProbe`` to train on detached features alongside (its state
      is ``state['probe']``; its metrics join the step's), or None.

  Returns:
    The step function.
  """
  p_spec, r_spec = state_specs["params"], state_specs["rest"]

  def per_device(params, sharded, rest, batch, step):
    local_b = _rows(batch)
    batch = dict(batch, key=example_keys(train_key, step, local_b))
    rest = _gather(rest, r_spec)

    def loss_fn(p):
      model = nnx.merge(graphdef, _gather(p, p_spec), sharded, rest, copy=True)
      loss, metrics = model.loss(batch, axis_name=DATA_AXIS)
      _, _, new_sharded, new_rest = _split(model, trainable)
      return _device_mean(loss), (metrics, new_sharded, new_rest)

    if grad_cache_chunks and grad_cache_chunks > 1:
      # With FSDP the gradient w.r.t. the gathered parameters is per device: reduce-scatter it.
      loss, (metrics, new_sharded, new_rest), grads = _grad_cache(
          _gather(params, p_spec), sharded, rest, batch, graphdef=graphdef, trainable=trainable,
          chunks=grad_cache_chunks)
      grads = _reduce_scatter(grads, p_spec)
    else:
      (loss, (metrics, new_sharded, new_rest)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(params)
    # Features for the online probe stay per row (split over devices), not averaged.
    features = metrics.pop(PROBE_FEATURES, None)
    if online_probe is not None and features is None:  # the method did not hand over its own
      features = nnx.merge(graphdef, _gather(params, p_spec), sharded, rest,
                           copy=True).probe_features(batch)
    return (loss, _device_mean(metrics), grads, new_sharded, _local(_device_mean(new_rest), r_spec),
            features)

  def step_fn(state, batch):
    step = state["step"]
    params, sharded, rest = state["params"], state["sharded"], state["rest"]
    loss, metrics, grads, new_sharded, new_rest, features = jax.shard_map(
        per_device, mesh=mesh,
        in_specs=(p_spec, state_specs["sharded"], r_spec, jax.P(DATA_AXIS), jax.P()),
        out_specs=(jax.P(), jax.P(), p_spec, state_specs["sharded"], r_spec, jax.P(DATA_AXIS)),
    )(params, sharded, rest, batch, step)

    updates, new_opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    model = nnx.merge(graphdef, new_params, new_sharded, new_rest, copy=True)
    model.after_step(step=step, total_steps=total_steps)
    _, new_params, new_sharded, new_rest = _split(model, trainable)

    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = dict(params=new_params, sharded=new_sharded, rest=new_rest, opt_state=new_opt_state)
    probe_metrics = {}
    if online_probe is not None:  # a linear head on detached features (jaxcl.train.online_probe)
      new["probe"], probe_metrics = online_probe.update(state["probe"], features, batch["label"])
    old = {k: state[k] for k in new}
    # A non-finite step changes nothing but the step counter and the guard, so the state in memory
    # (and every checkpoint written from it) stays the last good one.
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    guard = state["guard"]
    first_bad = jnp.where((guard["first_nonfinite_step"] < 0) & ~finite, step,
                          guard["first_nonfinite_step"])
    kept["guard"] = dict(nonfinite_count=guard["nonfinite_count"] + (~finite).astype(jnp.int32),
                         first_nonfinite_step=first_bad)
    kept["step"] = step + 1
    out_metrics = dict(metrics, **probe_metrics, loss=loss, grad_norm=grad_norm,
                       update_norm=optax.tree.norm(updates), lr=schedule(step),
                       finite=finite.astype(jnp.float32))
    return kept, out_metrics

  return step_fn


def _grad_cache(params, sharded, rest, batch, *, graphdef, trainable, chunks):
  """Gradient caching inside one device's shard (GradCache, Gao et al. 2021, Alg. 1).

  Pass 1 embeds the local batch chunk by chunk without keeping activations; the loss and its gradient
  w.r.t. the (all-gathered) embeddings come from ``loss_from_embeddings``; pass 2 re-runs each chunk
  and back-propagates its slice of that gradient into the parameters. The result equals the plain
  gradient whenever the embeddings of a chunk do not depend on the other chunks (no batch statistics:
  BatchNorm sees chunk statistics here, as in the paper).
  """
  embed_fn, loss_from_emb_fn = grad_cache.hooks(nnx.merge(graphdef, params, sharded, rest, copy=True))
  local_b = _rows(batch)
  if local_b % chunks:
    raise ValueError(f"train.grad_cache_chunks={chunks} must divide the per-device batch {local_b}.")
  as_chunks = lambda t: jax.tree.map(lambda x: x.reshape(chunks, -1, *x.shape[1:]), t)  # noqa: E731
  as_rows = lambda t: jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), t)  # noqa: E731

  def embed(p, r, chunk):
    model = nnx.merge(graphdef, p, sharded, r, copy=True)
    emb = embed_fn(model, chunk, axis_name=DATA_AXIS)
    _, _, _, new_r = _split(model, trainable)
    return emb, new_r

  batch_chunks = as_chunks(batch)
  emb = as_rows(jax.lax.map(lambda ch: embed(params, rest, ch)[0], batch_chunks))
  emb = jax.lax.stop_gradient(emb)

  def loss_of_emb(e, p):
    model = nnx.merge(graphdef, p, sharded, rest, copy=True)
    loss, metrics = loss_from_emb_fn(model, e, batch, axis_name=DATA_AXIS)
    _, _, new_sharded, _ = _split(model, trainable)
    return _device_mean(loss), (metrics, new_sharded)

  # The loss's own parameters (a learned temperature) get their gradient here; the towers' come
  # from back-propagating the embeddings' gradient below.
  (loss, (metrics, new_sharded)), (emb_grad, loss_grads) = jax.value_and_grad(
      loss_of_emb, argnums=(0, 1), has_aux=True)(emb, params)

  def backprop_chunk(carry, xs):
    acc, r = carry
    chunk, g = xs
    _, vjp, new_r = jax.vjp(lambda p: embed(p, r, chunk), params, has_aux=True)
    (gp,) = vjp(g)
    return (jax.tree.map(jnp.add, acc, gp), _device_mean(new_r)), None

  (grads, new_rest), _ = jax.lax.scan(backprop_chunk, (loss_grads, rest),
                                      (batch_chunks, as_chunks(emb_grad)))
  return loss, (metrics, new_sharded, new_rest), grads
