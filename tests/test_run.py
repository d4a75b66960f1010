"""End to end on real digits: methods, results, teacher checkpoints, errors."""

import json
import os
import shutil

import numpy as np
import pytest

from cil_jax.classifier import checkpoint
from cil_jax import train
from cil_jax.data import digits
from cil_jax import config_files
from tests.helpers import small_config

add_classes = config_files.from_checkout("add_classes")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("default"))
  # All 8 fake CPU devices (tests/conftest.py): the real data-parallel path.
  config = small_config(**{"train.epochs": 15, "train.num_devices": 0})
  return workdir, train.run(config, workdir)


def test_eps_kd_keeps_old_classes_that_finetune_forgets(default_run):
  workdir, results = default_run
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  eps_kd = results["methods"]["eps_kd"]
  finetune = results["methods"]["finetune"]
  joint = results["methods"]["joint"]
  # Fine-tuning on 5-9 alone forgets 0-4 almost entirely; eps-KD does not.
  assert finetune["final_acc_old"] < 0.1
  assert eps_kd["final_acc_old"] > 0.6
  assert eps_kd["final_acc_all"] > finetune["final_acc_all"] + 0.25
  assert joint["final_acc_all"] > 0.9
  assert eps_kd["forgetting"] < finetune["forgetting"] - 0.5


def test_steps_train_on_new_classes_only_and_evaluate_all_seen(default_run):
  _, results = default_run
  train_labels = digits.load()["train"][1]
  num_old_train = int(np.sum(train_labels < 5))
  assert num_old_train == 675
  for name, r in results["methods"].items():
    step0, step1 = r["steps"]
    assert step0["num_train_examples"] == num_old_train
    assert step1["num_test_examples"] == 450  # all ten classes' test images
    # Only the new classes' training images, except the joint oracle.
    assert step1["num_train_examples"] == (1347 if name == "joint"
                                           else 1347 - num_old_train)
    assert len(r["accuracy_matrix"][1]) == 2
  # eps auto = k / (k + m) = 5 / 10.
  assert results["methods"]["eps_kd"]["steps"][1]["eps"] == pytest.approx(0.5)
  assert results["methods"]["finetune"]["steps"][1]["eps"] == 0.0


def test_rerun_reuses_finished_steps_and_refuses_another_config(default_run):
  workdir, results = default_run
  config = small_config(**{"train.epochs": 15, "train.num_devices": 0})
  again = train.run(config, workdir)
  assert again == results
  # Killed between saving a step's classifier and writing its result: the
  # rerun evaluates the saved classifier instead of failing or retraining.
  os.remove(os.path.join(workdir, "eps_kd", "step_1", "result.json"))
  again = train.run(config, workdir)
  assert again["methods"]["eps_kd"]["final_acc_all"] == (
      results["methods"]["eps_kd"]["final_acc_all"])
  # What a process writes besides results, or how it runs, is not part of
  # the run: a rerun may change it, and config.json stays the first run's.
  with open(os.path.join(workdir, "config.json")) as f:
    stored = f.read()
  neutral = small_config(**{"train.epochs": 15, "train.num_devices": 0,
                            "outputs.plots": False,
                            "runtime.compilation_cache_dir": ""})
  assert train.run(neutral, workdir) == results
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == stored
  other = small_config(**{"train.epochs": 3, "train.num_devices": 0,
                          "outputs.plots": False})
  with pytest.raises(ValueError,
                     match=r"different config \(changed: \['train.epochs'\]"):
    train.run(other, workdir)


def test_add_classes_to_a_given_classifier(default_run, tmp_path):
  workdir, results = default_run
  teacher = os.path.join(workdir, "base", "step_0", "classifier")
  config = add_classes.get_config()
  config.teacher.checkpoint = teacher
  config.methods = "eps_kd,finetune"
  config.classes.groups = ((7, 8), (9,))
  config.train.epochs = 10
  config.train.num_devices = 1
  got = train.run(config, str(tmp_path / "add"))
  assert got["class_sequence"] == [[0, 1, 2, 3, 4], [7, 8], [9]]
  eps_kd = got["methods"]["eps_kd"]
  # Step 0 is the given classifier, evaluated as it was trained.
  base_acc = results["methods"]["eps_kd"]["steps"][0]["acc_all"]
  assert eps_kd["steps"][0]["acc_all"] == pytest.approx(base_acc)
  assert [s["num_old"] for s in eps_kd["steps"]] == [0, 5, 7]
  assert eps_kd["final_acc_old"] > got["methods"]["finetune"]["final_acc_old"]


