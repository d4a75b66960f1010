"""A Keras 3 model as C_A (``models.keras_model``): a ``.keras`` file with
its classes and input spec in the config, or a cil_jax classifier of a
Keras model (its ``model.keras`` beside the variables). ``teacher.load``
is the door; everything here runs before the workdir is claimed."""

import os

import jax
import jax.numpy as jnp

from cil_jax.classifier import checkpoint
from cil_jax.models import foreign
from cil_jax.models import keras_model


def load(config, dataset, meta, meta_path):
  """``(variables, metadata, model)`` of a Keras teacher."""
  path = config.teacher.checkpoint
  from_config = meta_path == "config.teacher"
  model = keras_model.load_model(
      path if from_config else os.path.join(path, keras_model.KERAS_FILE))
  if tuple(model.input_shape[1:]) != tuple(dataset.input_shape):
    raise keras_model.KerasModelError(
        f"Keras model {path} takes inputs of shape "
        f"{list(model.input_shape[1:])} but dataset {dataset.name!r} has "
        f"{list(dataset.input_shape)}.")
  num_classes = meta["num_classes"]
  if model.output_shape[-1] != num_classes:
    raise keras_model.KerasModelError(
        f"Keras model {path} outputs {model.output_shape[-1]} logits but "
        f"{meta_path} gives the teacher {num_classes} classes "
        f"{meta['class_order']}; list one class id per output.")
  head = foreign.find_head(keras_model.dense_layers(model), num_classes,
                           config.teacher.head_path or meta["head_path"],
                           meta_path)
  given = keras_model.KerasClassifier(model, head, num_classes)
  x = jnp.zeros((1, *dataset.input_shape), jnp.float32)
  wider = given.widened(num_classes + 1)
  if jax.eval_shape(wider.apply, wider.init(None, None), x).shape[-1] != (
      num_classes + 1):
    raise keras_model.KerasModelError(
        f"{meta_path}: widening the Dense layer {head!r} does not widen the "
        f"model's output, so it is not the final layer; give the name of "
        f"the Dense whose outputs the model returns.")
  if from_config:
    variables = jax.device_get(given.variables_of())
  else:
    variables, _ = checkpoint.load_classifier(
        path, jax.eval_shape(given.init, None, x))
  return variables, {**meta, "head_path": head}, given
