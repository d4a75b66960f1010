"""Models: logits shapes, forward passes checked in numpy, the identity
adapter, and head expansion."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables
from cil_jax.models.expand import resize_head
from tests.helpers import tiny_model_config

INPUT_SHAPE = (1, 8, 8, 1)
BATCH = 4


@functools.lru_cache(maxsize=None)
def _init(name, num_classes, adapter_dim=0, seed=0, **overrides):
  """Cached: tests share initialised models and must not mutate them."""
  model = build_model(tiny_model_config(name, **overrides), num_classes,
                      adapter_dim=adapter_dim)
  # An "rbg" key compiles much faster than threefry on CPU; same tree.
  variables = jax.jit(model.init)(jax.random.key(seed, impl="rbg"),
                                  jnp.zeros(INPUT_SHAPE))
  return model, variables


def _images(seed=7, batch=BATCH):
  return jax.random.normal(jax.random.PRNGKey(seed),
                           (batch,) + INPUT_SHAPE[1:])


def _flat(tree):
  return {k: np.asarray(v)
          for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


@pytest.fixture(scope="module")
def resnet():
  return _init("resnet", 5)


# ------------------------------------------------------------------ shapes


def test_mlp_logits_match_a_numpy_forward_pass():
  model, variables = _init("mlp", 5, seed=1)
  images = _images()
  logits = np.asarray(model.apply(variables, images))
  assert logits.shape == (BATCH, 5)
  p = _flat(variables["params"])
  x = np.asarray(images).reshape(BATCH, -1)  # [4, 64]
  h = np.maximum(x @ p["backbone/layer_00/kernel"]
                 + p["backbone/layer_00/bias"], 0)
  h = np.maximum(h @ p["backbone/layer_01/kernel"]
                 + p["backbone/layer_01/bias"], 0)
  expected = h @ p["head/kernel"] + p["head/bias"]
  assert p["backbone/layer_00/kernel"].shape == (64, 8)
  assert p["head/kernel"].shape == (8, 5)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_cnn_logits_shape_and_layers():
  model, variables = _init("cnn", 5)
  logits = model.apply(variables, _images())
  assert logits.shape == (BATCH, 5)
  p = _flat(variables["params"])
  assert p["backbone/layer_00/kernel"].shape == (3, 3, 1, 4)
  assert p["backbone/layer_01/kernel"].shape == (3, 3, 4, 8)
  # 8x8 -> pool -> 4x4 -> pool -> 2x2, times 8 channels = 32 features.
  assert p["backbone/layer_02/kernel"].shape == (32, 8)
  assert p["head/kernel"].shape == (8, 5)


def test_bn_cnn_statistics_by_hand_and_the_same_on_eight_devices():
  # conv -> BatchNorm -> ReLU -> pool per stage, dense -> BatchNorm; the
  # same parameters as the plain CNN plus a BatchNorm per layer.
  model, variables = _init("cnn", 5, batch_norm=True)
  p = _flat(variables["params"])
  assert p["backbone/layer_00/conv/kernel"].shape == (3, 3, 1, 4)
  assert p["backbone/layer_01/bn/scale"].shape == (8,)
  assert p["backbone/layer_02/dense/kernel"].shape == (32, 8)
  assert set(variables["batch_stats"]["backbone"]) == {
      "layer_00", "layer_01", "layer_02"}
  images = np.asarray(_images(batch=16))

  def forward(v, x):
    return model.apply(v, x, train=True, mutable=["batch_stats"])

  def stats_on(num_devices):
    replicated = jax.tree.map(
        lambda a: np.broadcast_to(a, (num_devices, *a.shape)), variables)
    shards = images.reshape(num_devices, -1, *images.shape[1:])
    _, updates = jax.pmap(forward, axis_name="batch",
                          devices=jax.local_devices()[:num_devices])(
                              replicated, shards)
    return jax.tree.map(lambda a: np.asarray(a)[0], updates["batch_stats"])

  one, eight = stats_on(1), stats_on(8)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-6), one, eight)
  # The first stage's statistics by hand: 3x3 SAME conv with bias, then
  # momentum 0.9 from mean 0 and var 1.
  kernel = p["backbone/layer_00/conv/kernel"]
  x = np.pad(images[..., 0], ((0, 0), (1, 1), (1, 1)))
  conv = np.zeros((16, 8, 8, 4), np.float64) + p["backbone/layer_00/conv/bias"]
  for di in range(3):
    for dj in range(3):
      conv += x[:, di:di + 8, dj:dj + 8, None] * kernel[di, dj, 0]
  stats = one["backbone"]["layer_00"]["bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"],
                             0.9 + 0.1 * conv.var(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


def test_resnet_eval_logits_shape_outside_pmap(resnet):
  model, variables = resnet
  logits = model.apply(variables, _images(), train=False)
  assert logits.shape == (BATCH, 5)
  # Widths w, 2w, 4w = 4, 8, 16: the head reads 16 pooled features.
  assert variables["params"]["head"]["kernel"].shape == (16, 5)
  assert np.all(np.isfinite(np.asarray(logits)))


def test_resnet_train_under_pmap_updates_batch_stats(resnet):
  model, variables = resnet
  images = _images()

  def forward(v, x):
    return model.apply(v, x, train=True, mutable=["batch_stats"])

  replicated = jax.tree_util.tree_map(lambda a: a[None], variables)
  logits, updates = jax.pmap(forward, axis_name="batch")(replicated,
                                                         images[None])
  assert logits.shape == (1, BATCH, 5)
  stats = updates["batch_stats"]["backbone"]["layer_00"]["bn"]
  # The stem's running statistics after one step, by hand: the stem conv is
  # 3x3, SAME padding, no bias; momentum 0.9 from mean 0 and var 1.
  kernel = np.asarray(variables["params"]["backbone"]["layer_00"]["conv"][
      "kernel"])  # [3, 3, 1, 4]
  x = np.pad(np.asarray(images)[..., 0], ((0, 0), (1, 1), (1, 1)))
  conv = np.zeros((BATCH, 8, 8, 4), np.float64)
  for di in range(3):
    for dj in range(3):
      conv += x[:, di:di + 8, dj:dj + 8, None] * kernel[di, dj, 0]
  mean = conv.mean(axis=(0, 1, 2))
  var = conv.var(axis=(0, 1, 2))
  np.testing.assert_allclose(np.asarray(stats["mean"])[0], 0.1 * mean,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(stats["var"])[0], 0.9 + 0.1 * var,
                             rtol=1e-4, atol=1e-6)


def test_resnet_train_outside_pmap_needs_the_batch_axis(resnet):
  model, variables = resnet
  with pytest.raises(NameError, match="batch"):
    model.apply(variables, _images(), train=True, mutable=["batch_stats"])


def test_resnet_rejects_bad_depth():
  model = build_model(tiny_model_config("resnet", resnet_depth=21), 5)
  with pytest.raises(ValueError, match="6n\\+2"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(INPUT_SHAPE))


def test_build_model_rejects_unknown_name():
  with pytest.raises(ValueError, match="Unknown model 'vit'"):
    build_model(tiny_model_config("vit"), 5)


# ----------------------------------------------------------------- adapter


def test_adapter_is_identity_at_init():
  name = "mlp"
  plain_model = build_model(tiny_model_config(name), 5)
  adapter_model, variables = _init(name, 5, adapter_dim=4, seed=1)
  params = variables["params"]
  assert set(params) == {"backbone", "adapter", "head"}
  plain_params = {"backbone": params["backbone"], "head": params["head"]}
  images = _images()
  with_adapter = np.asarray(adapter_model.apply(variables, images))
  without = np.asarray(plain_model.apply({"params": plain_params}, images))
  assert np.array_equal(with_adapter, without)
  # The down projection is random (so the identity comes from "up" = 0) ...
  assert np.any(np.asarray(params["adapter"]["down"]["kernel"]) != 0)
  assert not np.any(np.asarray(params["adapter"]["up"]["kernel"]))
  # ... and once "up" is non-zero, the adapter changes the logits.
  moved = jax.tree_util.tree_map(lambda a: a, params)
  moved["adapter"]["up"]["kernel"] = jnp.full_like(
      params["adapter"]["up"]["kernel"], 0.5)
  changed = np.asarray(adapter_model.apply({"params": moved}, images))
  assert not np.allclose(changed, without)


# ------------------------------------------------------------- expansion


def test_expand_copies_old_columns_and_keeps_new_init():
  _, old = _init("mlp", 3, seed=0)
  _, new = _init("mlp", 5, seed=1)
  merged = _flat(expand_variables(old, new, num_old=3))
  old_f, new_f = _flat(old), _flat(new)
  assert set(merged) == set(new_f)
  for path in ("params/head/kernel", "params/head/bias"):
    assert merged[path].shape == new_f[path].shape
    assert np.array_equal(merged[path][..., :3], old_f[path])
    assert np.array_equal(merged[path][..., 3:], new_f[path][..., 3:])
  # Seeds differ, so the fresh columns 0..2 really were overwritten.
  assert not np.array_equal(new_f["params/head/kernel"][:, :3],
                            old_f["params/head/kernel"])
  for path in merged:
    if "/head/" not in path:
      assert np.array_equal(merged[path], old_f[path]), path
      assert not np.array_equal(merged[path], new_f[path]) or not np.any(
          old_f[path]), path


def test_expand_keeps_fresh_adapter_leaves():
  _, old = _init("mlp", 3, seed=0)
  _, new = _init("mlp", 5, adapter_dim=4, seed=1)
  merged = _flat(expand_variables(old, new, num_old=3))
  new_f, old_f = _flat(new), _flat(old)
  adapter_paths = [p for p in new_f if p.startswith("params/adapter/")]
  assert len(adapter_paths) == 4
  for path in adapter_paths:
    assert np.array_equal(merged[path], new_f[path]), path
  assert np.array_equal(merged["params/backbone/layer_00/kernel"],
                        old_f["params/backbone/layer_00/kernel"])


def test_expand_copies_resnet_batch_stats(resnet):
  _, new = resnet  # 5 classes, fresh init
  # A "trained" 3-class teacher of the same architecture: every leaf moved
  # away from the fresh init, the head cut to 3 columns.
  old = jax.tree_util.tree_map(lambda a: a + 0.25, new)
  old["params"]["head"] = {"kernel": old["params"]["head"]["kernel"][:, :3],
                           "bias": old["params"]["head"]["bias"][:3]}
  merged = _flat(expand_variables(old, new, num_old=3))
  old_f, new_f = _flat(old), _flat(new)
  assert set(merged) == set(new_f)
  stats = [p for p in merged if p.startswith("batch_stats/")]
  # 19 BatchNorms in a ResNet-20 (stem, 2 per block, 2 shortcuts), each with
  # mean and var.
  assert len(stats) == 2 * (1 + 2 * 9 + 2)
  for path in merged:
    if "/head/" in path:
      continue
    assert np.array_equal(merged[path], old_f[path]), path
    assert not np.array_equal(merged[path], new_f[path]), path
  assert merged["params/head/kernel"].shape == (16, 5)
  assert np.array_equal(merged["params/head/kernel"][:, :3],
                        old_f["params/head/kernel"])
  assert np.array_equal(merged["params/head/kernel"][:, 3:],
                        new_f["params/head/kernel"][:, 3:])
  assert np.array_equal(merged["params/head/bias"],
                        np.concatenate([old_f["params/head/bias"],
                                        new_f["params/head/bias"][3:]]))


def test_expand_rejects_a_shape_mismatch():
  _, old = _init("mlp", 3)
  _, wide = _init("mlp", 5, seed=1)
  # The tree ``init`` gives for hidden_sizes=(8, 6): layer_01 and the head
  # narrowed to 6 units.
  new = jax.tree_util.tree_map(lambda a: a, wide)
  new["params"]["backbone"]["layer_01"] = {
      "kernel": wide["params"]["backbone"]["layer_01"]["kernel"][:, :6],
      "bias": wide["params"]["backbone"]["layer_01"]["bias"][:6]}
  new["params"]["head"] = {"kernel": wide["params"]["head"]["kernel"][:6],
                           "bias": wide["params"]["head"]["bias"]}
  with pytest.raises(ValueError, match="backbone/layer_01/(kernel|bias) has shape"):
    expand_variables(old, new, num_old=3)


def test_expand_rejects_old_parameters_missing_from_new():
  _, old = _init("mlp", 5, adapter_dim=4, seed=1)
  _, new = _init("mlp", 5, seed=1)
  with pytest.raises(ValueError, match="lacks.*params/adapter"):
    expand_variables(old, new, num_old=5)


def test_expand_rejects_a_wrong_num_old():
  _, old = _init("mlp", 3)
  _, new = _init("mlp", 5)
  with pytest.raises(ValueError, match="cannot grow"):
    expand_variables(old, new, num_old=4)


def test_expand_from_a_sequence_wide_head_keeps_only_old_columns():
  # A sequence-wide old head (5 outputs, 3 of them its classes): columns 3+
  # come from the new init, not from the old model's unused columns.
  _, old = _init("mlp", 5, seed=0)
  _, new = _init("mlp", 5, seed=1)
  merged = expand_variables(old, new, num_old=3)
  for leaf in ("kernel", "bias"):
    got = merged["params"]["head"][leaf]
    np.testing.assert_array_equal(got[..., :3],
                                  old["params"]["head"][leaf][..., :3])
    np.testing.assert_array_equal(got[..., 3:],
                                  new["params"]["head"][leaf][..., 3:])
  kernel = new["params"]["head"]["kernel"]
  assert not np.array_equal(kernel[..., :3], old["params"]["head"]["kernel"][
      ..., :3])  # the two inits differ, so the check above has teeth


def test_resize_head_cuts_and_zero_pads_only_the_head():
  _, variables = _init("mlp", 5)
  narrow = resize_head(variables, 3)
  wide = resize_head(narrow, 7)
  head = variables["params"]["head"]
  np.testing.assert_array_equal(narrow["params"]["head"]["kernel"],
                                head["kernel"][:, :3])
  np.testing.assert_array_equal(wide["params"]["head"]["kernel"][:, :3],
                                head["kernel"][:, :3])
  assert not wide["params"]["head"]["kernel"][:, 3:].any()
  assert wide["params"]["head"]["bias"].shape == (7,)
  jax.tree.map(np.testing.assert_array_equal,
               wide["params"]["backbone"], variables["params"]["backbone"])


def test_expand_rejects_a_narrower_new_head():
  _, old = _init("mlp", 5, seed=1)
  _, new = _init("mlp", 3)
  with pytest.raises(ValueError):
    expand_variables(old, new, num_old=5)


def test_expanded_student_reproduces_teacher_logits():
  teacher_model, teacher = _init("mlp", 3, seed=0)
  student_model, fresh = _init("mlp", 5, seed=1)
  student = expand_variables(teacher, fresh, num_old=3)
  images = _images(batch=16)
  teacher_logits = np.asarray(teacher_model.apply(teacher, images))
  student_logits = np.asarray(student_model.apply(student, images))
  assert student_logits.shape == (16, 5)
  # Same features, same old columns: the old scores are bit for bit equal.
  np.testing.assert_array_equal(student_logits[:, :3], teacher_logits)
  # The fresh model, before the copy, scores the old classes differently.
  fresh_logits = np.asarray(student_model.apply(fresh, images))
  assert not np.allclose(fresh_logits[:, :3], teacher_logits, atol=1e-3)


def test_frozen_layers_train_as_they_test():
  """A frozen backbone runs BatchNorm on running averages and no dropout in
  training, so its features equal the test-time ones."""
  from cil_jax import partition  # pylint: disable=import-outside-toplevel
  config = tiny_model_config("resnet", resnet_depth=8, resnet_width=4)
  model = build_model(config, 3)
  images = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 8, 8, 1)) * 3 + 1
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images[0])
  variables = jax.tree.map(
      lambda s: np.random.default_rng(0).normal(size=s.shape).astype(s.dtype)
      * 0.3 + (1.0 if len(s.shape) == 1 else 0.0), variables)
  params = variables["params"]

  def frozen_layers(preset, **kwargs):
    return partition.frozen_backbone_layers(params, partition.trainable_labels(
        params, partition.preset_rules(preset, params, **kwargs)))

  frozen = frozen_layers("head")
  assert frozen == ("layer_00", "layer_01", "layer_02", "layer_03")
  assert frozen_layers("last_k", last_k=2) == frozen[:-1]

  def train_logits(m):
    fn = jax.pmap(lambda v, x: m.apply(v, x, train=True,
                                       mutable=["batch_stats"])[0],
                  axis_name="batch")
    return np.asarray(fn(jax.tree.map(lambda a: a[None], variables),
                         images))[0]

  test_logits = np.asarray(model.apply(variables, images[0], train=False))
  np.testing.assert_allclose(
      train_logits(build_model(config, 3, frozen_layers=frozen)), test_logits,
      rtol=1e-5, atol=1e-5)
  # Without the flag, batch statistics of the new data change the features.
  assert not np.allclose(train_logits(model), test_logits, atol=1e-3)

  mlp_config = tiny_model_config("mlp", hidden_sizes=(16,), dropout=0.5)
  mlp = build_model(mlp_config, 3, frozen_layers=("layer_00",))
  x = jnp.ones((4, 8, 8, 1))
  mlp_vars = mlp.init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(
      mlp.apply(mlp_vars, x, train=True, rngs={"dropout": jax.random.PRNGKey(3)}),
      mlp.apply(mlp_vars, x, train=False))
