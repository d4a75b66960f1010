"""Partition presets over real model parameters, and frozen-ness that holds
bit for bit through real optimizer steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from cil_jax import losses
from cil_jax import partition
from cil_jax.models import build_model
from tests.helpers import tiny_model_config

INPUT_SHAPE = (1, 8, 8, 1)
NUM_CLASSES = 5
NUM_OLD = 3


@functools.lru_cache(maxsize=None)
def _init(name, adapter_dim=0, seed=0):
  """Cached: tests share initialised models and must not mutate them."""
  model = build_model(tiny_model_config(name), NUM_CLASSES, adapter_dim=adapter_dim)
  # An "rbg" key compiles much faster than threefry on CPU (a ResNet-20 init
  # draws ~20 kernels); the parameter tree is the same.
  variables = jax.jit(model.init)(jax.random.key(seed, impl="rbg"),
                                  jnp.zeros(INPUT_SHAPE))
  return model, variables


@pytest.fixture(scope="module")
def mlp():
  return _init("mlp")


@pytest.fixture(scope="module")
def mlp_adapter():
  return _init("mlp", adapter_dim=4)


@pytest.fixture(scope="module")
def resnet():
  """A ResNet-20's variable tree as ``init`` builds it, leaves as shapes.

  Labels depend only on paths, so the tree of ``jax.eval_shape(init)`` is
  enough and skips compiling the random initialisers of ~20 kernels.
  """
  model = build_model(tiny_model_config("resnet"), NUM_CLASSES)
  return model, jax.eval_shape(model.init, jax.random.PRNGKey(0),
                               jnp.zeros(INPUT_SHAPE))


def _trainable_paths(labels):
  flat = traverse_util.flatten_dict(labels, sep="/")
  assert set(flat.values()) <= {partition.TRAINABLE, partition.FROZEN}
  return sorted(p for p, lbl in flat.items() if lbl == partition.TRAINABLE)


def _labels(preset, params, **kwargs):
  return partition.trainable_labels(
      params, partition.preset_rules(preset, params, **kwargs))


MLP_PATHS = ["backbone/layer_00/bias", "backbone/layer_00/kernel",
             "backbone/layer_01/bias", "backbone/layer_01/kernel",
             "head/bias", "head/kernel"]
HEAD_PATHS = ["head/bias", "head/kernel"]


# ------------------------------------------------------------- layer names


def test_layer_names_mlp(mlp):
  _, variables = mlp
  assert partition.layer_names(variables["params"]) == [
      "backbone/layer_00", "backbone/layer_01", "head"]


def test_layer_names_with_adapter(mlp_adapter):
  _, variables = mlp_adapter
  assert partition.layer_names(variables["params"]) == [
      "backbone/layer_00", "backbone/layer_01", "adapter", "head"]


def test_layer_names_cnn():
  model = build_model(tiny_model_config("cnn"), NUM_CLASSES)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jnp.zeros(INPUT_SHAPE))
  # Two conv stages then the dense layer.
  assert partition.layer_names(variables["params"]) == [
      "backbone/layer_00", "backbone/layer_01", "backbone/layer_02", "head"]


def test_layer_names_resnet(resnet):
  _, variables = resnet
  # Depth 20 = stem + 3 stages x 3 blocks: layer_00 .. layer_09, then head.
  expected = [f"backbone/layer_{i:02d}" for i in range(10)] + ["head"]
  assert partition.layer_names(variables["params"]) == expected


def test_layer_names_forward_order_beyond_100_layers():
  model = build_model(tiny_model_config("mlp", hidden_sizes=(2,) * 101),
                      NUM_CLASSES)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros(INPUT_SHAPE))["params"]
  names = partition.layer_names(params)
  assert names == [f"backbone/layer_{i:02d}" for i in range(101)] + ["head"]
  # The two last layers in forward order are layer_100 and the head.
  rules = partition.preset_rules("last_k", params, last_k=2)
  assert rules[0][0] == "(backbone/layer_100|head)/.*"


# ----------------------------------------------------------------- presets


def test_preset_all(mlp):
  params = mlp[1]["params"]
  assert _trainable_paths(_labels("all", params)) == MLP_PATHS


@pytest.mark.parametrize("preset", ["head", "new_rows"])
def test_preset_head_and_new_rows_train_only_the_head(mlp, preset):
  params = mlp[1]["params"]
  assert _trainable_paths(_labels(preset, params)) == HEAD_PATHS


def test_preset_rules_end_with_a_catch_all_freeze(mlp):
  rules = partition.preset_rules("head", mlp[1]["params"])
  assert rules == [("head/.*", partition.TRAINABLE), (".*", partition.FROZEN)]


def test_preset_last_k(mlp):
  params = mlp[1]["params"]
  assert _trainable_paths(_labels("last_k", params, last_k=1)) == HEAD_PATHS
  assert _trainable_paths(_labels("last_k", params, last_k=2)) == [
      "backbone/layer_01/bias", "backbone/layer_01/kernel"] + HEAD_PATHS
  assert _trainable_paths(_labels("last_k", params, last_k=3)) == MLP_PATHS


def test_preset_last_k_counts_the_adapter_as_a_layer(mlp_adapter):
  params = mlp_adapter[1]["params"]
  assert _trainable_paths(_labels("last_k", params, last_k=2)) == [
      "adapter/down/bias", "adapter/down/kernel", "adapter/up/bias",
      "adapter/up/kernel"] + HEAD_PATHS


def test_preset_last_k_resnet(resnet):
  params = resnet[1]["params"]
  trainable = _trainable_paths(_labels("last_k", params, last_k=2))
  assert trainable[-2:] == HEAD_PATHS
  assert {p.split("/")[1] for p in trainable[:-2]} == {"layer_09"}
  # The last block of stage 3: two convs and two BN (scale, bias) pairs.
  assert trainable[:-2] == [
      "backbone/layer_09/bn1/bias", "backbone/layer_09/bn1/scale",
      "backbone/layer_09/bn2/bias", "backbone/layer_09/bn2/scale",
      "backbone/layer_09/conv1/kernel", "backbone/layer_09/conv2/kernel"]


@pytest.mark.parametrize("k", [0, 4, -1])
def test_preset_last_k_out_of_range(mlp, k):
  params = mlp[1]["params"]
  with pytest.raises(ValueError, match=r"last_k=.* out of range.*1\.\.3"):
    partition.preset_rules("last_k", params, last_k=k)


def test_preset_adapter_needs_an_adapter(mlp):
  with pytest.raises(ValueError, match="adapter"):
    partition.preset_rules("adapter", mlp[1]["params"])


def test_preset_adapter(mlp_adapter):
  params = mlp_adapter[1]["params"]
  assert _trainable_paths(_labels("adapter", params)) == [
      "adapter/down/bias", "adapter/down/kernel", "adapter/up/bias",
      "adapter/up/kernel"] + HEAD_PATHS


def test_preset_regex(mlp):
  params = mlp[1]["params"]
  assert _trainable_paths(_labels(
      "regex", params, trainable_regex="(backbone/layer_00|head)/.*")) == [
          "backbone/layer_00/bias", "backbone/layer_00/kernel"] + HEAD_PATHS
  # Full match: "head/kernel" does not also train head/bias.
  assert _trainable_paths(_labels(
      "regex", params, trainable_regex="head/kernel")) == ["head/kernel"]
  assert _trainable_paths(_labels(
      "regex", params, trainable_regex=".*/bias")) == [
          "backbone/layer_00/bias", "backbone/layer_01/bias", "head/bias"]


def test_preset_regex_matching_nothing_raises(mlp):
  params = mlp[1]["params"]
  # "head" alone matches no full path (paths are head/kernel, head/bias).
  for pattern in ("head", "backbone/layer_07/.*"):
    rules = partition.preset_rules("regex", params, trainable_regex=pattern)
    with pytest.raises(ValueError, match="matches no parameter"):
      partition.trainable_labels(params, rules)


def test_preset_regex_needs_a_pattern(mlp):
  with pytest.raises(ValueError, match="trainable_regex"):
    partition.preset_rules("regex", mlp[1]["params"])


def test_unknown_preset_raises(mlp):
  with pytest.raises(ValueError, match="Unknown layer preset 'top'"):
    partition.preset_rules("top", mlp[1]["params"])


def test_path_labels_raises_on_uncovered_path(mlp):
  params = mlp[1]["params"]
  rules = [("head/.*", partition.TRAINABLE),
           ("backbone/layer_00/.*", partition.FROZEN)]
  with pytest.raises(ValueError, match="backbone/layer_01/(kernel|bias)"):
    partition.path_labels(params, rules)


def test_path_labels_first_match_wins(mlp):
  params = mlp[1]["params"]
  rules = [("head/.*", partition.FROZEN), (".*", partition.TRAINABLE)]
  labels = traverse_util.flatten_dict(partition.path_labels(params, rules),
                                      sep="/")
  assert labels["head/kernel"] == partition.FROZEN
  assert labels["head/bias"] == partition.FROZEN
  assert labels["backbone/layer_00/kernel"] == partition.TRAINABLE


# ----------------------------------------------- masked optimizer, bit for bit


def _run_steps(model, params, tx, num_steps=5, seed=1, first_column=0):
  """Steps of ``tx`` on a CE loss; head columns before ``first_column`` are
  kept as the train step keeps them for preset ``new_rows``."""
  rng_x, rng_y = jax.random.split(jax.random.PRNGKey(seed))
  images = jax.random.normal(rng_x, (16,) + INPUT_SHAPE[1:])
  labels = jax.random.randint(rng_y, (16,), 0, NUM_CLASSES)

  def loss_fn(p):
    return losses.cross_entropy(model.apply({"params": p}, images), labels)

  @jax.jit
  def step(p, opt_state):
    grads = jax.grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    updates = partition.keep_head_columns(updates, first_column, NUM_CLASSES)
    return optax.apply_updates(p, updates), opt_state, grads

  opt_state = tx.init(params)
  all_grads = []
  for _ in range(num_steps):
    params, opt_state, grads = step(params, opt_state)
    all_grads.append(grads)
  return params, all_grads


@pytest.mark.parametrize("preset,kwargs,adapter_dim,num_old_columns", [
    ("head", {}, 0, None),
    ("last_k", {"last_k": 2}, 0, None),
    ("adapter", {}, 4, None),
    ("new_rows", {}, 0, NUM_OLD),
])
def test_frozen_parameters_bit_identical_after_adamw_steps(
    preset, kwargs, adapter_dim, num_old_columns):
  model, variables = _init("mlp", adapter_dim=adapter_dim)
  params = variables["params"]
  labels = _labels(preset, params, **kwargs)
  tx = partition.masked_optimizer(optax.adamw(1e-2, weight_decay=0.1), labels)
  new_params, grads = _run_steps(model, params, tx,
                                 first_column=num_old_columns or 0)

  flat_old = traverse_util.flatten_dict(params, sep="/")
  flat_new = traverse_util.flatten_dict(new_params, sep="/")
  flat_labels = traverse_util.flatten_dict(labels, sep="/")
  flat_grad = traverse_util.flatten_dict(grads[-1], sep="/")
  num_frozen = 0
  for path, label in flat_labels.items():
    old, new = np.asarray(flat_old[path]), np.asarray(flat_new[path])
    if label == partition.FROZEN:
      num_frozen += 1
      # The loss does push on this leaf, so staying put is the mask's work.
      assert np.any(np.asarray(flat_grad[path]) != 0), path
      assert np.array_equal(old, new), f"frozen {path} moved"
    elif preset == "new_rows":
      assert path in ("head/kernel", "head/bias")
      old_cols, new_cols = old[..., :NUM_OLD], new[..., :NUM_OLD]
      assert np.array_equal(old_cols, new_cols), f"old columns of {path} moved"
      for col in range(NUM_OLD, NUM_CLASSES):
        assert not np.array_equal(old[..., col], new[..., col]), (path, col)
    else:
      assert not np.array_equal(old, new), f"trainable {path} did not move"
  # Trainable: the head (2 leaves), plus layer_01 (2) or the adapter (4).
  num_trainable = 2 + {"last_k": 2, "adapter": 4}.get(preset, 0)
  assert num_frozen == len(flat_labels) - num_trainable


def test_masked_optimizer_with_all_trainable_moves_everything(mlp):
  # Control for the test above: without freezing, every leaf moves.
  model, variables = mlp
  params = variables["params"]
  labels = _labels("all", params)
  tx = partition.masked_optimizer(optax.adamw(1e-2, weight_decay=0.1), labels)
  new_params, _ = _run_steps(model, params, tx)
  for path, old in traverse_util.flatten_dict(params, sep="/").items():
    new = traverse_util.flatten_dict(new_params, sep="/")[path]
    assert not np.array_equal(np.asarray(old), np.asarray(new)), path


def test_masked_optimizer_first_sgd_step_by_hand(mlp):
  # One plain SGD step: trainable leaves move by exactly -lr * grad, frozen
  # leaves by nothing; with new_rows only columns >= 3 of the head move.
  model, variables = mlp
  params = variables["params"]
  labels = _labels("new_rows", params)
  lr = 0.5
  tx = partition.masked_optimizer(optax.sgd(lr), labels)
  new_params, grads = _run_steps(model, params, tx, num_steps=1,
                                 first_column=NUM_OLD)
  kernel, grad = np.asarray(params["head"]["kernel"]), np.asarray(
      grads[0]["head"]["kernel"])
  expected = kernel.copy()
  expected[:, NUM_OLD:] = kernel[:, NUM_OLD:] - np.float32(lr) * grad[:,
                                                                      NUM_OLD:]
  np.testing.assert_allclose(np.asarray(new_params["head"]["kernel"]),
                             expected, rtol=0, atol=1e-7)
  assert np.array_equal(np.asarray(new_params["head"]["kernel"])[:, :NUM_OLD],
                        kernel[:, :NUM_OLD])


# ---------------------------------------------------- keep_frozen, batch_stats


def test_keep_frozen_batch_stats_of_resnet(resnet):
  _, variables = resnet
  params = variables["params"]
  rules = partition.preset_rules("last_k", params, last_k=2)
  # BatchNorm's initial statistics (mean 0, var 1), and a distinct "updated"
  # value for every leaf, as after a training step.
  rng = np.random.default_rng(0)
  old = traverse_util.unflatten_dict({
      path: np.zeros(s.shape, s.dtype) if path[-1] == "mean"
      else np.ones(s.shape, s.dtype)
      for path, s in traverse_util.flatten_dict(
          variables["batch_stats"]).items()})
  updated = jax.tree_util.tree_map(
      lambda a: a + rng.uniform(0.5, 1.0, a.shape).astype(a.dtype), old)
  kept = partition.keep_frozen(updated, old, partition.rule_labeler(rules))

  flat_old = traverse_util.flatten_dict(old, sep="/")
  flat_upd = traverse_util.flatten_dict(updated, sep="/")
  flat_kept = traverse_util.flatten_dict(kept, sep="/")
  assert set(flat_kept) == set(flat_old)
  # The stem, 9 blocks of 2 BNs and 2 shortcut BNs, each with mean and var.
  assert len(flat_old) == 2 * (1 + 2 * 9 + 2)
  trainable_paths = sorted(p for p in flat_old
                           if p.startswith("backbone/layer_09/"))
  assert trainable_paths == [
      "backbone/layer_09/bn1/mean", "backbone/layer_09/bn1/var",
      "backbone/layer_09/bn2/mean", "backbone/layer_09/bn2/var"]
  for path in flat_old:
    if path in trainable_paths:
      assert np.array_equal(flat_kept[path], flat_upd[path]), path
    else:
      assert np.array_equal(flat_kept[path], flat_old[path]), path


def test_rule_labeler_defaults_to_frozen():
  labeler = partition.rule_labeler([("head/.*", partition.TRAINABLE)])
  assert labeler("head/kernel") == partition.TRAINABLE
  assert labeler("backbone/layer_00/bn/mean") == partition.FROZEN
  # Full match, not prefix.
  assert labeler("head") == partition.FROZEN


def test_keep_head_columns_keeps_only_the_range_and_other_layers():
  updates = {"head": {"kernel": np.ones((2, 6), np.float32),
                      "bias": np.ones(6, np.float32)},
             "backbone": {"layer_00": {"kernel": np.ones((3, 2), np.float32)}}}
  kept = partition.keep_head_columns(updates, 2, 4)
  np.testing.assert_array_equal(kept["head"]["bias"], [0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(kept["head"]["kernel"][1], [0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(kept["backbone"]["layer_00"]["kernel"],
                                np.ones((3, 2)))
