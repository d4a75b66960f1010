"""Data-free replay's parts: the BatchNorm-statistics loss, synthesis, the
replay rows of a batch and the losses on them, checked against numbers
computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cil_jax.synthesis import inversion
from cil_jax import methods
from cil_jax import parallel
from cil_jax import partition
from cil_jax.step import train_step as ts
from cil_jax.data import replay as replay_lib
from cil_jax.methods import df_replay
from cil_jax.models import build_model
from tests.helpers import objective_for
from tests.helpers import tiny_model_config


def _bn_mlp(num_classes, hidden=(16,)):
  return build_model(tiny_model_config("mlp", hidden_sizes=hidden,
                                       batch_norm=True), num_classes)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_bn_statistics_loss_is_zero_when_the_batch_matches_the_stored_ones():
  model = _bn_mlp(3)
  inputs = np.random.default_rng(0).normal(size=(32, 5)).astype(np.float32)
  variables = jax.device_get(model.init(jax.random.PRNGKey(0), inputs))
  dense = variables["params"]["backbone"]["layer_00"]["dense"]
  pre = inputs @ dense["kernel"] + dense["bias"]  # the BatchNorm's input
  stats = {"mean": pre.mean(0), "var": pre.var(0)}
  variables["batch_stats"]["backbone"]["layer_00"]["bn"] = stats
  _, loss = inversion.logits_and_bn_loss(model.apply, variables, inputs)
  assert float(loss) == pytest.approx(0.0, abs=1e-5)
  # Off by a known amount: the loss is the l2 norms of the differences.
  shifted = {"mean": stats["mean"] + 0.3, "var": stats["var"] * 2.0}
  variables["batch_stats"]["backbone"]["layer_00"]["bn"] = shifted
  _, loss = inversion.logits_and_bn_loss(model.apply, variables, inputs)
  expected = (np.linalg.norm(np.full(16, 0.3))
              + np.linalg.norm(stats["var"]))
  assert float(loss) == pytest.approx(expected, rel=1e-4)
  # A model without BatchNorm has no such term.
  plain = build_model(tiny_model_config("mlp"), 3)
  _, loss = inversion.logits_and_bn_loss(
      plain.apply, plain.init(jax.random.PRNGKey(0), inputs), inputs)
  assert float(loss) == 0.0


def test_synthesis_makes_the_teacher_predict_the_target_classes():
  model = _bn_mlp(6, hidden=(32, 32))
  variables = jax.device_get(model.init(jax.random.PRNGKey(1),
                                        jnp.zeros((1, 8, 8, 1))))
  key = jax.random.PRNGKey(3)

  def synthesize(steps):
    return inversion.synthesize(
        model.apply, variables, 4, (8, 8, 1), key,
        inversion.Settings(samples=96, steps=steps, learning_rate=0.1,
                           batch_size=32, bn_weight=0.1))
  before, after = synthesize(1), synthesize(150)
  assert after["image"].shape == (96, 8, 8, 1)
  assert after["logits"].shape == (96, 6)
  # Noise lands on the 4 old classes about at random; inversion makes the
  # teacher predict each input's target, more confidently, on inputs whose
  # BatchNorm statistics come closer to the stored ones.
  assert before["stats"]["target_hit"] < 0.6
  assert after["stats"]["target_hit"] > 0.95
  assert (after["stats"]["teacher_confidence"]
          > before["stats"]["teacher_confidence"] + 0.2)
  assert after["stats"]["final_bn"] < before["stats"]["final_bn"]
  # Balanced over the old classes: 96 = 4 x 24 targets.
  predicted = np.argmax(after["logits"][:, :4], -1)
  assert np.bincount(predicted, minlength=4).min() >= 20


def test_synthesis_on_eight_devices_equals_one_device():
  model = _bn_mlp(5)
  variables = jax.device_get(model.init(jax.random.PRNGKey(2),
                                        jnp.zeros((1, 6))))
  settings = inversion.Settings(samples=100, steps=20, batch_size=8)
  one = inversion.synthesize(model.apply, variables, 3, (6,),
                             jax.random.PRNGKey(4), settings)
  eight = inversion.synthesize(model.apply, variables, 3, (6,),
                               jax.random.PRNGKey(4), settings,
                               jax.local_devices()[:8])
  assert len(jax.local_devices()) == 8
  np.testing.assert_allclose(one["image"], eight["image"], atol=1e-6)
  np.testing.assert_allclose(one["logits"], eight["logits"], atol=1e-5)


def test_replay_rows_are_drawn_from_the_set_by_data_order_and_device():
  devices = jax.local_devices()[:2]
  replay = {"image": np.arange(50, dtype=np.float32).reshape(50, 1),
            "logits": np.arange(50, dtype=np.float32).reshape(50, 1) * 2}

  def base_fn(resident, feed):
    del resident
    return {"image": feed["image"], "label": feed["label"]}

  fn = replay_lib.with_replay(base_fn, 6)
  assert replay_lib.with_replay(base_fn, 6) is fn  # one compiled program
  resident = parallel.replicate({"replay": replay}, devices)
  feed = {"image": np.zeros((2, 3, 1), np.float32),
          "label": np.zeros((2, 3), np.int32),
          "augment_seed": np.tile(np.array([7, 1], np.uint32), (2, 1))}
  batch = jax.pmap(fn, axis_name=parallel.BATCH_AXIS)(resident, feed)
  rows = np.asarray(batch["replay_image"])[..., 0]
  assert rows.shape == (2, 6)
  np.testing.assert_array_equal(np.asarray(batch["replay_logits"])[..., 0],
                                rows * 2)  # image and logits rows agree
  assert not np.array_equal(rows[0], rows[1])  # each device its own draw
  again = jax.pmap(fn, axis_name=parallel.BATCH_AXIS)(resident, feed)
  np.testing.assert_array_equal(np.asarray(again["replay_image"])[..., 0],
                                rows)  # a resumed run draws the same
  feed["augment_seed"][:, 1] = 2  # the next step draws other rows
  later = jax.pmap(fn, axis_name=parallel.BATCH_AXIS)(resident, feed)
  assert not np.array_equal(np.asarray(later["replay_image"])[..., 0], rows)


def _replay_objective(balanced_replay="", mixed_batch_stats=False):
  """df_replay's objective with local CE: on the batch plus the replay
  rows, its BatchNorm statistics from both with ``mixed_batch_stats``, or
  the head fine-tune's class-balanced loss (``balanced_replay``)."""
  method = methods.Method(
      methods.get("df_replay"), 0.5,
      batch_stats="mixed" if mixed_batch_stats else "train",
      settings=df_replay.Settings(balanced=balanced_replay))
  return objective_for(method, local_ce=True)


