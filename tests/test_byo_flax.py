"""Bring your own classifier (issue 13): a Flax model written outside
cil_jax (tests/byo_models.py: its own names, inputs in [0, 1], an inverted
``deterministic`` keyword), trained with plain optax, saved with plain orbax
or msgpack, extended through the CLI; and every bad teacher refused before
a workdir is claimed, with a message naming the key and the fix."""

import json
import os
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest
from flax import traverse_util

import byo_models
from cil_jax.classifier import checkpoint
from cil_jax import config_files
from cil_jax.classifier import equivalence
from cil_jax.classifier import inspect
from cil_jax import partition
from cil_jax.classifier import teacher
from cil_jax.data import source as data_source
from cil_jax.models import foreign
from cil_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
OLD = list(range(6))
MODULE = "byo_models:DigitNet"
add_classes = config_files.from_checkout("add_classes")


@pytest.fixture(scope="module")
def plain_teacher(tmp_path_factory):
  """``(orbax dir, msgpack file, params, test accuracy)`` of DigitNet
  trained on digits 0-5 with plain optax."""
  root = tmp_path_factory.mktemp("teacher")
  module, params = byo_models.trained_digitnet(tuple(OLD))
  byo_models.save_plain(str(root / "orbax"), params)
  with open(root / "net.msgpack", "wb") as f:
    f.write(flax.serialization.to_bytes(params))
  return (str(root / "orbax"), str(root / "net.msgpack"),
          jax.device_get(params), byo_models.accuracy(module, params, OLD))


def _config(checkpoint_path, **teacher_flags):
  config = add_classes.get_config()
  config.teacher.checkpoint = checkpoint_path
  config.teacher.module = MODULE
  config.teacher.train_kwarg = "!deterministic"
  config.teacher.classes = tuple(OLD)
  config.teacher.input_pixels = "unit"
  config.teacher.input_normalization = "none"
  for key, value in teacher_flags.items():
    config.teacher[key] = value
  config.classes.groups = ((6, 7, 8, 9),)
  config.methods = "eps_kd"
  config.train.epochs = 1
  config.train.num_devices = 1
  return config


