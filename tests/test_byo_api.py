"""The Python API (cil_jax/api.py): the README's snippet, run verbatim,
and a Flax module given as (module, params) with class names flowing into
the extended classifier's metadata."""

import os
import re

import jax
import numpy as np
import pytest
from flax import traverse_util

import byo_models
from cil_jax import api
from cil_jax import api_inputs
from cil_jax.classifier import checkpoint
from cil_jax import train
from helpers import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_snippet():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  match = re.search(r"<!-- README snippet: tests/test_byo_api.py runs it "
                    r"verbatim -->\n```python\n(.*?)```", text, re.S)
  assert match, "README snippet not found"
  return match.group(1)


def test_readme_snippet_runs_verbatim(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  # The snippet's teacher: C_A on digits 0-4, as the default run's step 0.
  base = small_config(**{"classes.groups": ((0, 1, 2, 3, 4),),
                         "train.epochs": 1, "methods": "finetune"})
  train.run(base, "runs/default")
  snippet = _readme_snippet()
  assert 12 <= len(snippet.strip().splitlines()) <= 18
  exec(compile(snippet, "README.md", "exec"), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.strip().splitlines()[-1]
  accuracy = float(printed.split()[0])
  assert 0.6 < accuracy <= 1.0  # digits 0-9 after adding 5-9
  predicted = [int(v) for v in re.findall(r"\d+", printed.split(" ", 1)[1])]
  assert len(predicted) == 8
  meta = checkpoint.read_metadata("runs/digits_0_9")
  assert meta["class_order"] == list(range(10))
  assert meta["class_names"] == [None] * 5 + ["five", "six", "seven",
                                              "eight", "nine"]
  # Saved and loaded: the same predictions as in memory.
  apply_fn, variables, _ = api.load("runs/digits_0_9")
  assert callable(apply_fn) and "params" in variables


def test_module_and_params_teacher_with_names(tmp_path):
  old = list(range(6))
  module, params = byo_models.trained_digitnet(tuple(old))
  from cil_jax.data import digits  # pylint: disable=g-import-not-at-top
  data = digits.load()
  (x, y), (tx, ty) = data["train"], data["test"]
  new = y >= 6
  extended = api.add_classes(
      teacher=(module, params), train=(x[new], y[new]), test=(tx, ty),
      workdir=str(tmp_path / "wd"), pixel_max=16, method="eps_kd",
      teacher_classes=old, teacher_train_kwarg="!deterministic",
      teacher_input={"pixels": "unit", "normalization": "none"},
      class_names={6: "six", 7: "seven", 8: "eight", 9: "nine"},
      settings={"train.epochs": 1, "eps_kd.layers": "head"})
  meta = extended.metadata
  assert meta["model"]["module"] == "byo_models:DigitNet"
  assert meta["head_path"] == "cls_logits"
  assert meta["class_names"][6:] == ["six", "seven", "eight", "nine"]
  # The given model, through the door, scores what plain Flax measures.
  assert extended.metrics["steps"][0]["acc_all"] == pytest.approx(
      byo_models.accuracy(module, params, old), abs=1e-6)
  # predict() is the metrics' model: its accuracy on the test split.
  assert np.mean(extended.predict(tx) == ty) == pytest.approx(
      extended.metrics["final_acc_all"], abs=1e-6)
  # Preset head on the module's own names: the rest is the teacher's.
  got = traverse_util.flatten_dict(extended.variables["params"], sep="/")
  for path, value in traverse_util.flatten_dict(
      jax.device_get(params), sep="/").items():
    if not path.startswith("cls_logits"):
      np.testing.assert_array_equal(got[path], value)
  path = str(tmp_path / "saved")
  extended.save(path)
  assert checkpoint.read_metadata(path)["class_names"] == meta["class_names"]


def test_known_class_in_training_data_is_named(tmp_path):
  module = byo_models.DigitNet()
  params = module.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1)))
  from cil_jax.data import digits  # pylint: disable=g-import-not-at-top
  (x, y), (tx, ty) = digits.load()["train"], digits.load()["test"]
  keep = y >= 5
  with pytest.raises(ValueError, match=r"train holds classes \[5\] that the "
                     r"teacher already knows \(its classes: \[0, 1, 2, 3, 4, "
                     r"5\]\)"):
    api.add_classes(
        teacher=(module, params), train=(x[keep], y[keep]), test=(tx, ty),
        workdir=str(tmp_path / "wd"), pixel_max=16,
        teacher_classes=list(range(6)), teacher_train_kwarg="!deterministic",
        teacher_input={"pixels": "unit", "normalization": "none"})
  assert not os.path.exists(tmp_path / "wd")  # nothing written