def _one_step(balanced_replay="", replay_weight=0.0, eps=0.5):
  """One step of a tiny plain MLP on a batch with replay rows; returns the
  step's metrics and the logits needed to recompute its loss by hand."""
  model = build_model(tiny_model_config("mlp"), 5)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, 6)).astype(np.float32)
  synthetic = rng.normal(size=(3, 6)).astype(np.float32)
  variables = jax.device_get(model.init(jax.random.PRNGKey(0), images))
  teacher_logits = rng.normal(size=(4, 5)).astype(np.float32) * 2
  replay_logits = rng.normal(size=(3, 5)).astype(np.float32) * 2
  batch = {"image": images, "label": np.array([3, 2, 3, 2], np.int32),
           "teacher_logits": teacher_logits, "replay_image": synthetic,
           "replay_logits": replay_logits}
  tx = optax.sgd(0.0)
  step = ts.make_train_step(
      model.apply, None, tx, _replay_objective(balanced_replay),
      partition.rule_labeler([(".*", partition.TRAINABLE)]))
  state = ts.create_state(variables, tx, eps, 2.0, num_old=2, num_seen=4,
                          replay_weight=replay_weight)
  pmapped = jax.pmap(step, axis_name=parallel.BATCH_AXIS,
                     in_axes=(0, 0, 0, None))
  _, metrics = pmapped(parallel.replicate(state, jax.local_devices()[:1]),
                       parallel.replicate({}, jax.local_devices()[:1]),
                       jax.tree.map(lambda x: x[None], batch),
                       jax.random.PRNGKey(0))
  student = np.asarray(model.apply(variables, images))[:, :4]
  student_synthetic = np.asarray(model.apply(variables, synthetic))[:, :4]
  metrics = jax.tree.map(lambda m: float(m[0]), metrics)
  return metrics, batch, student, student_synthetic


