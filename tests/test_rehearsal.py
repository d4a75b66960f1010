"""The rehearsal methods (er, icarl, agem, bic) and their exemplar memory:
herding, the budget, A-GEM's projection, iCaRL's loss and classifier,
BiC's bias correction on hand-computed numbers; a short digits run
against fine-tuning, resumed mid-sequence; config errors."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cil_jax import features as feature_lib
from cil_jax.memory import selection as memory
from cil_jax import rebalance
from cil_jax import train
from cil_jax.methods import agem
from cil_jax.methods import bic
from cil_jax.methods import icarl
from cil_jax.models import build_model
from tests.helpers import small_config
from tests.helpers import tiny_model_config


def test_herding_adds_the_row_that_brings_the_mean_closest():
  # Mean (2, 0.8). k=1: (2, 0) is nearest (0.64). k=2: with (1, 1) the
  # mean is (1.5, 0.5), 0.34 away; (3, 3) 0.74; (0, 0), (4, 0) 1.64.
  # k=3: with (3, 3) the mean (2, 4/3) is 0.284 away, (4, 0) 0.329.
  # k=4: (0, 0) and (4, 0) tie at 0.29: the first row.
  features = np.array([[0, 0], [4, 0], [1, 1], [3, 3], [2, 0]], np.float32)
  np.testing.assert_array_equal(memory.herding(features, 5), [4, 2, 3, 0, 1])
  np.testing.assert_array_equal(memory.herding(features, 2), [4, 2])
  assert len(memory.herding(features, 9)) == 5  # at most every row


def test_memory_stays_within_budget_keeping_the_first_chosen():
  rng = np.random.default_rng(0)
  size, mem, chosen = 10, memory.empty(), {}
  for step, group in enumerate([(0, 1), (2, 3, 4), (5,), (6, 7, 8)]):
    num_seen = group[-1] + 1
    per_class = memory.quota(size, 0, num_seen)
    mem = memory.trim(mem, per_class)
    for label in group:
      rows = 100 * label + np.arange(20)
      order = (memory.herding(rng.normal(size=(20, 3)), per_class)
               if step % 2 else memory.random_order(20, per_class,
                                                    (0, step, label)))
      chosen[label] = rows[order]
      mem = memory.add(mem, label, rows[order])
    memory.check(mem, num_seen, size)
    assert len(mem["label"]) <= size
    assert set(mem["label"].tolist()) == set(range(num_seen))
    for label in range(num_seen):  # each class keeps its first picks
      np.testing.assert_array_equal(mem["index"][mem["label"] == label],
                                    chosen[label][:per_class])
  assert memory.quota(size, 0, 9) == 1 and memory.quota(size, 3, 9) == 3
  with pytest.raises(ValueError, match="over its budget"):
    memory.check(mem, 9, 8)
  with pytest.raises(ValueError, match="outside the 8 seen"):
    memory.check(mem, 8, 10)


def test_agem_projects_only_against_a_conflicting_reference():
  grads = {"a": jnp.array([1.0]), "b": jnp.array([1.0])}
  # g = (1, 1), g_ref = (-1, 0): g.g_ref = -1 < 0, so
  # g - (-1 / 1) * g_ref = (0, 1), orthogonal to g_ref.
  projected = agem.agem_project(
      grads, {"a": jnp.array([-1.0]), "b": jnp.array([0.0])})
  np.testing.assert_allclose([projected["a"][0], projected["b"][0]], [0, 1])
  # g_ref = (1, 0): g.g_ref = 1 >= 0, g unchanged.
  kept = agem.agem_project(
      grads, {"a": jnp.array([1.0]), "b": jnp.array([0.0])})
  np.testing.assert_array_equal([kept["a"][0], kept["b"][0]], [1, 1])


def test_icarl_sigmoid_distillation_by_hand():
  # Two seen classes (one old), a third not seen. Old class: target
  # sigmoid(0) = 1/2 and logit 0: BCE = log 2. New class 1, the label:
  # target 1, logit ln 3: -log sigmoid(ln 3) = log(4/3). The unseen
  # column counts nothing, whatever its logit.
  teacher = jnp.array([[0.0, 5.0, 7.0]])
  targets = icarl.icarl_targets(teacher, jnp.array([1]), 1, 2)
  np.testing.assert_allclose(targets, [[0.5, 1.0, 0.0]])
  loss = icarl.sigmoid_distillation(
      jnp.array([[0.0, np.log(3.0), 9.0]]), targets, 2)
  np.testing.assert_allclose(loss, np.log(8.0 / 3.0), rtol=1e-6)
  # A memory row of old class 0: old target from the teacher, new class
  # target 0 (it is not the label).
  np.testing.assert_allclose(
      icarl.icarl_targets(jnp.array([[np.log(3.0), 0.0, 0.0]]),
                          jnp.array([0]), 1, 2), [[0.75, 0.0, 0.0]])


def test_nearest_mean_of_exemplars_by_hand():
  # Class 0's exemplars (1, 0) and (0, 2) normalise to (1, 0), (0, 1):
  # mean (1/2, 1/2), normalised (1, 1)/sqrt 2. Class 1: (-1, 0). Class 2
  # has none (a zero mean).
  means = feature_lib.class_means(jnp.array([[1.0, 0.0], [0.0, 2.0],
                                             [-3.0, 0.0]]),
                                  jnp.array([0, 0, 1]), 3)
  s = 1 / np.sqrt(2)
  np.testing.assert_allclose(means, [[s, s], [-1, 0], [0, 0]], atol=1e-6)
  features = jnp.array([[2.0, 1.0], [-3.0, 1.0]])
  np.testing.assert_array_equal(feature_lib.nme_predict(features, means, 2),
                                [0, 1])
  # With one class seen, every row goes to it.
  np.testing.assert_array_equal(feature_lib.nme_predict(features, means, 1),
                                [0, 0])


def test_bias_correction_recovers_the_new_logits_scale_and_shift():
  # One old class (logit 0) and one new (logit z): p(new) = sigmoid(
  # alpha z + beta), a logistic regression whose maximum likelihood on
  # labels drawn with alpha = 0.5, beta = -1 is near them.
  rng = np.random.default_rng(0)
  z = rng.normal(0, 3, size=20000)
  labels = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * z - 1)))).astype(
      np.int32)
  logits = np.stack([np.zeros_like(z), z, np.full_like(z, 5.0)], axis=1)
  alpha, beta = bic.fit_correction(jnp.asarray(logits, jnp.float32),
                                   jnp.asarray(labels), 1, 2)
  assert abs(alpha - 0.5) < 0.05 and abs(beta + 1) < 0.1
  # Folded into the head: the new column's logit is alpha z + beta, the
  # old and the unseen ones unchanged, bit for bit.
  head = {"kernel": np.array([[1.0, 2.0, 3.0]], np.float32),
          "bias": np.array([0.5, 1.0, -1.0], np.float32)}
  folded = rebalance.correct_bias(head, 0.5, -1.0, 1, 2)
  np.testing.assert_array_equal(folded["kernel"], [[1.0, 1.0, 3.0]])
  np.testing.assert_array_equal(folded["bias"], [0.5, -0.5, -1.0])
  np.testing.assert_allclose(
      bic.corrected(jnp.array([[1.5, 3.0, 2.0]]), 0.5, -1.0, 1, 2),
      [[1.5, 0.5, 2.0]])
  kept, held = memory.hold_out({"index": np.arange(6, dtype=np.int32),
                                "label": np.array([0, 0, 0, 1, 1, 1],
                                                  np.int32)}, 1)
  np.testing.assert_array_equal(kept["index"], [0, 1, 3, 4])
  np.testing.assert_array_equal(held["index"], [2, 5])


def test_features_are_the_heads_input():
  model = build_model(tiny_model_config("mlp"), 3)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
  variables = model.init(jax.random.PRNGKey(0), x)
  features = feature_lib.features(model.apply, variables, x)
  head = variables["params"]["head"]
  np.testing.assert_allclose(features @ head["kernel"] + head["bias"],
                             model.apply(variables, x), rtol=1e-5,
                             atol=1e-5)


def _sequence_config(**overrides):
  return small_config(**{
      "methods": "er,icarl,bic,finetune", "train.epochs": 2,
      "train.checkpoint_every_epochs": 2, "outputs.plots": False,
      "memory.size": 120,
      "classes.groups": ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9)), **overrides})


def _memory_file(workdir, name, step):
  with open(os.path.join(workdir, name, f"step_{step}", "memory.json")) as f:
    return json.load(f)


def test_er_and_icarl_keep_old_classes_and_resume_exactly(tmp_path):
  config = _sequence_config()
  first = str(tmp_path / "first")
  results = train.run(config, first)["methods"]
  finetune_old = results["finetune"]["final_acc_old"]
  assert finetune_old < 0.1
  for name in ("er", "icarl", "bic"):
    assert results[name]["final_acc_old"] > finetune_old + 0.5, name
    for step, num_seen in ((1, 7), (2, 10)):
      stored = _memory_file(first, name, step)
      labels = np.array(stored["label"])
      # Within budget, only seen classes, quota 120 // seen each.
      assert len(labels) <= 120 and set(labels) == set(range(num_seen))
      assert np.all(np.bincount(labels) == 120 // num_seen)
  record = results["icarl"]["steps"][2]
  assert record["classifier"] == "nme" and "logits_acc_all" in record
  record = results["bic"]["steps"][2]
  # Held out: 10% of each old class's 17 exemplars (2) and 2 rows of each
  # new class, never trained on.
  assert record["bic_held_out"] == 2 * 10
  assert record["num_train_examples"] == results["er"]["steps"][2][
      "num_train_examples"] - 2 * 3
  # Step 2 trains on step 1's memory: each old class's first exemplars.
  step_1, step_2 = (_memory_file(first, "er", s) for s in (1, 2))
  for label in range(7):
    old = [i for i, l in zip(step_1["index"], step_1["label"]) if l == label]
    new = [i for i, l in zip(step_2["index"], step_2["label"]) if l == label]
    assert new == old[:12]
  # Killed after step 1: step 2 starts from the memory read back from
  # step_1/memory.json and ends exactly as before.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(first, resumed)
  os.remove(os.path.join(resumed, "results.json"))
  shutil.rmtree(os.path.join(resumed, "er", "step_2"))
  again = train.run(config, resumed)["methods"]
  assert again["er"]["final_acc_all"] == results["er"]["final_acc_all"]
  assert _memory_file(resumed, "er", 2) == step_2
  # A memory selected with other settings is refused by name.
  shutil.rmtree(os.path.join(resumed, "er", "step_2"))
  os.remove(os.path.join(resumed, "results.json"))
  path = os.path.join(resumed, "er", "step_1", "memory.json")
  with open(path, "w") as f:
    json.dump(dict(step_1, selection="random"), f)
  with pytest.raises(ValueError, match="selection"):
    train.run(config, resumed)


@pytest.mark.parametrize("override,key", [
    ({"memory.size": 0}, "config.memory.size"),
    ({"memory.size": -5}, "config.memory.size"),
    ({"memory.size": 7}, "config.memory.size"),  # < 10 classes
    ({"memory.selection": "best"}, "config.memory.selection"),
    ({"memory.per_class": -1}, "config.memory.per_class"),
    ({"methods": "bic", "memory.size": 15}, "config.memory.size"),
    ({"methods": "bic", "bic.val_fraction": 1.0}, "config.bic.val_fraction"),
])
def test_bad_memory_config_fails_before_the_workdir(tmp_path, override, key):
  config = _sequence_config(**override)
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    train.run(config, workdir)
  assert not os.path.exists(workdir)
