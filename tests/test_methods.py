"""Methods: 3 sharded training steps each, EMA and queue updates against hand computations, stopped
gradients, CLIP captions, config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcl import augment, experiment, methods, models
from jaxcl.methods import Queue, Stash, Target, moco, momentum
from jaxcl.methods.byol import symmetric_regression
from jaxcl.methods.clip import WordTokenizer, captions

P = jax.P
BATCH = 16
SIZE = 8
CLASSES = ("zero", "one", "two")


def tiny_config(name: str) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.batch_size = BATCH
  cfg.model = models.default_config("small_cnn")
  cfg.model.widths = (4, 8)
  cfg.model.strides = (1, 2)
  cfg.augment = augment.default_config("simclr", size=SIZE)
  cfg.method = methods.default_config(name)
  small = dict(proj_hidden_dim=16, proj_out_dim=8, pred_hidden_dim=16, queue_size=32, embed_dim=8,
               text_width=16, text_depth=1, text_heads=2, head_hidden_dim=16,
               head_bottleneck_dim=8, out_dim=64)
  for k, v in small.items():
    if k in cfg.method:
      cfg.method[k] = v
  return cfg


def light_recipe(keys, images):
  """Two cheap views (flip, brightness): the real recipes are tested in test_augment; here they would
  only add compile time."""
  x = images.astype(jnp.float32) / 255.0

  def view(key, img, i):
    key = jax.random.fold_in(key, i)
    flip = jax.random.bernoulli(key)
    return jnp.where(flip, img[:, ::-1], img) * jax.random.uniform(key, (), minval=0.7, maxval=1.0)

  return tuple(jax.vmap(view, in_axes=(0, 0, None))(keys, x, i) for i in range(2))


def make_batch(seed=0, h=SIZE):
  rng = np.random.default_rng(seed)
  return dict(image=jnp.asarray(rng.integers(0, 256, (BATCH, h, h, 1), dtype=np.uint8)),
              label=jnp.asarray(rng.integers(0, len(CLASSES), BATCH, dtype=np.int32)))


def build(name, **kwargs):
  return experiment.parts.create_method(tiny_config(name), image_shape=(SIZE, SIZE, 1),
                                       num_classes=len(CLASSES), class_names=CLASSES,
                                       rngs=nnx.Rngs(0), **kwargs)


def example_keys(step):
  return jax.random.split(jax.random.fold_in(jax.random.key(0), step), BATCH)


def make_train_step(graphdef, opt, total_steps):
  """A minimal trainer: loss in shard_map over 'data', SGD on nnx.Param, after_step on global state.

  Also returns the gradient with respect to the Target variables, which must be zero.
  """

  def per_device(params, targets, sharded, rest, batch):
    def f(params, targets, sharded, rest):
      m = nnx.merge(graphdef, params, targets, sharded, rest, copy=True)
      loss, metrics = m.loss(batch, axis_name="data")
      _, _, _, sh, rs = nnx.split(m, nnx.Param, Target, (Queue, Stash), ...)
      return loss, (metrics, sh, rs)

    (loss, (metrics, sh, rs)), (g, g_target) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
        params, targets, sharded, rest)
    # BatchStat is replicated in the state: average the per-device running statistics.
    return loss, jax.lax.pmean(metrics, "data"), g, g_target, sh, jax.lax.pmean(rs, "data")

  @jax.jit
  def step(params, targets, sharded, rest, opt_state, batch, i):
    batch = dict(batch, key=jax.sharding.reshard(example_keys(i), P("data")))
    loss, metrics, g, g_target, sh, rs = jax.shard_map(
        per_device, in_specs=(P(), P(), P("data"), P(), P("data")),
        out_specs=(P(), P(), P(), P(), P("data"), P()))(params, targets, sharded, rest, batch)
    updates, opt_state = opt.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    m = nnx.merge(graphdef, params, targets, sh, rs, copy=True)
    m.after_step(step=i, total_steps=total_steps)
    _, params, targets, sh, rs = nnx.split(m, nnx.Param, Target, (Queue, Stash), ...)
    return params, targets, sh, rs, opt_state, loss, metrics, g_target

  return step


def np_tree(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def hand_queue_push(queue, keys, shards):
  """MoCo's FIFO per device shard: newest keys first, the shard's oldest rows dropped."""
  qs = np.split(queue, shards)
  ks = np.split(keys, shards)
  return np.concatenate([np.concatenate([k, q[:len(q) - len(k)]]) for q, k in zip(qs, ks)])


# CPC trains on sequences, I-JEPA needs a ViT, retrieval text: tests/test_cpc.py, tests/test_ijepa.py,
# tests/test_retrieval.py and test_train_methods.py train them on 8 devices.
@pytest.mark.parametrize("name", [n for n in methods.NAMES if n not in ("cpc", "ijepa", "retrieval")])
def test_three_jitted_steps_on_8_devices(name, mesh):
  method = build(name)
  if name != "simclr":  # simclr keeps its real augmentation recipe, the others a cheap one
    method.recipe = light_recipe
  graphdef, params, targets, sharded, rest = nnx.split(method, nnx.Param, Target, (Queue, Stash), ...)
  opt = optax.sgd(0.05)
  step = make_train_step(graphdef, opt, total_steps=3)
  batch = make_batch()
  history, snapshots = [], []
  with jax.set_mesh(mesh):
    params, targets, rest = jax.device_put((params, targets, rest), P())
    sharded = jax.device_put(sharded, P("data"))
    batch = jax.device_put(batch, P("data"))
    opt_state = opt.init(params)
    for i in range(3):
      snapshots.append(np_tree((params, targets, sharded)))
      params, targets, sharded, rest, opt_state, loss, metrics, g_target = step(
          params, targets, sharded, rest, opt_state, batch, i)
      history.append(float(loss))
      for v in jax.tree.leaves(g_target):  # no gradient reaches a stopped target
        np.testing.assert_array_equal(v, 0.0)
  assert np.all(np.isfinite(history)), history
  assert max(history) - min(history) > 1e-6, f"loss did not change: {history}"
  assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
  assert "embedding_std" in metrics

  p0, t0, s0 = snapshots[0]
  p1, t1, s1 = snapshots[1]
  if jax.tree.leaves(t0):
    # Target <- tau t + (1 - tau) online, with the online weights after the optimizer step (tau at k=0
    # is the base momentum for both the cosine and the constant schedule).
    tau = float(tiny_config(name).method.momentum)
    online = {path: v for path, v in nnx.to_flat_state(p1)}
    for path, v in nnx.to_flat_state(t1):
      old = dict(nnx.to_flat_state(t0))[path]
      online_name = {"target_encoder": "encoder", "target_head": "head"}.get(path[0], "projector")
      src = online[(online_name,) + path[1:]]
      np.testing.assert_allclose(v[...], tau * old[...] + (1 - tau) * src[...], rtol=1e-5, atol=1e-7)
    # And the optimizer left them alone: only the EMA moved them.
    assert not np.allclose(jax.tree.leaves(t1)[0], jax.tree.leaves(p1)[0])
  if name == "moco_v2":
    queue0, stash1 = s0["queue"][...], s1["keys"][...]
    np.testing.assert_allclose(np.linalg.norm(stash1, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(s1["queue"][...], hand_queue_push(queue0, stash1, 8))


def test_sharded_loss_equals_single_device_loss(mesh):
  # SimCLR with global BN: the 8-device loss of a batch is the one-device loss of the same batch.
  method = build("simclr")
  method.recipe = light_recipe
  graphdef, state = nnx.split(method)
  batch = dict(make_batch(1), key=example_keys(7))

  def loss_fn(state, batch, axis_name=None):
    return nnx.merge(graphdef, state, copy=True).loss(batch, axis_name=axis_name)[0]

  single = jax.jit(loss_fn)(state, batch)
  with jax.set_mesh(mesh):
    sharded = jax.jit(jax.shard_map(lambda s, b: loss_fn(s, b, "data"), in_specs=(P(), P("data")),
                                    out_specs=P()))(state, jax.device_put(batch, P("data")))
  np.testing.assert_allclose(sharded, single, rtol=1e-5)


def test_ema_update_matches_hand_computation():
  online = models.ProjectionHead(4, hidden_dim=6, out_dim=3, rngs=nnx.Rngs(0))
  target = momentum.make_target(online)
  assert not jax.tree.leaves(nnx.state(target, nnx.Param))
  before = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(target, Target))}
  # Move the online weights, as an optimizer step would.
  params = nnx.state(online, nnx.Param)
  nnx.update(online, jax.tree.map(lambda x: x + 1.0, params))
  momentum.ema_update(target, online, 0.9)
  after = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(target, Target))}
  new_online = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(online, nnx.Param))}
  assert before.keys() == new_online.keys() and len(before) == 5
  for p in before:
    np.testing.assert_allclose(after[p], 0.9 * before[p] + 0.1 * new_online[p], rtol=1e-6)


def test_cosine_momentum_schedule():
  base, total = 0.996, 100
  for k in (0, 10, 50, 99, 100):
    want = 1 - (1 - base) * (np.cos(np.pi * k / total) + 1) / 2
    np.testing.assert_allclose(momentum.cosine_momentum(jnp.asarray(k), total, base), want, rtol=1e-6)
  np.testing.assert_allclose(momentum.cosine_momentum(0, total, base), base, rtol=1e-7)
  np.testing.assert_allclose(momentum.cosine_momentum(total, total, base), 1.0, rtol=1e-7)


def test_queue_push_fifo_unsharded_and_sharded(mesh):
  queue = np.arange(16, dtype=np.float32).reshape(8, 2)
  keys = 100 + np.arange(4, dtype=np.float32).reshape(2, 2)
  # One FIFO: newest first, the 2 oldest (last) rows replaced.
  want = np.concatenate([keys, queue[:6]])
  np.testing.assert_array_equal(jax.jit(moco.queue_push)(queue, keys), want)

  big_q = np.arange(64, dtype=np.float32).reshape(32, 2)
  pushes = [1000 * (i + 1) + np.arange(32, dtype=np.float32).reshape(16, 2) for i in range(3)]
  push = jax.jit(moco.queue_push)
  with jax.set_mesh(mesh):
    out = jax.device_put(big_q, P("data"))
    outs = []
    for k in pushes:
      out = push(out, jax.device_put(k, P("data")))
      assert out.sharding.spec[0] == "data"
      outs.append(np.asarray(out))
  # Each device's shard is its own FIFO of that device's keys.
  np.testing.assert_array_equal(outs[0], hand_queue_push(big_q, pushes[0], 8))
  np.testing.assert_array_equal(outs[1], hand_queue_push(outs[0], pushes[1], 8))
  # Once pushes have filled it, the sharded queue holds exactly the rows one global FIFO keeps.
  fifo = big_q
  for k, got in zip(pushes, outs):
    fifo = np.concatenate([k, fifo[:-len(k)]])
  np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(fifo, axis=0))


def test_stop_gradient_in_symmetric_regression():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) for _ in range(4))
  from jaxcl import losses
  grads = jax.grad(lambda *a: symmetric_regression(losses.negative_cosine, *a, None),
                   argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  np.testing.assert_array_equal(grads[2], 0.0)
  np.testing.assert_array_equal(grads[3], 0.0)
  assert np.abs(grads[0]).sum() > 0 and np.abs(grads[1]).sum() > 0


def test_clip_captions_tokenizer_and_zero_shot():
  caps = captions(["0", "3"], ["a photo of the digit {}"])
  assert caps == ["a photo of the digit zero", "a photo of the digit three"]
  tok = WordTokenizer(caps)
  ids = tok(caps)
  assert ids.shape == (2, 7)  # 6 words + EOS
  assert list(ids[:, -1]) == [1, 1] and ids[0, 0] == tok.ids["a"]
  assert tok(["a photo of a cat"])[0, 4] == 2  # unknown word
  assert captions(["sea_lion", "12"], ["a {}.", "the {}"]) == ["a sea lion.", "the sea lion",
                                                              "a twelve.", "the twelve"]

  clip = build("clip")
  assert clip.captions[0] == "a photo of the zero"
  np.testing.assert_allclose(clip.logit_scale(), 1 / 0.07, rtol=1e-5)
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(5, SIZE, SIZE, 1)), jnp.float32)
  logits = clip.zero_shot_logits(images)
  assert logits.shape == (5, len(CLASSES))
  assert float(jnp.max(jnp.abs(logits))) <= 1 / 0.07 + 1e-3  # scale * cosine
  siglip = build("siglip")
  np.testing.assert_allclose(siglip.logit_scale(), 10.0, rtol=1e-5)
  assert float(siglip.logit_bias[...]) == -10.0
  # The two-view methods read labels when their loss does (SupCon's default does, SimCLR's not).
  assert siglip.uses_labels and build("supcon").uses_labels and not build("simclr").uses_labels


def test_features_resize_and_eval_mode():
  method = build("byol")
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 12, 12, 1)), jnp.float32)
  feats = method.features(images)
  assert feats.shape == (3, method.encoder.out_dim)
  # Eval mode: one example's features do not depend on the rest of the batch.
  np.testing.assert_allclose(method.features(images[:1]), feats[:1], rtol=1e-5, atol=1e-6)


def test_bf16_compute_keeps_f32_params_and_finite_loss():
  cfg = tiny_config("byol")
  cfg.model.dtype = "bfloat16"
  method = experiment.parts.create_method(cfg, image_shape=(SIZE, SIZE, 1), num_classes=3,
                                         class_names=CLASSES, rngs=nnx.Rngs(0))
  method.recipe = light_recipe
  assert {p.dtype for p in jax.tree.leaves(nnx.state(method, nnx.Param))} == {jnp.dtype("float32")}
  assert method.projector.linears[0].dtype == jnp.bfloat16
  graphdef, state = nnx.split(method)
  batch = dict(make_batch(2), key=example_keys(0))
  loss = jax.jit(lambda s, b: nnx.merge(graphdef, s, copy=True).loss(b)[0])(state, batch)
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))


def test_configs_and_errors():
  assert methods.NAMES == ("simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins",
                           "vicreg", "supcon", "clip", "siglip", "metric_learning", "cpc", "dino",
                           "ijepa", "retrieval")
  for name in methods.NAMES:
    assert methods.default_config(name).name == name
  with pytest.raises(ValueError, match="simclr, moco_v2"):
    methods.default_config("swav")
  cfg = tiny_config("moco_v2")
  cfg.method.queue_size = 8
  with pytest.raises(ValueError, match="queue_size"):
    experiment.parts.create_method(cfg, image_shape=(SIZE, SIZE, 1), num_classes=3, class_names=CLASSES,
                   rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="class name"):
    experiment.parts.create_method(tiny_config("clip"), image_shape=(SIZE, SIZE, 1), num_classes=4,
                   class_names=CLASSES, rngs=nnx.Rngs(0))


def test_readme_snippet_grad_on_a_mesh():
  # The manual's "use a method without the trainer" snippet, verbatim but for the sizes: a method is
  # built from its own section and plain objects.
  from flax import nnx
  from jaxcl import augment, methods, models

  section = methods.default_config("simclr")
  section.proj_hidden_dim, section.proj_out_dim = 64, 32
  method = methods.create(
      section, encoder=models.EncoderFactory(models.default_config("small_cnn")),
      recipe=augment.view_recipe(augment.default_config("simclr", size=16)),
      facts=methods.Facts(image_shape=(16, 16, 1)), rngs=nnx.Rngs(0))
  graphdef, params, sharded, rest = nnx.split(method, nnx.Param, (methods.Queue, methods.Stash), ...)

  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))

  def per_device_loss(params, sharded, rest, batch):
    model = nnx.merge(graphdef, params, sharded, rest, copy=True)
    return model.loss(batch, axis_name="data")  # the global loss, same on every device

  @jax.jit
  def loss_and_grads(params, sharded, rest, batch):
    return jax.shard_map(
        jax.value_and_grad(per_device_loss, has_aux=True),
        in_specs=(P(), P("data"), P(), P("data")),  # state replicated (Queue/Stash split), batch split
        out_specs=((P(), P()), P()))(params, sharded, rest, batch)

  rng = np.random.default_rng(0)
  batch = dict(image=rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8),
               label=rng.integers(0, 10, 16).astype(np.int32),
               key=jax.random.split(jax.random.key(0), 16))
  with jax.set_mesh(mesh):
    batch = jax.device_put(batch, P("data"))
    sharded = jax.device_put(sharded, P("data"))
    (loss, metrics), grads = loss_and_grads(params, sharded, rest, batch)
    # End of snippet.
    grad_norm = float(optax.global_norm(grads))
  assert np.isfinite(float(loss)) and set(metrics) >= {"positive_top1", "embedding_std"}
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert np.isfinite(grad_norm) and grad_norm > 0


def _per_device(fn, mesh, *args):
  with jax.set_mesh(mesh):
    return jax.jit(jax.shard_map(fn, in_specs=P("data"), out_specs=P("data")))(
        *(jax.device_put(a, P("data")) for a in args))


def test_shuffle_bn_permutation_is_a_bijection_and_unshuffling_restores_order(mesh):
  rows = jnp.arange(BATCH, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))
  key = jax.random.key(3)

  def shuffled(x):
    return moco.shuffle_across_devices(x, key, "data")[0]

  def round_trip(x):
    y, perm = moco.shuffle_across_devices(x, key, "data")
    return moco.unshuffle_across_devices(y, perm, "data")

  out = np.asarray(_per_device(shuffled, mesh, rows))[:, 0].astype(int)
  assert sorted(out) == list(range(BATCH))                      # every row once: a bijection
  np.testing.assert_array_equal(out, jax.random.permutation(key, BATCH))  # the global permutation
  assert (out.reshape(8, -1) != np.arange(BATCH).reshape(8, -1)).any(axis=1).sum() >= 6  # rows moved
  np.testing.assert_array_equal(_per_device(round_trip, mesh, rows), rows)


def test_shuffle_bn_keys_equal_the_key_encoder_on_the_shuffled_global_batch(mesh):
  method = build("moco_v2")
  assert method.shuffle_bn and not method.sync_bn
  graphdef, state = nnx.split(method)
  images = jax.random.uniform(jax.random.key(1), (BATCH, SIZE, SIZE, 1))
  keys = example_keys(5)

  def sharded(x, k):
    return nnx.merge(graphdef, state, copy=True).keys_of(x, k, axis_name="data")

  got = np.asarray(_per_device(sharded, mesh, images, keys))
  # By hand: the same permutation of the global batch, 8 separate BatchNorm batches of 2 (per-device
  # BN in training mode), outputs put back at their original rows.
  perm = jax.random.permutation(moco.shared_key(keys, None, salt=1), BATCH)
  target = nnx.merge(graphdef, state, copy=True)
  per_device = [target.keys_of(chunk, None, axis_name=None) for chunk in jnp.split(images[perm], 8)]
  want = np.zeros_like(got)
  want[np.asarray(perm)] = np.concatenate(per_device)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Without the shuffle, each device normalises its own rows: different keys.
  plain = jnp.concatenate([target.keys_of(c, None, axis_name=None) for c in jnp.split(images, 8)])
  assert not np.allclose(got, plain, atol=1e-3)


def test_shuffle_bn_with_sync_bn_is_an_error():
  cfg = tiny_config("moco_v2")
  cfg.method.sync_bn = True
  with pytest.raises(ValueError, match="method.shuffle_bn"):
    experiment.parts.create_method(cfg, image_shape=(SIZE, SIZE, 1), num_classes=3, class_names=CLASSES,
                   rngs=nnx.Rngs(0))


def _section_only(name: str) -> tuple:
  """``name``'s own section (a fresh, locked ConfigDict: nothing else of a config to reach) and the
  plain objects a method is built from."""
  from jaxcl.methods import cpc  # pylint: disable=g-import-not-at-top
  section = methods.default_config(name)
  experiment.shrink_heads(section)
  if "queue_size" in section:
    section.queue_size = 32
  kind = methods.method_class(name).data_kind
  facts = methods.Facts(image_shape=(SIZE, SIZE, 1), num_classes=3, class_names=CLASSES,
                        global_batch_size=BATCH)
  recipe = augment.view_recipe(augment.default_config("simclr", size=SIZE))
  model = models.default_config("small_cnn")
  if name == "ijepa":
    model = models.default_config("vit_tiny")
    model.update(patch_size=4, pool="mean", depth=1, width=16, heads=2)
    section.update(predictor_width=16, predictor_depth=1, predictor_heads=2)
  if kind == "sequence":
    model, recipe = cpc.sequence_model_config(), None
    model.update(widths=(8, 16), kernels=(4, 4), strides=(2, 2))  # tests/test_cpc.py's tiny encoder
    section.update(crop_length=64)
    facts = methods.Facts(image_shape=(128, 1), global_batch_size=BATCH)
  if kind == "text":
    model, recipe = models.default_config("text_transformer"), None
    facts = methods.Facts(vocab_size=50, pad_id=0, max_length=8, global_batch_size=BATCH)
  section.lock()
  return section, dict(encoder=models.EncoderFactory(model), recipe=recipe, facts=facts)


@pytest.mark.parametrize("name", methods.NAMES)
def test_every_method_builds_from_its_own_section_and_plain_objects(name):
  section, parts = _section_only(name)
  cls = methods.method_class(name)
  cls.check_config(section, model=parts["encoder"].config)
  method = nnx.eval_shape(lambda: methods.create(section, rngs=nnx.Rngs(0), **parts))
  assert type(method) is cls and cls.data_kind in methods.DATA_KINDS
  assert isinstance(cls.reads_labels(section), bool)
  assert cls.needs_queue == (name == "moco_v2")
