"""Images/s of the SimCLR training step (ResNet-18, CIFAR stem, 32 px) and where its time goes.

  python benchmarks/train_throughput.py [--batch 256] [--iters 3] [--out benchmarks/results/train_throughput.json]
  python benchmarks/train_throughput.py --smoke   # the smoke config at batch 16, into a temporary --out

Measures, on whatever devices JAX sees (CPU here; the same script on a GPU/TPU):

* ``step``: the whole jitted, donated train step of ``jaxcl.train.step`` (augmentation, forward,
  backward, NT-Xent, LARS update), images/s = batch / median step time;
* the same work as separately jitted pieces, to split its time: ``augment`` (two SimCLR views of the
  batch), ``forward_backward`` (encoder + projector forward and backward on precomputed views, loss
  gradient w.r.t. the embeddings given), ``loss`` (NT-Xent value and gradient w.r.t. the embeddings).

The pieces are timed separately, so their sum differs from the fused step by what XLA overlaps or fuses.
Median of ``--iters`` runs after one warm-up (compilation) run each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import _cli  # noqa: E402  (--out / --fresh / --smoke)
from jaxcl import experiment, losses  # noqa: E402
from jaxcl.train import mesh as parallel  # noqa: E402
from jaxcl.data import DataInfo  # noqa: E402
from jaxcl.methods.image import two_views  # noqa: E402


def _time(fn, *args, iters):
  jax.block_until_ready(fn(*args))  # compile + warm up
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_throughput.json")


def config(batch: int, smoke: bool = False):
  c = experiment.load_config_file(
      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                   "simclr_cifar10.py"), "smoke" if smoke else None)
  c.unlock()
  c.batch_size = batch
  return c


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--iters", type=int, default=3)
  _cli.add_flags(p, OUT)  # --fresh changes nothing: every run measures everything
  args = p.parse_args(argv)
  _cli.out_path(args, OUT)
  if args.smoke:
    args.batch, args.iters = 16, 1
  c = config(args.batch, args.smoke)
  mesh = parallel.make_mesh()
  # Random uint8 images of CIFAR's shape: no dataset needed.
  info = DataInfo(image_shape=(32, 32, 3), num_classes=10, class_names=tuple("0123456789"),
                  num_train=50_000, num_test=10_000)
  setup = experiment.build_setup(c, mesh, info)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (args.batch,), dtype=np.int32)
  batch = parallel.shard_batch({"image": images, "label": labels}, mesh)

  results = {"device": jax.devices()[0].device_kind, "num_devices": mesh.size,
             "platform": platform.platform(), "batch": args.batch,
             "model": "smoke config" if args.smoke else "resnet18 (cifar stem)",
             "method": "simclr", "iters": args.iters}

  step = setup.step_fn()
  state = setup.init_state()
  holder = {"state": state}

  def run_step(b):
    holder["state"], m = step(holder["state"], b)
    return m["loss"]

  t_step = _time(run_step, batch, iters=args.iters)
  results["step_s"] = t_step
  results["images_per_s"] = args.batch / t_step

  method = setup.method(holder["state"])
  graphdef, params, rest = nnx.split(method, nnx.Param, ...)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(args.batch))

  @jax.jit
  def augment_only(keys, images):
    return two_views(method.recipe, {"image": images, "key": keys})

  results["augment_s"] = _time(augment_only, keys, jnp.asarray(images), iters=args.iters)
  v1, v2 = augment_only(keys, jnp.asarray(images))
  z_dim = c.method.proj_out_dim
  cotangent = jnp.ones((2 * args.batch, z_dim), jnp.float32) / (2 * args.batch)

  @jax.jit
  def forward_backward(params, rest, views):
    def f(p):
      m = nnx.merge(graphdef, p, rest, copy=True)
      z = m.projector(m.encoder(views, train=True), train=True)
      return jnp.vdot(z, cotangent)
    return jax.grad(f)(params)

  views = jnp.concatenate([v1, v2])
  results["forward_backward_s"] = _time(forward_backward, params, rest, views, iters=args.iters)
  z = jnp.asarray(rng.normal(size=(2 * args.batch, z_dim)), jnp.float32)

  @jax.jit
  def loss_only(z):
    return jax.value_and_grad(
        lambda z: losses.nt_xent(z[:args.batch], z[args.batch:], temperature=0.2))(z)

  results["loss_s"] = _time(loss_only, z, iters=args.iters)
  parts = results["augment_s"] + results["forward_backward_s"] + results["loss_s"]
  results["split_fraction"] = {k: results[f"{k}_s"] / parts
                               for k in ("augment", "forward_backward", "loss")}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
