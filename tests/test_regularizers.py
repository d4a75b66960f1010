"""EWC, SI and MAS: the penalty and importances against hand-computed
numbers, the penalty in the pmapped step, SI's path integral, resume and
config errors."""

import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cil_jax.classifier import checkpoint
from cil_jax.step import fit
from cil_jax import parallel
from cil_jax import partition
from cil_jax import train
from cil_jax.step import train_step as ts
from cil_jax.data import pipeline
from cil_jax.methods import ewc
from cil_jax.methods import mas
from cil_jax.methods import si
from cil_jax.methods.shared import penalties
from cil_jax.models import build_model
from tests.helpers import objective_for
from tests.helpers import small_config
from tests.helpers import tiny_model_config


class Linear(nn.Module):
  """logits = x W + b: gradients small enough to write down."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


LINEAR = {"params": {"head": {
    "kernel": np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]], np.float32),
    "bias": np.array([0.0, 1.0, 0.0], np.float32)}}}
X = np.array([[1.0, 2.0], [-1.0, 0.0]], np.float32)


def test_penalty_is_the_importance_weighted_squared_distance():
  params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[3.0]])}
  anchor = {"a": jnp.array([0.0, 2.0]), "b": jnp.array([[1.0]])}
  importance = {"a": jnp.array([2.0, 5.0]), "b": jnp.array([[0.5]])}
  # 2 * 1^2 + 5 * 0^2 + 0.5 * 2^2
  assert float(penalties.penalty(params, anchor, importance)) == 4.0
  weighted = penalties.weighted({"anchor": anchor,
                                 "importance": importance}, 10.0)
  assert float(penalties.penalty(params, **weighted)) == 40.0


def test_ewc_merges_its_penalties_into_one_anchor_exactly():
  previous = {"anchor": {"w": jnp.array([0.0, 5.0])},
              "importance": {"w": jnp.array([1.0, 0.0])}}
  fisher, params = {"w": jnp.array([3.0, 2.0])}, {"w": jnp.array([4.0, 1.0])}
  merged = penalties.combine(previous, fisher, params, merge_anchors=True)
  np.testing.assert_allclose(merged["importance"]["w"], [4.0, 2.0])
  # (1*0 + 3*4) / 4 and (0*5 + 2*1) / 2
  np.testing.assert_allclose(merged["anchor"]["w"], [3.0, 1.0])
  # sum_k F_k (theta - theta_k)^2 differs from the merged penalty by a
  # constant: equal differences between two points.
  def separate(theta):
    return (penalties.penalty(theta, previous["anchor"],
                              previous["importance"])
            + penalties.penalty(theta, params, fisher))
  a, b = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([7.0, 3.0])}
  np.testing.assert_allclose(
      separate(a) - separate(b),
      penalties.penalty(a, **merged) - penalties.penalty(b, **merged),
      rtol=1e-6)
  # A denormal importance (flushed to zero on XLA's CPU) holds nothing:
  # the anchor is the new parameters, not 0 / 0.
  tiny_previous = dict(previous, importance={"w": jnp.array([1e-40, 0.0])})
  merged = penalties.combine(tiny_previous, {"w": jnp.zeros(2)}, params,
                             merge_anchors=True)
  np.testing.assert_array_equal(merged["anchor"]["w"], [4.0, 1.0])
  online = penalties.combine(previous, fisher, params, decay=0.5)
  np.testing.assert_allclose(online["importance"]["w"], [3.5, 2.0])
  np.testing.assert_allclose(online["anchor"]["w"], [4.0, 1.0])


def test_mas_importance_is_the_mean_absolute_gradient_of_the_norm():
  # f = x W + b over the 2 seen outputs: x1 -> (1, 5), x2 -> (-1, 1);
  # d||f||^2/dW_ij = 2 x_i f_j, d/db_j = 2 f_j; the unseen column: 0.
  got = penalties.mean_importance(
      mas.EXAMPLE, Linear().apply, LINEAR, pipeline.Examples(
          X, np.zeros(2, np.int32)), num_seen=2, batch_size=4)
  np.testing.assert_allclose(got["head"]["kernel"],
                             [[2.0, 6.0, 0.0], [2.0, 10.0, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(got["head"]["bias"], [2.0, 6.0, 0.0], rtol=1e-6)


def test_ewc_importance_is_the_fisher_of_the_predicted_label():
  # d log p_y / dW_ij = x_i (1[j = y] - p_j), y the prediction among the 2
  # seen classes; batch size 1 sums over batches.
  got = penalties.mean_importance(
      ewc.EXAMPLE, Linear().apply, LINEAR, pipeline.Examples(
          X, np.zeros(2, np.int32)), num_seen=2, batch_size=1)
  kernel, bias = np.zeros((2, 3)), np.zeros(3)
  for x in X:
    f = x @ LINEAR["params"]["head"]["kernel"][:, :2] + [0.0, 1.0]
    p = np.exp(f - f.max()) / np.exp(f - f.max()).sum()
    d = np.eye(2)[np.argmax(f)] - p
    kernel[:, :2] += np.outer(x, d) ** 2 / 2
    bias[:2] += d ** 2 / 2
  np.testing.assert_allclose(got["head"]["kernel"], kernel, rtol=1e-5)
  np.testing.assert_allclose(got["head"]["bias"], bias, rtol=1e-5)


def test_si_path_integral_on_a_one_parameter_quadratic():
  # L = theta^2 / 2 from theta = 1, SGD 0.5: theta 1, .5, .25, .125 and
  # g = theta, so omega = sum g * 0.5 g = 0.5 (1 + .25 + .0625).
  tx = optax.sgd(0.5)
  theta = {"w": jnp.array(1.0)}
  opt_state, omega = tx.init(theta), {"w": jnp.array(0.0)}
  for _ in range(3):
    grads = jax.grad(lambda p: p["w"] ** 2 / 2)(theta)
    updates, opt_state = tx.update(grads, opt_state)
    new = optax.apply_updates(theta, updates)
    omega = si.path_integral_step(omega, grads, theta, new)
    theta = new
  assert float(theta["w"]) == 0.125
  assert float(omega["w"]) == 0.65625
  importance = si.si_importance(omega, {"w": 1.0}, theta, 0.1)
  np.testing.assert_allclose(importance["w"], 0.65625 / (0.875 ** 2 + 0.1))


@pytest.fixture(scope="module")
def tiny():
  """A 10-class MLP 64-8-8 as a class step would see it: 5 classes old."""
  model = build_model(tiny_model_config("mlp"), 10)
  variables = jax.device_get(model.init(jax.random.PRNGKey(0),
                                        jnp.zeros((1, 8, 8, 1))))
  rng = np.random.default_rng(0)
  batches = [{"image": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
              "label": rng.integers(5, 10, 16).astype(np.int32)}
             for _ in range(30)]
  return model, variables, batches


def _train(model, variables, batches, tx, penalty_input, path_integral):
  """Steps of the pmapped step on 2 devices; returns the host state."""
  tx = _masked(tx, variables)
  step = ts.make_train_step(
      model.apply, None, tx, objective_for(
          penalty=penalty_input is not None,
          running=si.path_integral_step if path_integral else None),
      partition.rule_labeler([(".*", partition.TRAINABLE)]))
  devices = jax.local_devices()[:2]
  step_fn = ts.pmap_train_step(step, lambda resident, feed: feed)
  state = parallel.replicate(ts.create_state(
      variables, tx, 0.0, 1.0, num_old=5, num_seen=10,
      running=path_integral), devices)
  fixed = parallel.replicate(penalty_input or {}, devices)
  for batch in batches:
    state, _ = step_fn(state, fixed, {}, jax.tree.map(
        lambda x: x.reshape(2, -1, *x.shape[1:]), batch),
        jax.random.PRNGKey(0))
  return parallel.unreplicate(state)


def _masked(tx, variables):
  params = variables["params"]
  return partition.masked_optimizer(tx, partition.trainable_labels(
      params, partition.preset_rules("all", params)))


def _old(tree):
  """Every parameter of the old model: the backbone and head columns 0-4."""
  return {"backbone": tree["backbone"],
          "head": jax.tree.map(lambda x: x[..., :5], tree["head"])}


def _max_change(a, b):
  return max(float(np.max(np.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_huge_ewc_weight_keeps_old_parameters_and_frees_new_columns(tiny):
  model, variables, batches = tiny
  params = variables["params"]
  # The importance EWC would give: the Fisher on old-class data, which
  # is zero on the new classes' columns.
  fisher = penalties.mean_importance(
      ewc.EXAMPLE, model.apply, variables, pipeline.Examples(
          batches[0]["image"], batches[0]["label"]), 5, 16)
  assert float(np.abs(fisher["head"]["kernel"][:, 5:]).max()) == 0.0
  penalty = penalties.weighted({"anchor": params, "importance": fisher},
                               1e7)
  tx = optax.adam(1e-2)
  held = _train(model, variables, batches, tx, penalty, False).params
  free = _train(model, variables, batches, tx, None, False).params
  # Parameters the old data's Fisher calls important (dead units and the
  # like have none) stay within a few Adam steps of the anchor.
  important = jax.tree.map(lambda f: f > 1e-6, _old(fisher))
  def change(p):
    return max(float(np.max(np.abs(x - y)[m], initial=0.0)) for x, y, m in zip(
        jax.tree.leaves(_old(p)), jax.tree.leaves(_old(params)),
        jax.tree.leaves(important)))
  assert change(free) > 0.25
  assert change(held) < 0.03
  new_columns = lambda p: p["head"]["kernel"][:, 5:]
  # The new columns learn as freely as fine-tuning's (0.22 against 0.19).
  assert _max_change(new_columns(held), new_columns(params)) > 0.15


def test_step_accumulates_the_path_integral_of_the_task_loss(tiny):
  """Two steps of SGD: omega = -sum g_task * delta theta, with g_task the
  gradient of the cross-entropy alone (not of the penalty)."""
  model, variables, batches = tiny
  params = variables["params"]
  anchor = jax.tree.map(lambda p: p + 0.1, params)
  importance = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  penalty = {"anchor": anchor, "importance": importance}
  tx = optax.sgd(0.1)
  state = _train(model, variables, batches[:2], tx, penalty, True)

  def ce(p, batch):
    logits = model.apply({"params": p}, batch["image"], train=False)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]).mean()
  expected, theta = jax.tree.map(jnp.zeros_like, params), params
  for batch in batches[:2]:
    task = jax.grad(ce)(theta, batch)
    pen = jax.grad(penalties.penalty)(theta, anchor, importance)
    new = jax.tree.map(lambda t, g, q: t - 0.1 * (g + q), theta, task, pen)
    expected = jax.tree.map(lambda w, g, a, b: w - g * (b - a), expected,
                            task, theta, new)
    theta = new
  for got, want in zip(jax.tree.leaves(state.running),
                       jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-9)
  assert float(np.abs(state.running["head"]["kernel"]).sum()) > 0


def test_training_checkpoint_restores_the_path_integral(tiny, tmp_path):
  model, variables, batches = tiny
  tx = optax.sgd(0.1)
  state = _train(model, variables, batches[:1], tx, None, True)
  manager = checkpoint.TrainCheckpoints(str(tmp_path / "ckpt"))
  manager.save(1, state)
  manager.close()
  template = ts.create_state(variables, _masked(tx, variables), 0.0, 1.0,
                             running=True)
  restored = checkpoint.TrainCheckpoints(str(tmp_path / "ckpt")).restore(
      1, template)
  for got, want in zip(jax.tree.leaves(restored.running),
                       jax.tree.leaves(state.running)):
    np.testing.assert_array_equal(got, want)


def _sequence_config():
  return small_config(**{
      "methods": "ewc,si,mas", "train.epochs": 3,
      "train.checkpoint_every_epochs": 1, "outputs.plots": False,
      "classes.groups": ((0, 1), (2, 3), (4, 5))})


def test_resume_mid_sequence_restores_importance_exactly(tmp_path,
                                                         monkeypatch):
  config = _sequence_config()
  first = str(tmp_path / "first")
  results = train.run(config, first)
  for name in ("ewc", "si", "mas"):
    # C_A leaves every regulariser's importance; each step its own.
    assert os.path.isdir(os.path.join(first, "base/step_0/penalty"))
    assert os.path.isdir(os.path.join(first, name, "step_2/penalty"))
  # A second run stopped after step 1: its step 2 starts from the
  # importance read back from step_1/penalty. SI's step 2 is killed in
  # epoch 3, once its epoch 1 checkpoint is complete (orbax saves in the
  # background, finishing one save before the next), and resumes from its
  # newest complete checkpoint, path integral included.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(first, resumed)
  os.remove(os.path.join(resumed, "results.json"))
  for name in ("ewc", "si", "mas"):
    shutil.rmtree(os.path.join(resumed, name, "step_2"))
  check = fit._EpochLoop._check_diverged

  def killed(self, member, epoch, loss, first_loss):
    if member.name == "si step 2" and epoch == 3:
      raise KeyboardInterrupt("killed in epoch 3")
    return check(self, member, epoch, loss, first_loss)
  with monkeypatch.context() as patch:
    patch.setattr(fit._EpochLoop, "_check_diverged", killed)
    with pytest.raises(KeyboardInterrupt):
      train.run(config, resumed)
  assert "1" in os.listdir(os.path.join(resumed, "si/step_2/checkpoints"))
  again = train.run(config, resumed)
  for name in ("ewc", "si", "mas"):
    assert (again["methods"][name]["final_acc_all"]
            == results["methods"][name]["final_acc_all"])
    want = checkpoint.load_tree(os.path.join(first, name, "step_2/penalty"),
                                "")
    got = checkpoint.load_tree(os.path.join(resumed, name, "step_2/penalty"),
                               "")
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  # The importance is real: SI's and MAS's are positive somewhere, and
  # zero on the head columns of classes not yet seen (4 of 6 after step 1).
  step_1 = checkpoint.load_tree(os.path.join(first, "si/step_1/penalty"), "")
  head = step_1["si"]["importance"]["head"]["kernel"]
  assert head[:, :4].max() > 0 and np.abs(head[:, 4:]).max() == 0


@pytest.mark.parametrize("override,key", [
    ({"ewc.weight": -1.0}, "config.ewc.weight"),
    ({"ewc.decay": 0.0}, "config.ewc.decay"),
    ({"si.damping": 0.0}, "config.si.damping"),
    ({"teacher.checkpoint": "/nonexistent"}, "config.teacher.checkpoint"),
])
def test_bad_regularizer_config_fails_before_the_workdir(tmp_path, override,
                                                         key):
  config = small_config(**{"methods": "ewc,si,mas", **override})
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    train.run(config, workdir)
  assert not os.path.exists(workdir)
