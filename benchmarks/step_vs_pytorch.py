"""jaxcl's SimCLR train step against the same step written in PyTorch, side by side in one run.

  pip install '.[bench]'       # torch (CPU build), never a runtime dependency of jaxcl
  python benchmarks/step_vs_pytorch.py [--configs small_cnn,resnet18_w025,resnet18,vit_tiny]
                                       [--reps 5] [--steps 2] [--out benchmarks/results/step_vs_pytorch.json]

Each configuration trains SimCLR (two 32 px views, encoder + MLP projector, NT-Xent, then the optimizer
step) with the same network, projector, loss, optimizer, batch and float32 on both sides:

* ``jaxcl``: the real jitted, donated step of ``jaxcl.train`` (built from ``configs/simclr_*.py``),
  which also makes the two augmented views on the device;
* ``pytorch``: the same architecture written here in PyTorch, eager, on views made beforehand (no
  augmentation on its side), with the same optimizer written as PyTorch code (LARS or AdamW);
* ``jaxcl_fwd_bwd`` and ``jaxcl_augment``: the step's two main parts jitted alone (encoder +
  projector forward and backward on given views; the two-view recipe), so the step splits into parts.

Reps are interleaved (jaxcl, pytorch, parts, jaxcl, pytorch, ...) so a noisy shared machine slows both
alike; each rep times ``--steps`` steps after warm-up, and the JSON keeps every time and the medians.
Each finished configuration is written at once; a rerun skips configurations already in the file.
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

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxcl import experiment  # noqa: E402
from jaxcl.data import DataInfo  # noqa: E402
from jaxcl.methods.image import two_views  # noqa: E402
from jaxcl.train import mesh as mesh_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (config file, batch, encoder overrides)
CONFIGS = {
    "small_cnn": ("simclr_digits", 256, {}),  # the default job, as it runs
    "resnet18_w025": ("simclr_cifar10", 256, {"width_multiplier": 0.25}),
    "resnet18": ("simclr_cifar10", 128, {"width_multiplier": 1.0}),
    "vit_tiny": ("simclr_cifar10", 128, {"name": "vit_tiny"}),
}


def jaxcl_config(name: str):
  file, batch, model = CONFIGS[name]
  c = experiment.load_config_file(os.path.join(ROOT, "configs", f"{file}.py"))
  c.unlock()
  c.batch_size = batch
  if model.get("name") == "vit_tiny":
    from jaxcl import models  # pylint: disable=g-import-not-at-top
    c.model = models.default_config("vit_tiny")
    c.model.patch_size = 4
    c.model.image_size = 32
  for key, value in model.items():
    if key != "name":
      c.model[key] = value
  return c


# ---------------------------------------------------------------------------------------------------
# The PyTorch side: the same networks, loss and optimizers.


def torch_step_fn(c, channels: int, *, device: str = "cpu", dtype: str = "float32"):
  """``step(views) -> loss`` in PyTorch for the jaxcl config ``c`` (views: [2B, C, H, W] float);
  ``dtype='bfloat16'`` runs forward and backward under autocast (parameters float32, as jaxcl)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top

  def bn(n, affine=True):  # jaxcl's running average keeps 0.9 of the old value: torch momentum 0.1
    return nn.BatchNorm2d(n, momentum=0.1, eps=1e-5, affine=affine)

  class SmallCNN(nn.Module):
    def __init__(self, widths, strides):
      super().__init__()
      layers, cin = [], channels
      for w, s in zip(widths, strides):
        layers += [nn.Conv2d(cin, w, 3, s, 1, bias=False), bn(w), nn.ReLU(inplace=True)]
        cin = w
      self.body, self.out_dim = nn.Sequential(*layers), cin

    def forward(self, x):
      return self.body(x).mean((2, 3))

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout)
      self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout)
      self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))
                    if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      return F.relu(self.short(x) + self.bn2(self.conv2(y)))

  class ResNet18(nn.Module):  # CIFAR stem: 3x3 stride-1 conv, no max-pool
    def __init__(self, width_multiplier):
      super().__init__()
      base = max(1, int(round(64 * width_multiplier)))
      self.stem = nn.Sequential(nn.Conv2d(channels, base, 3, 1, 1, bias=False), bn(base), nn.ReLU())
      blocks, cin = [], base
      for stage in range(4):
        for i in range(2):
          blocks.append(Block(cin, base * 2**stage, 2 if stage and not i else 1))
          cin = base * 2**stage
      self.blocks, self.out_dim = nn.Sequential(*blocks), cin

    def forward(self, x):
      return self.blocks(self.stem(x)).mean((2, 3))

  class ViTBlock(nn.Module):
    def __init__(self, d, heads):
      super().__init__()
      self.heads = heads
      self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
      self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
      self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
      b, n, d = x.shape
      q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
      x = x + self.proj(y)
      return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

  class ViT(nn.Module):
    def __init__(self, width, depth, heads, patch, size):
      super().__init__()
      self.patch = nn.Conv2d(channels, width, patch, patch)
      self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
      self.pos = nn.Parameter(torch.randn(1, 1 + (size // patch) ** 2, width) * 0.02)
      self.blocks = nn.Sequential(*[ViTBlock(width, heads) for _ in range(depth)])
      self.norm, self.out_dim = nn.LayerNorm(width, eps=1e-6), width

    def forward(self, x):
      x = self.patch(x).flatten(2).transpose(1, 2)
      x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
      return self.norm(self.blocks(x))[:, 0]

  m = c.model
  if m.name == "small_cnn":
    encoder = SmallCNN(m.widths, m.strides)
  elif m.name == "resnet18":
    encoder = ResNet18(m.width_multiplier)
  elif m.name == "vit_tiny":
    encoder = ViT(192, 12, 3, m.patch_size, 32)
  else:
    raise ValueError(f"no PyTorch twin for model {m.name!r}")
  mc = c.method
  projector = nn.Sequential(nn.Linear(encoder.out_dim, mc.proj_hidden_dim, bias=False),
                            nn.BatchNorm1d(mc.proj_hidden_dim, momentum=0.1), nn.ReLU(),
                            nn.Linear(mc.proj_hidden_dim, mc.proj_out_dim))
  model = nn.Sequential(encoder, projector).to(device)
  params = list(model.parameters())
  o = c.optim
  if o.name == "adamw":
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=o.lr, betas=(o.b1, o.b2),
                            eps=o.eps)
    update = opt.step
  elif o.name == "lars":
    momenta = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def update():  # optax.lars: decay and trust ratio on >= 2-D weights only, then momentum
      for p, mom in zip(params, momenta):
        g = p.grad
        if p.ndim >= 2:
          g = g + o.weight_decay * p
          pn, gn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
          g = g * torch.where((pn > 0) & (gn > 0), o.trust_coefficient * pn / gn, 1.0)
        mom.mul_(o.momentum).add_(g)
        p.add_(mom, alpha=-o.lr)
  else:
    raise ValueError(f"no PyTorch twin for optimizer {o.name!r}")
  temperature = mc.temperature

  def nt_xent(z):
    z = F.normalize(z, dim=1)
    n = len(z) // 2
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)

  def step(views):
    for p in params:
      p.grad = None
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      z = model(views)
    loss = nt_xent(z.float())
    loss.backward()
    update()
    return float(loss.detach())

  return step


# ---------------------------------------------------------------------------------------------------


def _times(fn, steps: int) -> list[float]:
  out = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t)
  return out


