"""A Keras 3 model (JAX backend) as teacher (issue 13): trained with
model.fit, saved as .keras, extended by cil_jax through Keras' stateless
API, and written back as a .keras file that Keras loads and that predicts
the ten classes exactly as cil_jax evaluated it."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")

import byo_models  # pylint: disable=g-import-not-at-top,wrong-import-position
from cil_jax import api  # pylint: disable=wrong-import-position
from cil_jax.classifier import checkpoint  # pylint: disable=wrong-import-position
from cil_jax import config_files  # pylint: disable=wrong-import-position
from cil_jax.classifier import inspect  # pylint: disable=wrong-import-position
from cil_jax import train  # pylint: disable=wrong-import-position

OLD = list(range(6))


def test_keras_model_extended_and_written_back(tmp_path):
  if keras.backend.backend() != "jax":
    pytest.skip("Keras was imported on another backend in this process")
  keras.utils.set_random_seed(0)
  images, labels = byo_models.digits_unit(OLD)
  model = keras.Sequential([
      keras.Input((8, 8, 1)), keras.layers.Flatten(),
      keras.layers.Dense(32, activation="relu", name="hidden"),
      keras.layers.Dense(6, name="scores")])
  model.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(images, labels, batch_size=64, epochs=8, verbose=0)
  test_images, test_labels = byo_models.digits_unit(OLD, "test")
  accuracy = np.mean(np.argmax(model.predict(test_images, verbose=0), -1)
                     == test_labels)
  model.save(str(tmp_path / "net.keras"))

  config = config_files.from_checkout("add_classes").get_config()
  config.teacher.checkpoint = str(tmp_path / "net.keras")
  config.teacher.classes = tuple(OLD)
  config.teacher.input_pixels = "unit"
  config.teacher.input_normalization = "none"
  config.classes.groups = ((6, 7, 8, 9),)
  config.methods = "eps_kd"
  config.eps_kd.layers = "regex"
  config.eps_kd.trainable_regex = "scores/.*"  # Keras' own names
  config.train.epochs = 2
  config.train.num_devices = 1
  results = train.run(config, str(tmp_path / "wd"))
  steps = results["methods"]["eps_kd"]["steps"]
  assert steps[0]["acc_all"] == pytest.approx(accuracy, abs=1e-6)

  saved = tmp_path / "wd" / "eps_kd" / "step_1" / "classifier"
  meta = checkpoint.read_metadata(str(saved))
  assert meta["model"] == {"name": "keras"}
  assert meta["head_path"] == "scores"
  extended = keras.saving.load_model(str(saved / "model.keras"))
  all_images, all_labels = byo_models.digits_unit(list(range(10)), "test")
  logits = extended.predict(all_images, verbose=0)
  assert logits.shape == (len(all_labels), 10)
  # The .keras file is the classifier cil_jax evaluated.
  assert np.mean(np.argmax(logits, -1) == all_labels) == pytest.approx(
      steps[1]["acc_all"], abs=1e-6)
  # Only the head learnt; its old columns moved, the hidden layer did not.
  np.testing.assert_array_equal(extended.get_layer("hidden").kernel.numpy(),
                                model.get_layer("hidden").kernel.numpy())
  # api.load gives the same classifier from its orbax variables.
  apply_fn, variables, _ = api.load(str(saved))
  np.testing.assert_allclose(apply_fn(variables, all_images), logits,
                             rtol=1e-5, atol=1e-5)
  # inspect reads the .keras file itself.
  lines, problems = inspect.describe(str(tmp_path / "net.keras"))
  assert "input [8, 8, 1], 6 outputs" in lines[1]
  assert any("scores/kernel" in line and "[32, 6]" in line for line in lines)
  assert problems and "--config.teacher.classes" in problems[0]
