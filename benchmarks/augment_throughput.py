"""Throughput of SimCLR two-view augmentation: jaxcl on the accelerator vs a PyTorch-style host pipeline.

The device side is ``jaxcl.augment`` (the ``simclr`` recipe, jitted, on a uint8 batch already on the
device, as the trainer feeds it). The host side is what the PyTorch anchors (lightly, solo-learn,
moco) run in their data loaders: per-example Pillow/NumPy operations with torchvision's semantics
(RandomResizedCrop, flip, ColorJitter in random order with prob 0.8, grayscale 0.2, Gaussian blur via
``PIL.ImageFilter``, conversion to float32), here in a Grain ``MapDataset`` with 0 and 2 worker
processes. Both make two views per image at 32 px (CIFAR-like 32x32 sources, no blur, s = 0.5) and
224 px (256x256 sources, blur p = 0.5, s = 1.0). Sources are crops of scikit-learn's sample photos.

Run: ``python benchmarks/augment_throughput.py`` (about two minutes). Writes
``benchmarks/results/augment_throughput.json`` and prints images/s and the device/host ratios.
``--smoke``: 32 px only, batches of 16, one short round, into a temporary ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time

import grain
import jax
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (--out / --fresh / --smoke)
from jaxcl import augment  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "augment_throughput.json")


def source_images(n: int, side: int, seed: int = 0) -> np.ndarray:
  """``n`` uint8 [side, side, 3] images: random square crops of the two sklearn photos, resized."""
  import sklearn.datasets

  photos = sklearn.datasets.load_sample_images().images
  rng = np.random.default_rng(seed)
  out = np.empty((n, side, side, 3), np.uint8)
  for i in range(n):
    photo = photos[i % len(photos)]
    c = int(rng.integers(side // 2, min(photo.shape[:2]) + 1))
    t, l = rng.integers(0, photo.shape[0] - c + 1), rng.integers(0, photo.shape[1] - c + 1)
    crop = Image.fromarray(photo[t:t + c, l:l + c]).resize((side, side), Image.BILINEAR)
    out[i] = np.asarray(crop)
  return out


# ------------------------------------------------------------------ host pipeline (torchvision semantics)

def _rrc_box(rng, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return 0, 0, height, width  # square sources: the clamped fallback is the whole image


def _adjust_hue(img: Image.Image, shift: float) -> Image.Image:
  # As torchvision's PIL path: rotate the uint8 H channel in PIL's HSV mode.
  h, s, v = img.convert("HSV").split()
  h = Image.fromarray((np.asarray(h, np.int16) + int(shift * 255)).astype(np.uint8), "L")
  return Image.merge("HSV", (h, s, v)).convert("RGB")


class HostSimCLR:
  """Two SimCLR views of one uint8 image, per example, with Pillow (a grain ``RandomMap`` callable)."""

  def __init__(self, *, size: int, strength: float, blur_prob: float):
    self.size, self.blur_prob = size, blur_prob
    self.jitter = (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)

  def view(self, img: Image.Image, rng: np.random.Generator) -> np.ndarray:
    t, l, h, w = _rrc_box(rng, img.height, img.width)
    x = img.resize((self.size, self.size), Image.BILINEAR, box=(l, t, l + w, t + h))
    if rng.random() < 0.5:
      x = x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.8:
      b, c, s, hue = self.jitter
      ops = [
          lambda y: ImageEnhance.Brightness(y).enhance(rng.uniform(max(0, 1 - b), 1 + b)),
          lambda y: ImageEnhance.Contrast(y).enhance(rng.uniform(max(0, 1 - c), 1 + c)),
          lambda y: ImageEnhance.Color(y).enhance(rng.uniform(max(0, 1 - s), 1 + s)),
          lambda y: _adjust_hue(y, rng.uniform(-hue, hue)),
      ]
      for i in rng.permutation(4):
        x = ops[i](x)
    if rng.random() < 0.2:
      x = x.convert("L").convert("RGB")
    if rng.random() < self.blur_prob:
      x = x.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
    return np.asarray(x, np.float32) / 255.0

  def __call__(self, image: np.ndarray, rng: np.random.Generator):
    img = Image.fromarray(image)
    return self.view(img, rng), self.view(img, rng)


def host_iterator(images, *, size, strength, blur_prob, batch, workers):
  ds = (grain.MapDataset.source(images).repeat()
        .random_map(HostSimCLR(size=size, strength=strength, blur_prob=blur_prob), seed=0)
        # No in-process prefetch threads: the main process (0 workers) or each worker process
        # augments one example after another, as a PyTorch DataLoader worker does.
        .batch(batch).to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))
  if workers:
    from absl import flags

    # Grain reads its absl flags when it starts workers; a plain script never parsed them.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  it = iter(ds)
  next(it)  # worker start-up and the first batch are not counted

  def step():
    next(it)
    return batch

  return it, step


# ------------------------------------------------------------------ device pipeline

def device_step(images, *, size, strength, blur_prob, batch):
  """A function that augments one device-resident batch (new keys each call); and the compile time."""
  cfg = augment.default_config("simclr", size=size)
  cfg.strength = strength
  cfg.blur_prob = (blur_prob, blur_prob)
  recipe = jax.jit(augment.make_recipe(cfg))
  x = jax.device_put(images[:batch])
  base = jax.random.key(0)
  t0 = time.perf_counter()
  jax.block_until_ready(recipe(jax.random.split(base, batch), x))
  compile_s = time.perf_counter() - t0
  calls = [0]

  def step():
    calls[0] += 1
    jax.block_until_ready(recipe(jax.random.split(jax.random.fold_in(base, calls[0]), batch), x))
    return batch

  return step, compile_s


def images_per_second(step, seconds: float) -> float:
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    n += step()
  return n / (time.perf_counter() - start)


def best_rate(step, args) -> float:
  """The best of a few short rounds: the host is shared, so one slow round says little."""
  return max(images_per_second(step, args.seconds) for _ in range(args.rounds))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement round")
  parser.add_argument("--rounds", type=int, default=3, help="rounds per pipeline; the best is kept")
  _cli.add_flags(parser, OUT)  # --fresh changes nothing: every run measures everything
  args = parser.parse_args()
  _cli.out_path(args, OUT)
  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  settings = [  # (size, source side, strength, blur prob, device batch, host batch)
      (32, 32, 0.5, 0.0, 512 if on_cpu else 4096, 128),
      (224, 256, 1.0, 0.5, 16 if on_cpu else 256, 16),
  ]
  if args.smoke:
    settings = [(32, 32, 0.5, 0.0, 16, 16)]
    args.seconds, args.rounds = 0.05, 1
  load_before = [round(v, 2) for v in os.getloadavg()]
  results = []
  for size, side, strength, blur_prob, dev_batch, host_batch in settings:
    images = source_images(max(dev_batch, 16 if args.smoke else 256), side)
    common = dict(size=size, strength=strength, blur_prob=blur_prob)
    dev_step, compile_s = device_step(images, batch=dev_batch, **common)
    best = {"device": best_rate(dev_step, args)}
    del dev_step
    for workers in (0, 2):
      # One pipeline at a time, torn down before the next: idle prefetching workers would
      # otherwise steal the 2 shared cores from whatever is being measured.
      it, step = host_iterator(images, batch=host_batch, workers=workers, **common)
      best[f"host_{workers}w"] = best_rate(step, args)
      del it, step
      gc.collect()
    row = dict(size=size, source_side=side, strength=strength, blur_prob=blur_prob,
               device_batch=dev_batch, host_batch=host_batch, device_compile_s=round(compile_s, 2))
    for name, rate in best.items():
      row[f"{name}_images_per_s"] = round(rate, 1)
    for w in ("0w", "2w"):
      row[f"ratio_device_over_host_{w}"] = round(best["device"] / best[f"host_{w}"], 2)
    results.append(row)
    print(f"{size:>4} px  device {best['device']:9.1f} img/s   host 0 workers {best['host_0w']:8.1f}"
          f"   host 2 workers {best['host_2w']:8.1f}   device / host(2 workers) "
          f"{row['ratio_device_over_host_2w']:.2f}x", flush=True)
  report = dict(
      benchmark="SimCLR two-view augmentation, images per second (each image -> 2 views)",
      device=f"{device.platform}: {device.device_kind}", jax=jax.__version__,
      host_cpus=os.cpu_count(), load_average_before=load_before,
      load_average_after=[round(v, 2) for v in os.getloadavg()],
      platform=platform.platform(), seconds_per_round=args.seconds, rounds=args.rounds, results=results,
      note=("images/s = source images per second, each turned into 2 views. device side: jitted "
            "jaxcl.augment simclr recipe on a device-resident uint8 batch; host side: per-example "
            "Pillow ops with torchvision semantics in grain (0 / 2 workers), batched float32 views. "
            "Best of a few rounds per pipeline, pipelines measured one after another."),
  )
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=2)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