def test_cli_extends_a_plain_orbax_flax_model(plain_teacher, tmp_path):
  orbax_dir, _, params, accuracy = plain_teacher
  workdir = tmp_path / "wd"
  flags = {"teacher.checkpoint": orbax_dir, "teacher.module": MODULE,
           "teacher.train_kwarg": "!deterministic",
           "teacher.classes": "(0,1,2,3,4,5)",
           "teacher.class_names": "zero,one,two,three,four,five",
           "teacher.input_pixels": "unit",
           "teacher.input_normalization": "none",
           "classes.groups": "((6,7,8,9),)", "methods": "eps_kd",
           "eps_kd.layers": "new_rows", "eps_kd.eps": 0.1,
           "optim.learning_rate": 0.01, "train.epochs": 4,
           "train.num_devices": 1}
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
         "PYTHONPATH": os.pathsep.join(
             [ROOT, TESTS, os.environ.get("PYTHONPATH", "")])}
  env.pop("XLA_FLAGS", None)
  done = subprocess.run(
      [sys.executable, "-m", "cil_jax.main", "--workdir", str(workdir),
       "--config", os.path.join(ROOT, "configs", "add_classes.py")]
      + [f"--config.{k}={v}" for k, v in flags.items()],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  steps = results["methods"]["eps_kd"]["steps"]
  # The given model, fed [0, 1] pixels by the pipeline, scores what its
  # author measured.
  assert steps[0]["acc_all"] == pytest.approx(accuracy, abs=1e-6)
  # Frozen features, new columns only: new classes learnt (0.47 here,
  # chance 0.25 among them), old ones kept.
  assert steps[1]["acc_new"] > 0.35 and steps[1]["acc_old"] > 0.5
  saved = str(workdir / "eps_kd" / "step_1" / "classifier")
  meta = checkpoint.read_metadata(saved)
  assert meta["model"]["module"] == MODULE
  assert meta["head_path"] == "cls_logits"
  assert meta["class_order"] == list(range(10))
  assert meta["input"] == {"pixels": "unit", "normalization": "none"}
  variables, _ = checkpoint.load_classifier(
      saved, jax.tree.map(np.asarray, {"params": {
          **params, "cls_logits": {
              "kernel": np.zeros((32, 10), np.float32),
              "bias": np.zeros((10,), np.float32)}}}))
  got = traverse_util.flatten_dict(variables["params"], sep="/")
  want = traverse_util.flatten_dict(params, sep="/")
  # new_rows on the module's own names: everything but the new columns is
  # the teacher's, bit for bit.
  assert sorted(got) == sorted(want) == [
      "cls_logits/bias", "cls_logits/kernel", "encoder/proj/bias",
      "encoder/proj/kernel", "mixer/bias", "mixer/kernel"]
  for path, value in want.items():
    np.testing.assert_array_equal(got[path][..., :6] if "cls" in path
                                  else got[path], value)
  assert np.abs(got["cls_logits/kernel"][:, 6:]).min() > 0


def test_msgpack_teacher_loads_through_the_door(plain_teacher):
  """A flax.serialization file gives the same teacher as plain orbax."""
  _, msgpack_file, params, _ = plain_teacher
  dataset = data_source.Source(_config(msgpack_file).dataset).info
  variables, meta, model = teacher.load(_config(msgpack_file), dataset)
  for path, value in traverse_util.flatten_dict(params, sep="/").items():
    np.testing.assert_array_equal(
        traverse_util.flatten_dict(variables["params"], sep="/")[path], value)
  assert meta["head_path"] == "cls_logits" and meta["class_order"] == OLD
  assert model.layers == ("encoder/proj", "mixer", "cls_logits")


def _refused(config, tmp_path, error, words):
  with pytest.raises(error, match=words):
    train.run(config, str(tmp_path / "wd"))
  assert not os.path.exists(tmp_path / "wd")


@pytest.mark.parametrize("flags, error, words", [
    ({"input_pixels": "", "input_normalization": ""},
     checkpoint.MetadataError,
     r"config.teacher does not say what input.*never guesses.*"
     r"--config.teacher.input_pixels=unit"),
    ({"input_normalization": "mean_std"}, ValueError,
     r"config.teacher.input_\*.*'mean_std' needs 'mean'"),
    ({"head_path": "nope"}, ValueError,
     r"head path 'nope' is not an nn.Dense.*'encoder/proj' \(32 outputs\)"),
    ({"head_path": "mixer"}, ValueError,
     r"the Dense at 'mixer' has 32 outputs but the teacher has 6 classes"),
    ({"classes": (0, 1, 2, 3, 4)}, ValueError,
     r"outputs 6 logits but config.teacher gives the teacher 5 classes"),
    ({"classes": ()}, ValueError,
     r"config.teacher.classes must list the dataset class id"),
    ({"module": "byo_models:TwinHeads", "train_kwarg": ""}, ValueError,
     r"cannot tell the head: 2 nn.Dense layers have 6 outputs "
     r"\(\['bottleneck', 'out'\]\).*--config.teacher.head_path"),
    ({"module": "byo_models:Nothing"}, ValueError,
     r"config.teacher.module='byo_models:Nothing' cannot be imported"),
    ({"module_kwargs": "{width: 3"}, ValueError,
     r"config.teacher.module_kwargs=.* is not JSON"),
    ({"class_names": "a,b"}, ValueError,
     r"class_names lists 2 names but class_order lists 6"),
], ids=["no-input-spec", "mean-std-without-values", "wrong-head-path",
        "head-path-not-final", "wrong-class-count", "no-classes",
        "ambiguous-head", "not-importable", "bad-kwargs", "names-count"])
def test_bad_teacher_is_refused_before_the_workdir(plain_teacher, tmp_path,
                                                   flags, error, words):
  _refused(_config(plain_teacher[0], **flags), tmp_path, error, words)


def test_bfloat16_is_refused_for_a_module_of_ones_own(plain_teacher,
                                                      tmp_path):
  config = _config(plain_teacher[0])
  config.train.dtype = "bfloat16"
  _refused(config, tmp_path, ValueError,
           r"config.train.dtype='bfloat16'.*is a model of your own.*Set "
           r"--config.train.dtype=float32")


def test_known_class_is_named(plain_teacher, tmp_path):
  config = _config(plain_teacher[0], class_names="a,b,c,d,e,f")
  config.classes.groups = ((5, 6),)
  _refused(config, tmp_path, ValueError,
           r"Classes \[5\] \(5: 'f'\) of config.classes.groups are already "
           r"classes of the teacher")


def test_log_probabilities_fail_the_step_start_check(tmp_path):
  """Widening a module that normalises its logits changes the old ones."""
  module = byo_models.LogProbNet()
  params = module.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1)))
  byo_models.save_plain(str(tmp_path / "ckpt"), params["params"])
  config = _config(str(tmp_path / "ckpt"), module="byo_models:LogProbNet",
                   train_kwarg="")
  _refused(config, tmp_path, equivalence.TeacherMismatchError,
           r"logits for the old classes differ from the teacher's")


def _as_classifier(plain_teacher, path, **meta):
  metadata = {
      "model": {"name": "flax", "module": MODULE, "kwargs": {},
                "train_kwarg": "!deterministic"},
      "adapter_dim": 0, "num_classes": 6, "class_order": OLD,
      "input_shape": [8, 8, 1], "head_path": "cls_logits",
      "input": {"pixels": "unit", "normalization": "none"},
      "accuracy": plain_teacher[3], **meta}
  checkpoint.save_classifier(path, {"params": plain_teacher[2]}, metadata)
  return path