def _kd_full(teacher, student, temperature, num_old):
  targets = _softmax(teacher[:, :num_old] / temperature)
  log_probs = np.log(_softmax(student / temperature))[:, :num_old]
  return float(np.mean(-(targets * log_probs).sum(-1)))


def _ce(logits, labels):
  return float(np.mean(-np.log(_softmax(logits))[np.arange(len(labels)),
                                                   labels]))


def test_replay_distillation_adds_the_weighted_kd_on_synthetic_rows():
  plain, batch, student, synthetic = _one_step(replay_weight=0.0)
  weighted, *_ = _one_step(replay_weight=0.7)
  # Local CE over the new outputs 2..3 (num_old=2, num_seen=4), labels 2, 3.
  ce = _ce(student[:, 2:4], batch["label"] - 2)
  kd = _kd_full(batch["teacher_logits"], student, 2.0, 2)
  assert plain["ce"] == pytest.approx(ce, rel=1e-5)
  assert plain["loss"] == pytest.approx(0.5 * ce + 0.5 * kd, rel=1e-5)
  replay_kd = _kd_full(batch["replay_logits"], synthetic, 2.0, 2)
  assert weighted["loss"] == pytest.approx(plain["loss"] + 0.7 * replay_kd,
                                           rel=1e-5)


@pytest.mark.parametrize("targets", ["soft", "hard"])
def test_balanced_head_loss_weighs_old_and_new_classes_alike(targets):
  metrics, batch, student, synthetic = _one_step(balanced_replay=targets)
  new = _ce(student, batch["label"])  # over all 4 seen classes
  if targets == "soft":
    old = _kd_full(batch["replay_logits"], synthetic, 2.0, 2)
  else:
    old = _ce(synthetic, np.argmax(batch["replay_logits"][:, :2], -1))
  # 2 new of 4 seen classes: half the weight each.
  assert metrics["loss"] == pytest.approx(0.5 * new + 0.5 * old, rel=1e-5)
  assert metrics["kd"] == 0.0


@pytest.mark.parametrize("mixed", [False, True])
def test_mixed_batch_stats_follow_real_and_synthetic_rows_together(mixed):
  """One step of a BatchNorm MLP: with ``batch_stats="mixed"`` the running
  averages move towards the statistics of the 4 real and 3 synthetic rows
  together (flax: 0.9 * old + 0.1 * batch mean, biased variance), else of
  the real rows alone."""
  model = _bn_mlp(4, hidden=(3,))
  rng = np.random.default_rng(1)
  images = rng.normal(size=(4, 6)).astype(np.float32)
  synthetic = rng.normal(loc=2.0, size=(3, 6)).astype(np.float32)
  variables = jax.device_get(model.init(jax.random.PRNGKey(0), images))
  batch = {"image": images, "label": np.array([2, 3, 2, 3], np.int32),
           "teacher_logits": np.zeros((4, 4), np.float32),
           "replay_image": synthetic,
           "replay_logits": np.zeros((3, 4), np.float32)}
  tx = optax.sgd(0.0)
  step = ts.make_train_step(
      model.apply, None, tx, _replay_objective(mixed_batch_stats=mixed),
      partition.rule_labeler([(".*", partition.TRAINABLE)]))
  state = ts.create_state(variables, tx, 0.5, 2.0, num_old=2, num_seen=4,
                          replay_weight=1.0)
  devices = jax.local_devices()[:1]
  state, _ = jax.pmap(step, axis_name=parallel.BATCH_AXIS,
                      in_axes=(0, 0, 0, None))(
                          parallel.replicate(state, devices),
                          parallel.replicate({}, devices),
                          jax.tree.map(lambda x: x[None], batch),
                          jax.random.PRNGKey(0))
  dense = variables["params"]["backbone"]["layer_00"]["dense"]
  rows = np.concatenate([images, synthetic]) if mixed else images
  features = rows @ dense["kernel"] + dense["bias"]
  stats = jax.tree.map(lambda x: np.asarray(x[0]),
                       state.batch_stats)["backbone"]["layer_00"]["bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * features.mean(0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * features.var(0),
                             rtol=1e-5)
