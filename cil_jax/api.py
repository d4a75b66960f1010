"""Adding classes from Python: one call, the CLI's run underneath.

  extended = api.add_classes(
      teacher="runs/default/base/step_0/classifier",  # or (module, params)
      train=(images, labels), test=(test_images, test_labels),
      workdir="runs/api", class_names={5: "five", ...},
      settings={"train.epochs": 10})
  extended.metrics["final_acc_all"], extended.predict(images)
  extended.save("my_classifier")

``add_classes`` builds the packaged config ``cil_jax/configs/add_classes.py``
(one method, ``eps_kd`` unless told), puts the numpy arrays behind a
``data.source.Source``, and calls ``train.run``: the same checks, the same
door for the teacher (``cil_jax.classifier.teacher``), the same workdir (rerun to
resume). A teacher given as ``(module, params)`` is first written as a
cil_jax classifier in ``<workdir>/given_teacher`` (its module imported by
``type(module).__module__``, so a module defined in a notebook works in
that notebook's process).
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cil_jax import api_inputs
from cil_jax.classifier import checkpoint
from cil_jax import image_folder
from cil_jax.classifier import input_spec
from cil_jax import overrides
from cil_jax.step import outputs as step_outputs
# Named *_config: add_classes is also this module's function.
from cil_jax.configs import add_classes as add_classes_config
from cil_jax.configs import default as default_config
from cil_jax.data import arrays
from cil_jax.data import source as data_source
# The run the CLI goes through (``train`` names add_classes' data here).
from cil_jax.train import run as train_run
from cil_jax.models import abstract_variables
from cil_jax.models import build_model
from cil_jax.models import foreign
from cil_jax.models import keras_model

@dataclasses.dataclass(frozen=True)
class Classifier:
  """An extended classifier: ``apply(variables, images, train=False)``
  gives logits from inputs prepared as ``metadata["input"]`` says;
  ``predict`` takes raw images (largest value ``pixel_max``)."""
  apply: Any
  variables: Any
  metadata: dict
  metrics: dict  # the method's entry of results.json
  pixel_max: float

  def logits(self, images):
    images = np.asarray(images)
    mean, std = input_spec.raw_mean_std(self.metadata["input"],
                                        self.pixel_max, images.shape[-1])
    inputs = arrays.standardize(images, mean, std)
    return np.asarray(jax.jit(lambda v, x: self.apply(v, x, train=False))(
        self.variables, jnp.asarray(inputs)))

  def predict(self, images):
    """Dataset class ids of raw ``images``."""
    order = np.asarray(self.metadata["class_order"])
    return order[np.argmax(self.logits(images), axis=-1)]

  def save(self, path):
    """Writes it as a cil_jax classifier (``docs/checkpoint.md``)."""
    meta = {k: v for k, v in self.metadata.items()
            if k not in ("format", "source_format")}
    checkpoint.save_classifier(path, self.variables, meta)


def add_classes(teacher, train, test=None, workdir=None, method="df_replay",
                class_names=None, settings=None, pixel_max=255.0,
                new_classes=None,
                teacher_classes=None, teacher_input=None,
                teacher_train_kwarg="", teacher_head_path="",
                dataset_name=None, folder_class_ids=None):
  """Extends ``teacher`` to the classes of ``train``; returns a
  ``Classifier`` with its test ``metrics``.

  ``teacher``: a classifier path (``docs/checkpoint.md``), or ``(module,
  params)`` of a Flax module, then with ``teacher_classes`` (the class id
  of each output) and ``teacher_input`` (its input spec), optionally
  ``teacher_train_kwarg`` and ``teacher_head_path`` (``docs/checkpoint.md``,
  the contract). ``train`` and
  ``test``: numpy ``(images, labels)`` or ``tf.data.Dataset``s of such
  pairs (or of ``{"image", "label"}`` dicts), raw images and dataset class
  ids; ``train`` holds only new classes, ``test`` examples of every class
  (old and new: the metrics need both). Or ``train`` names a TFDS dataset
  (``test`` left out: its test split), with ``new_classes`` the class ids
  to add; their names come from the dataset unless ``class_names`` are
  given. Or ``train`` is an image folder (``cil_jax.image_folder``:
  ``train/<class name>/*.png`` of the new classes, ``test/<class name>/``
  of all; a class is the teacher's class of that name, else a new one, or
  as ``folder_class_ids`` ``{name: id}`` says). ``class_names``:
  ``{class id: name}``
  of the new classes. ``settings``: config overrides by dotted key, e.g.
  ``{"eps_kd.eps": 0.3, "train.epochs": 20}``. ``pixel_max``: the largest
  raw pixel value (255 for 8-bit images, 16 for digits). ``dataset_name``
  defaults to the teacher's ``dataset``.
  """
  if workdir is None:
    raise ValueError("add_classes needs a workdir: the run's directory "
                     "(checkpoints, results; rerun to resume).")
  if isinstance(train, (str, os.PathLike)) and os.path.isdir(train):
    if test is not None:
      raise ValueError(f"train={os.fspath(train)!r} is an image folder: leave "
                       f"test out (its test/ directory is used).")
    meta = (None if not isinstance(teacher, (str, os.PathLike))
            else checkpoint.read_metadata(teacher))
    old = (list(teacher_classes) if meta is None else meta["class_order"])
    names = (None if meta is None else meta.get("class_names"))
    splits, new_names = image_folder.read(os.fspath(train), old, names,
                                          folder_class_ids)
    train, test = splits["train"], splits["test"]
    class_names = {**new_names, **(class_names or {})}
  elif isinstance(train, str):
    return _add_to_tfds(teacher, train, test, workdir, method, class_names,
                        settings, new_classes)
  train, test = api_inputs.arrays("train", train), api_inputs.arrays(
      "test", test)
  for name, split in (("train", train), ("test", test)):
    api_inputs.check_split(name, split)
  given = not isinstance(teacher, (str, os.PathLike))
  if given and (teacher_classes is None or teacher_input is None):
    raise ValueError("A teacher given as (module, params) needs "
                     "teacher_classes (the dataset class id of each output) "
                     "and teacher_input (its input spec, e.g. {'pixels': "
                     "'unit', 'normalization': 'none'}; docs/checkpoint.md).")
  old = ([int(c) for c in teacher_classes] if given
         else checkpoint.read_metadata(teacher)["class_order"])
  new = sorted({int(c) for c in np.unique(train[1])})
  tested = {int(c) for c in np.unique(test[1])}
  untested = sorted(set(new + old) - tested)
  if untested:
    raise ValueError(
        f"test has no example of classes {untested}; it needs examples of "
        f"every class, the teacher's ({old}) and the new ones ({new}), to "
        f"check the teacher and report old/new accuracy.")
  known = sorted(set(old) & set(new))
  if known:
    raise ValueError(f"train holds classes {known} that the teacher already "
                     f"knows (its classes: {old}); give training data of new "
                     f"classes only.")
  unknown = sorted(set(class_names or ()) - set(new))
  if unknown:
    raise ValueError(f"class_names names classes {unknown} that the "
                     f"training data does not hold (its classes: {new}).")
  if given:
    teacher = api_inputs.save_given(teacher, workdir, old, teacher_input,
                          train[0].shape[1:], teacher_train_kwarg,
                          teacher_head_path)
  teacher = os.fspath(teacher)
  meta = checkpoint.read_metadata(teacher)
  num_classes = 1 + max(new + old + sorted(tested))
  config = _base_config(teacher, meta, method,
                        dataset_name or meta.get("dataset") or "arrays")
  config.classes.groups = (tuple(new),)
  if class_names:
    config.classes.names = ",".join(class_names.get(c, "") for c in new)
  config = overrides.apply(config, settings or {})
  source = data_source.Source.from_arrays(
      config.dataset.name, train, test, num_classes, pixel_max)
  return _run(config, workdir, source, method, pixel_max)


def _add_to_tfds(teacher, name, test, workdir, method, class_names,
                 settings, new_classes):
  """``add_classes`` on a TFDS dataset: the CLI's run with
  ``config.dataset.name``."""
  if test is not None or not new_classes:
    raise ValueError(f"train={name!r} names a TFDS dataset: leave test out "
                     f"(its test split is used) and give new_classes, the "
                     f"class ids to add.")
  if not isinstance(teacher, (str, os.PathLike)):
    raise ValueError("With a TFDS dataset, give the teacher as a classifier "
                     "path (checkpoint.save_classifier writes one).")
  meta = checkpoint.read_metadata(teacher)
  config = _base_config(teacher, meta, method, name)
  config.classes.groups = (tuple(int(c) for c in new_classes),)
  config = overrides.apply(config, settings or {})
  if class_names is None:  # the dataset's own names
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    names = tfds.builder(name, data_dir=config.dataset.data_dir or None
                         ).info.features["label"].names
    class_names = {c: names[c] for c in config.classes.groups[0]}
  config.classes.names = ",".join(class_names.get(c, "")
                                  for c in config.classes.groups[0])
  source = data_source.Source(config.dataset)
  return _run(config, workdir, source, method,
              source.info.pixel_max)


def _base_config(teacher, meta, method, dataset_name):
  """The packaged ``add_classes`` config for ``teacher`` (its model) and
  ``method``."""
  config = add_classes_config.get_config()
  config.methods = method
  config.teacher.checkpoint = os.fspath(teacher)
  config.dataset.name = dataset_name
  if meta["model"]["name"] != checkpoint.FLAX_MODEL:  # the teacher's model
    for key, value in meta["model"].items():
      config.model[key] = tuple(value) if isinstance(value, list) else value
  return config


def _run(config, workdir, source, method, pixel_max):
  results = train_run(config, workdir, source)
  saved = step_outputs.classifier_dir(
      os.path.join(workdir, method, "step_1"))
  apply_fn, variables, metadata = load(saved)
  return Classifier(apply_fn, variables, metadata,
                    results["methods"][method], pixel_max)


def load(path):
  """``(apply, variables, metadata)`` of the classifier at ``path``."""
  meta = checkpoint.read_metadata(path)
  model_meta = meta["model"]
  if model_meta["name"] == checkpoint.KERAS_MODEL:
    model = keras_model.KerasClassifier(keras_model.load_model(
        os.path.join(path, keras_model.KERAS_FILE)), meta["head_path"],
                                        meta["num_classes"])
    expected = jax.eval_shape(model.init, None, None)
  elif model_meta["name"] == checkpoint.FLAX_MODEL:
    module, _ = foreign.import_module(model_meta["module"],
                                      model_meta.get("kwargs", {}),
                                      f"the module of {path}")
    model = foreign.FlaxClassifier(module, meta["head_path"],
                                   meta["num_classes"],
                                   model_meta.get("train_kwarg", ""))
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(
        (1, *meta["input_shape"]), jnp.float32))
  else:
    model_config = default_config.get_config().model
    model_config.update(model_meta)
    model = build_model(model_config, meta["num_classes"],
                        meta["adapter_dim"])
    expected = abstract_variables(model, meta["input_shape"])
  variables, meta = checkpoint.load_classifier(path, expected)
  return model.apply, variables, meta