def test_wrong_input_spec_fails_against_recorded_accuracy(plain_teacher,
                                                          tmp_path):
  """The issue's silent 84.8% -> 60.9%: a model fed inputs it was not
  trained on (here [0, 1] pixels shifted by -1)."""
  path = _as_classifier(plain_teacher, str(tmp_path / "c"), input={
      "pixels": "unit", "normalization": "mean_std", "mean": [1.0],
      "std": [1.0]})
  config = _config(path, module="", classes=(), input_pixels="",
                   input_normalization="")
  _refused(config, tmp_path, equivalence.TeacherMismatchError,
           r"The teacher scores .* but the metadata of .* records "
           r"9\d\.\d%.*input spec")


def test_metadata_without_head_path_names_the_key(plain_teacher, tmp_path):
  path = _as_classifier(plain_teacher, str(tmp_path / "c"))
  meta_path = os.path.join(path, checkpoint.METADATA_FILE)
  with open(meta_path) as f:
    meta = json.load(f)
  del meta["head_path"]
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  config = _config(path, module="", classes=())
  _refused(config, tmp_path, checkpoint.MetadataError,
           rf"{meta_path} lacks the key\(s\) 'head_path' \(the slash path "
           rf"of the final Dense")


def test_plain_orbax_without_module_says_what_to_set(plain_teacher, tmp_path):
  config = _config(plain_teacher[0], module="")
  _refused(config, tmp_path, checkpoint.DamagedCheckpointError,
           r"metadata/metadata is missing.*--config.teacher.module")



def test_inspect_tells_what_a_checkpoint_holds(plain_teacher, tmp_path,
                                               capsys):
  path = _as_classifier(plain_teacher, str(tmp_path / "c"),
                        class_names=["zero", "one", "two", "three", "four",
                                     "five"])
  inspect.main(["inspect", path])
  out = capsys.readouterr().out
  for words in (f"model: Flax module {MODULE}",
                "classes (6): 0 'zero', 1 'one',",
                "input: shape [8, 8, 1], pixels in [0, 1], not normalised",
                "head: cls_logits",
                f"accuracy: {plain_teacher[3]:.4f} (recorded in the metadata)",
                "params/cls_logits/kernel", "[32, 6]", "(3,334 values)",
                "extendable: yes"):
    assert words in out
  with pytest.raises(SystemExit) as exit_:
    inspect.main(["inspect", plain_teacher[0]])
  assert exit_.value.code == 1
  out = capsys.readouterr().out
  assert "format: plain parameters" in out and "[64, 32]" in out
  assert "extendable: no: it has no cil_jax metadata" in out
  assert "--config.teacher.classes" in out


def test_presets_on_the_modules_own_names():
  """last_k in the order the module calls its layers (parameter trees come
  back sorted by name), regex over its own paths, adapter refused."""
  denses, order, width = foreign.trace(byo_models.DigitNet(), (8, 8, 1),
                                       "!deterministic")
  assert width == 6 and denses == {"encoder/proj": 32, "mixer": 32,
                                   "cls_logits": 6}
  model = foreign.FlaxClassifier(byo_models.DigitNet(), "cls_logits", 10,
                                 "!deterministic")
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          np.zeros((1, 8, 8, 1), np.float32))["params"]
  assert params["cls_logits"]["kernel"].shape == (32, 10)
  layers = foreign.layer_order(params, order)
  assert layers == ("encoder/proj", "mixer", "cls_logits")
  rules = partition.preset_rules("last_k", params, 2, layout=(
      "cls_logits", layers))
  labels = traverse_util.flatten_dict(partition.trainable_labels(
      params, rules), sep="/")
  assert [p for p, label in sorted(labels.items())
          if label == partition.TRAINABLE] == [
              "cls_logits/bias", "cls_logits/kernel", "mixer/bias",
              "mixer/kernel"]
  rules = partition.preset_rules("regex", params, trainable_regex=(
      "(mixer|cls_logits)/.*"), layout=("cls_logits", layers))
  labels = traverse_util.flatten_dict(partition.trainable_labels(
      params, rules), sep="/")
  assert labels["encoder/proj/kernel"] == partition.FROZEN
  assert labels["mixer/kernel"] == partition.TRAINABLE
  with pytest.raises(ValueError, match="Preset 'adapter' .* needs a cil_jax "
                     "model"):
    partition.preset_rules("adapter", params, layout=("cls_logits", layers))


def test_metadata_and_config_classes_conflict(plain_teacher, tmp_path):
  path = _as_classifier(plain_teacher, str(tmp_path / "c"))
  config = _config(path, module="", input_pixels="", input_normalization="")
  _refused(config, tmp_path, ValueError,
           r"config.teacher.classes describe a checkpoint without cil_jax "
           r"metadata, but .* has its own")


def test_teacher_keys_without_a_checkpoint_are_refused(tmp_path):
  config = _config("")
  _refused(config, tmp_path, ValueError,
           r"config.teacher.module is set but config.teacher.checkpoint is "
           r"not")
