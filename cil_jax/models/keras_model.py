"""A Keras 3 model (JAX backend) as a cil_jax classifier, through Keras'
stateless API (``model.stateless_call``): optional, ``pip install -e
".[keras]"``.

Its variables are cil_jax's pytrees under Keras' own variable paths
(``params``: the trainable ones, e.g. ``hidden/kernel``; ``batch_stats``:
the non-trainable ones, e.g. BatchNorm's ``moving_mean``), so layer presets
and regexes use the Keras names (``python -m cil_jax.classifier.inspect`` lists them).
The head is the model's final ``Dense`` layer (by its variable path, e.g.
``scores``); the student is the model cloned with that layer's
``units`` widened (``keras.models.clone_model``). ``save_keras`` writes the
extended model back as a ``.keras`` file that Keras loads on its own.
"""

import os

from flax import traverse_util

KERAS_FILE = "model.keras"  # beside a saved classifier's variables


class KerasModelError(ValueError):
  """A Keras model that cil_jax cannot train."""


def import_keras():
  """Keras 3 on the JAX backend (set before Keras is first imported)."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  try:
    import keras  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise KerasModelError("A .keras teacher needs Keras 3: pip install -e "
                          "\".[keras]\".") from None
  if keras.backend.backend() != "jax":
    raise KerasModelError(
        f"Keras runs on the {keras.backend.backend()!r} backend; cil_jax "
        f"needs 'jax': set KERAS_BACKEND=jax before starting Python.")
  return keras


def load_model(path):
  keras = import_keras()
  try:
    return keras.saving.load_model(path)
  except Exception as e:  # pylint: disable=broad-except
    raise KerasModelError(f"{path} cannot be loaded by Keras "
                          f"({type(e).__name__}: {str(e)[:300]}); save it "
                          f"with model.save('model.keras').") from None


def layer_path(layer):
  """A layer's path among the variables (e.g. ``scores``), or ``None`` if
  it has no weights."""
  return layer.weights[0].path.rsplit("/", 1)[0] if layer.weights else None


def dense_layers(model):
  """``{path: units}`` of the model's Dense layers."""
  keras = import_keras()
  return {layer_path(layer): layer.units for layer in model.layers
          if isinstance(layer, keras.layers.Dense)}


class KerasClassifier:
  """``model`` with its Dense at variable path ``head_path`` widened to
  ``num_classes``, with the ``init``/``apply`` of a cil_jax model."""

  def __init__(self, model, head_path, num_classes, inference=False):
    self.original, self.head_path = model, head_path
    self.num_classes = num_classes
    # Trains with ``training=False`` (``in_inference_mode``).
    self.inference = inference
    self.layers = tuple(layer_path(layer) for layer in model.layers
                        if layer.weights)
    self._keras = None
    # Variables are keyed by the original's paths: a clone's may carry
    # another model name (sequential_1/...), its variables in this order.
    self._paths = ([v.path for v in model.trainable_variables],
                   [v.path for v in model.non_trainable_variables])
    if any(not v.dtype.startswith("float")
           for v in model.non_trainable_variables):
      raise KerasModelError(
          f"Keras model {model.name!r} has non-float state (a Dropout or "
          f"other random layer's seed); cil_jax trains Keras models "
          f"without random layers.")

  def widened(self, num_classes):
    return KerasClassifier(self.original, self.head_path, num_classes,
                           self.inference)

  def in_inference_mode(self):
    """This model called with ``training=False`` even when trained: its
    BatchNormalization layers use their moving statistics, never updated
    from new-class batches (``FlaxClassifier.in_inference_mode``)."""
    return KerasClassifier(self.original, self.head_path, self.num_classes,
                           inference=True)

  @property
  def keras_model(self):
    """The Keras model with ``num_classes`` outputs (built once)."""
    if self._keras is None:
      keras = import_keras()
      if dense_layers(self.original)[self.head_path] == self.num_classes:
        self._keras = self.original
      else:
        def clone(layer):
          config = layer.get_config()
          if layer_path(layer) == self.head_path:
            config["units"] = self.num_classes
          return layer.__class__.from_config(config)
        self._keras = keras.models.clone_model(self.original,
                                               clone_function=clone)
    return self._keras

  def variables_of(self):
    model = self.keras_model
    return {"params": _tree(self._paths[0], model.trainable_variables),
            "batch_stats": _tree(self._paths[1],
                                 model.non_trainable_variables)}

  def init(self, rng, inputs):
    del rng, inputs  # Keras initialised the clone's variables when built
    return self.variables_of()

  def apply(self, variables, inputs, train=False, rngs=None, mutable=None):
    del rngs
    model = self.keras_model
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    stats = traverse_util.flatten_dict(variables.get("batch_stats", {}),
                                       sep="/")
    outputs, new_stats = model.stateless_call(
        [params[p] for p in self._paths[0]],
        [stats[p] for p in self._paths[1]], inputs,
        training=train and not self.inference)
    if mutable:
      return outputs, {"batch_stats": traverse_util.unflatten_dict(
          dict(zip(self._paths[1], new_stats)), sep="/")}
    return outputs

  def save_keras(self, variables, path):
    """Writes the model holding ``variables`` as a ``.keras`` file."""
    model = self.keras_model
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    stats = traverse_util.flatten_dict(variables.get("batch_stats", {}),
                                       sep="/")
    for p, v in zip(self._paths[0], model.trainable_variables):
      v.assign(params[p])
    for p, v in zip(self._paths[1], model.non_trainable_variables):
      v.assign(stats[p])
    model.save(path)


def _tree(paths, keras_variables):
  return traverse_util.unflatten_dict(
      {p: v.value for p, v in zip(paths, keras_variables)}, sep="/")