def run_config(name: str, *, reps: int, steps: int, dtype: str = "float32",
               batch: int | None = None) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  c = jaxcl_config(name)
  if batch:
    c.batch_size = batch
  c.train.compute_dtype = dtype
  experiment.apply_compute_dtype(c)  # the encoder in bfloat16, parameters float32
  batch = c.batch_size
  channels = 1 if c.data.name == "digits" else 3
  mesh = mesh_lib.make_mesh()
  info = DataInfo(image_shape=(32, 32, channels), num_classes=10, class_names=tuple("0123456789"),
                  num_train=50_000, num_test=10_000)
  setup = experiment.build_setup(c, mesh, info)
  step = setup.step_fn()
  holder = {"state": setup.init_state()}
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (batch, 32, 32, channels), dtype=np.uint8)
  sharded = mesh_lib.shard_batch({"image": images, "label": np.zeros(batch, np.int32)}, mesh)

  def jaxcl_step():
    holder["state"], metrics = step(holder["state"], sharded)
    jax.block_until_ready(metrics["loss"])

  method = setup.method(jax.tree.map(jnp.copy, holder["state"]))  # the step donates its state
  graphdef, params, rest = nnx.split(method, nnx.Param, ...)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(batch))
  augment = jax.jit(lambda k, x: jnp.concatenate(
      two_views(method.recipe, {"image": x, "key": k})))
  device_images = jnp.asarray(images)
  views = augment(keys, device_images)
  cotangent = jnp.ones((2 * batch, c.method.proj_out_dim), jnp.float32) / (2 * batch)

  @jax.jit
  def forward_backward(params, rest, views):
    def f(p):
      m = nnx.merge(graphdef, p, rest, copy=True)
      return jnp.vdot(m.projector(m.encoder(views, train=True), train=True), cotangent)
    return jax.grad(f)(params)

  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  # PyTorch runs on the GPU where its build sees one (a CUDA wheel), else on the CPU: recorded.
  torch_device = "cuda" if torch.cuda.is_available() else "cpu"
  torch_step = torch_step_fn(c, channels, device=torch_device, dtype=dtype)
  torch_views = torch.from_numpy(np.asarray(views, np.float32).transpose(0, 3, 1, 2).copy()).to(
      torch_device)
  contenders = {
      "jaxcl": jaxcl_step,
      "pytorch": lambda: torch_step(torch_views),
      "jaxcl_fwd_bwd": lambda: jax.block_until_ready(forward_backward(params, rest, views)),
      "jaxcl_augment": lambda: jax.block_until_ready(augment(keys, device_images)),
  }
  for fn in contenders.values():  # compile and warm up
    fn()
  times = {k: [] for k in contenders}
  for _ in range(reps):
    for k, fn in contenders.items():
      times[k] += _times(fn, steps)
  med = {k: statistics.median(v) for k, v in times.items()}
  out = {"batch": batch, "dtype": dtype, "jax_device": jax.devices()[0].device_kind,
         "torch_device": torch_device, "model": c.model.to_dict(), "optimizer": c.optim.name,
         "projector": [c.method.proj_hidden_dim, c.method.proj_out_dim], "seconds": times,
         "median_s": med, "images_per_s": {k: batch / v for k, v in med.items()
                                           if k in ("jaxcl", "pytorch")}}
  out["jaxcl_over_pytorch"] = med["pytorch"] / med["jaxcl"]
  out["step_over_fwd_bwd"] = med["jaxcl"] / med["jaxcl_fwd_bwd"]
  out["augment_fraction"] = med["jaxcl_augment"] / med["jaxcl"]
  return out