@pytest.mark.parametrize("override, message", [
    ({"model.hidden_sizes": (32,)}, r"config.model.hidden_sizes=\(32,\)"),
    ({"model.name": "cnn"}, r"checkpoint's model is 'mlp'"),
    ({"classes.groups": ((4, 5),)},
     r"Classes \[4\] of config.classes.groups are already classes of the "
     r"teacher"),
])
def test_teacher_mismatch_fails_before_training(default_run, tmp_path,
                                                override, message):
  workdir, _ = default_run
  config = add_classes.get_config()
  config.teacher.checkpoint = os.path.join(workdir, "base", "step_0",
                                           "classifier")
  for key, value in override.items():
    section, leaf = key.split(".")
    config[section][leaf] = value
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path / "bad"))
  # Nothing trained, and the workdir is not bound to the rejected config.
  assert not os.path.exists(tmp_path / "bad" / "config.json")


def test_teacher_of_another_dataset_is_refused(default_run, tmp_path):
  workdir, _ = default_run
  teacher = tmp_path / "teacher"
  shutil.copytree(os.path.join(workdir, "base", "step_0", "classifier"),
                  teacher)
  meta_path = teacher / checkpoint.METADATA_FILE
  meta = json.loads(meta_path.read_text())
  meta["dataset"] = "mnist"
  meta_path.write_text(json.dumps(meta))
  config = add_classes.get_config()
  config.teacher.checkpoint = str(teacher)
  with pytest.raises(ValueError, match="trained on 'mnist' but "
                     "config.dataset.name='digits'"):
    train.run(config, str(tmp_path / "wd"))


def test_missing_teacher_checkpoint_says_what_a_classifier_is(tmp_path):
  config = add_classes.get_config()
  config.teacher.checkpoint = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    train.run(config, str(tmp_path / "wd"))


@pytest.mark.parametrize("override, message", [
    ({"eps_kd.eps": "1.5"}, r"eps=1.5 is outside \[0, 1\]"),
    ({"eps_kd.eps": "lots"}, r"neither 'auto' nor a number"),
    ({"eps_kd.kd_temperature": 0.0}, r"kd_temperature=0.0 must be > 0"),
    ({"eps_kd.layers": "middle"}, r"layers='middle'"),
    ({"model.name": "vit"}, r"model.name='vit'"),
    ({"methods": "eps_kd,gdumb"}, r"Unknown method 'gdumb'"),
    ({"train.batch_size": 30, "train.num_devices": 0},
     r"batch_size=30 must be a positive multiple of the 8 devices"),
    ({"classes.groups": ((0, 1), ())}, r"group 1 is empty"),
    ({"classes.groups": ((0, 1), (1, 2))}, r"class 1 appears twice"),
    ({"classes.groups": ((0, 1), (10,))}, r"class id 10 in group 1 is outside"),
    ({"eps_kd.layers": "last_k", "eps_kd.last_k": 9}, r"last_k=9 is out of"),
])
def test_bad_config_values_fail_with_a_clear_message(tmp_path, override,
                                                      message):
  config = small_config(**override)
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path))


def test_nan_loss_stops_with_a_clear_error_and_keeps_no_result(tmp_path):
  config = small_config(**{"optim.learning_rate": 1e30, "optim.name": "sgd",
                           "optim.schedule": "constant"})
  from cil_jax.step import fit  # pylint: disable=import-outside-toplevel
  with pytest.raises(fit.DivergedError, match="Lower config.optim"):
    train.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "base" / "step_0" / "result.json")
  assert not os.path.exists(tmp_path / "results.json")


def test_layer_presets_add_classes_to_the_same_teacher(default_run, tmp_path):
  workdir, _ = default_run
  accuracies = {}
  for layers in ("head", "new_rows", "adapter", "last_k"):
    config = add_classes.get_config()
    config.teacher.checkpoint = os.path.join(workdir, "base", "step_0",
                                             "classifier")
    config.methods = "eps_kd"
    config.eps_kd.layers = layers
    config.train.epochs = 15
    config.train.num_devices = 1
    r = train.run(config, str(tmp_path / layers))["methods"]["eps_kd"]
    accuracies[layers] = (r["final_acc_old"], r["final_acc_new"])
    assert r["steps"][1]["layers"] == layers
  # Every preset keeps most of the old classes and learns the new ones well
  # beyond chance (1 in 10); head-only presets learn them least, on features
  # trained for 0-4 only.
  assert min(old for old, _ in accuracies.values()) > 0.6, accuracies
  assert min(new for _, new in accuracies.values()) > 0.5, accuracies