@pytest.mark.parametrize("split, words", [
    ("no-channel", r"train has images of shape \(\d+, 8, 8\).*channel axis"),
    ("no-old-test", r"test has no example of classes \[0, 1, 2, 3, 4, 5\]"),
], ids=["no-channel", "no-old-test"])
def test_bad_arrays_are_named(tmp_path, split, words):
  from cil_jax.data import digits  # pylint: disable=g-import-not-at-top
  (x, y), (tx, ty) = digits.load()["train"], digits.load()["test"]
  module = byo_models.DigitNet()
  params = module.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1)))
  train_split = (x[y >= 6][..., 0] if split == "no-channel" else x[y >= 6],
                 y[y >= 6])
  test_split = (tx[ty >= 6], ty[ty >= 6]) if split == "no-old-test" else (
      tx, ty)
  with pytest.raises(ValueError, match=words):
    api.add_classes(
        teacher=(module, params), train=train_split, test=test_split,
        workdir=str(tmp_path / "wd"), pixel_max=16,
        teacher_classes=list(range(6)), teacher_train_kwarg="!deterministic",
        teacher_input={"pixels": "unit", "normalization": "none"})
  assert not os.path.exists(tmp_path / "wd")  # nothing written


class _Dataset:
  """What api reads of a tf.data.Dataset (importing TensorFlow here costs
  5-20 s; the same test with real tf.data datasets passed when written)."""

  def __init__(self, elements):
    self.elements = elements

  def as_numpy_iterator(self):
    return iter(self.elements)


def test_tf_data_splits_become_arrays():
  """Batched or not, pairs or dicts: the same numpy arrays."""
  images = np.arange(5 * 2 * 2 * 1, dtype=np.uint8).reshape(5, 2, 2, 1)
  labels = np.array([3, 1, 4, 1, 5])
  pairs = _Dataset(list(zip(images, labels)))
  batched_dicts = _Dataset([{"image": images[i:i + 2],
                             "label": labels[i:i + 2]} for i in (0, 2, 4)])
  for ds in (pairs, batched_dicts):
    got_images, got_labels = api_inputs.arrays("train", ds)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_image_folder_by_class_name(tmp_path):
  """train/<name>/*.png of new classes and test/<name>/ of all: a folder
  is the teacher's class of its name (here given by folder_class_ids),
  else a new class numbered after the teacher's."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from cil_jax.data import digits  # pylint: disable=g-import-not-at-top
  old = list(range(6))
  module, params = byo_models.trained_digitnet(tuple(old))
  data = digits.load()
  words = ["zero", "one", "two", "three", "four", "five", "six", "seven",
           "eight", "nine"]
  for split, (x, y) in (("train", data["train"]), ("test", data["test"])):
    for i, (image, label) in enumerate(zip(x, y)):
      if split == "train" and label < 6:
        continue
      folder = tmp_path / "photos" / split / words[label]
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.round(image[..., 0] * 255 / 16).astype(np.uint8),
                      mode="L").save(folder / f"{i}.png")
  extended = api.add_classes(
      teacher=(module, params), train=str(tmp_path / "photos"),
      workdir=str(tmp_path / "wd"), teacher_classes=old,
      teacher_train_kwarg="!deterministic",
      teacher_input={"pixels": "unit", "normalization": "none"},
      folder_class_ids={w: i for i, w in enumerate(words[:6])},
      settings={"train.epochs": 1, "eps_kd.layers": "head"})
  meta = extended.metadata
  # New folders in sorted name order: eight, nine, seven, six -> 6..9.
  assert meta["class_order"] == list(range(10))
  assert meta["class_names"][6:] == ["eight", "nine", "seven", "six"]
  step = extended.metrics["steps"][1]
  assert step["num_train_examples"] == int(np.sum(data["train"][1] >= 6))
  assert step["acc_old"] > 0.5 and 0.0 <= step["acc_new"] <= 1.0
  with pytest.raises(ValueError, match="has no train/ directory"):
    api.add_classes(teacher=(module, params), train=str(tmp_path),
                    workdir=str(tmp_path / "wd2"), teacher_classes=old,
                    teacher_input={"pixels": "unit",
                                   "normalization": "none"})