def plot(results: dict, path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  names = [n for n in CONFIGS if n in results["configs"]]
  fig = Figure(figsize=(7, 3.5))
  ax = fig.add_subplot()
  x = np.arange(len(names))
  for i, side in enumerate(("jaxcl", "pytorch")):
    vals = [results["configs"][n]["images_per_s"][side] for n in names]
    ax.bar(x + (i - 0.5) * 0.4, vals, 0.4, label=side)
  ax.set_xticks(x, [f"{n}\n(batch {results['configs'][n]['batch']})" for n in names])
  ax.set_yscale("log")
  ax.set_ylabel("images / s (log)")
  ax.set_title("SimCLR train step, float32, same CPU")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--configs", default=",".join(CONFIGS))
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="the encoder's compute dtype on both sides (parameters stay float32)")
  p.add_argument("--batch", type=int, default=None, help="override each configuration's batch")
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "step_vs_pytorch.json"))
  args = p.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  results = {"configs": {}}
  if os.path.exists(args.out):
    with open(args.out) as f:
      results = json.load(f)
  results.update(platform=platform.platform(), processor=platform.processor(),
                 cpu_count=os.cpu_count(), jax=jax.__version__, torch=torch.__version__,
                 device=str(jax.devices()[0].platform))
  for name in args.configs.split(","):
    if name in results["configs"]:
      print(f"{name}: done already, skipped")
      continue
    results["configs"][name] = run_config(name, reps=args.reps, steps=args.steps, dtype=args.dtype,
                                          batch=args.batch)
    r = results["configs"][name]
    print(f"{name}: jaxcl {r['images_per_s']['jaxcl']:.1f} img/s, pytorch "
          f"{r['images_per_s']['pytorch']:.1f} img/s, ratio {r['jaxcl_over_pytorch']:.2f}, "
          f"step / fwd+bwd {r['step_over_fwd_bwd']:.2f}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
  plot(results, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
  main()
