"""A given classifier as C_A: loaded from ``config.teacher.checkpoint`` and
checked against the config before anything is trained or written.

Its input spec (``cil_jax.classifier.input_spec``) comes from its metadata or from
``config.teacher.input_*``; one of the two must give it, and the run's
pipeline then feeds every model exactly that input.
"""

import os

from cil_jax.classifier import checkpoint
from cil_jax.classifier import flax_teacher as foreign_teacher
from cil_jax.classifier import input_spec
from cil_jax.classifier import keras_teacher
from cil_jax.classifier import plain_checkpoint
from cil_jax.models import abstract_variables
from cil_jax.models import build_model


def load(config, dataset):
  """``(variables, metadata, model)`` of the teacher: its metadata complete
  (the input spec resolved), ``model`` the module as given. Raises one
  error listing every way it does not fit ``config`` and ``dataset``."""
  path = config.teacher.checkpoint
  keras_file = path.endswith(".keras")
  if (config.teacher.module or keras_file) and not (
      os.path.isdir(path) and plain_checkpoint.is_cil_jax_classifier(path)):
    meta = foreign_teacher.config_metadata(config, dataset, keras_file)
    meta_path = "config.teacher"
  else:
    meta = checkpoint.read_metadata(path)
    meta_path = os.path.join(path, checkpoint.METADATA_FILE)
    ignored = [f"config.teacher.{k}" for k in (
        "classes", "class_names", "module_kwargs") if config.teacher[k]]
    if ignored:
      raise ValueError(
          f"{', '.join(ignored)} describe a checkpoint without cil_jax "
          f"metadata, but {path} has its own ({meta_path}); unset them.")
  meta = {**meta, "input": resolve_input(meta_path, meta, config.teacher,
                                         dataset)}
  unknown = [c for c in meta["class_order"] if c >= dataset.num_classes]
  if unknown:
    raise ValueError(f"The teacher's classes {unknown} (from {meta_path}) "
                     f"are not classes of dataset {dataset.name!r}, which "
                     f"has {dataset.num_classes}; give dataset class ids.")
  if meta["model"]["name"] == checkpoint.FLAX_MODEL:
    return foreign_teacher.load(config, dataset, meta, meta_path)
  if meta["model"]["name"] == checkpoint.KERAS_MODEL:
    return keras_teacher.load(config, dataset, meta, meta_path)
  problems = _mismatches(config, dataset, meta)
  if problems:
    raise ValueError(f"Teacher checkpoint {path!r} does not match the config: "
                     + "; ".join(problems) + ". Set the config to the "
                     "checkpoint's model (see its metadata).")
  model = build_model(config.model, meta["num_classes"], meta["adapter_dim"])
  variables, meta_read = checkpoint.load_classifier(
      path, abstract_variables(model, dataset.input_shape))
  return variables, {**meta_read, "input": meta["input"]}, model


def resolve_input(meta_path, meta, teacher_config, dataset):
  """The teacher's input spec: the metadata's ``input`` or the config's
  ``teacher.input_*`` (equal when both are given); neither is an error."""
  given = input_spec.from_config(teacher_config)
  if given is not None:
    problems = input_spec.problems(given)
    if problems:
      raise ValueError(
          "Invalid config: config.teacher.input_* do not form an input spec: "
          + "; ".join(problems) + ". Set --config.teacher.input_pixels="
          "unit|byte|stored and --config.teacher.input_normalization="
          "none|mean_std|module (with input_mean and input_std for "
          "mean_std); docs/checkpoint.md explains them.")
    if "input" in meta and meta["input"] != given:
      raise ValueError(
          f"{meta_path} says the teacher expects input {meta['input']} but "
          f"config.teacher.input_* say {given}. Unset config.teacher.input_* "
          f"to use the checkpoint's, or correct its metadata.")
  elif "input" in meta:
    given = meta["input"]
  else:
    raise checkpoint.MetadataError(
        f"{meta_path} does not say what input the teacher expects (no key "
        f"'input') and config.teacher.input_pixels and "
        f"config.teacher.input_normalization are unset; cil_jax never "
        f"guesses it. Add 'input' to the metadata, e.g. {{\"pixels\": "
        f"\"unit\", \"normalization\": \"none\"}} (docs/checkpoint.md), or "
        f"pass e.g. --config.teacher.input_pixels=unit "
        f"--config.teacher.input_normalization=none.")
  channels = dataset.input_shape[-1]
  for key in ("mean", "std"):
    if len(given.get(key) or [0]) not in (1, channels):
      raise ValueError(
          f"The teacher's input {key} {given[key]} has "
          f"{len(given[key])} values but dataset {dataset.name!r} has "
          f"{channels} channel(s); give one value per channel (from "
          f"{meta_path} or config.teacher.input_{key}).")
  return given


def check_new_classes(path, meta, new_groups):
  """The new groups must not hold any of the teacher's classes."""
  overlap = sorted(set(meta["class_order"]) &
                   {c for g in new_groups for c in g})
  if overlap:
    names = meta.get("class_names")
    named = "" if not names else " (" + ", ".join(
        f"{c}: {names[meta['class_order'].index(c)]!r}"
        for c in overlap) + ")"
    raise ValueError(
        f"Classes {overlap}{named} of config.classes.groups are already "
        f"classes of the teacher ({meta['class_order']}, from the metadata "
        f"of {path}); with config.teacher.checkpoint, list only the new "
        f"classes.")


def _mismatches(config, dataset, meta):
  problems = []
  if meta["model"].get("name") != config.model.name:
    problems.append(f"the checkpoint's model is {meta['model'].get('name')!r} "
                    f"but config.model.name={config.model.name!r}")
  for key, value in meta["model"].items():
    if key != "name" and key in config.model and _as_list(
        config.model[key]) != _as_list(value):
      problems.append(f"config.model.{key}={config.model[key]!r} but the "
                      f"checkpoint has {value!r}")
  if meta.get("dataset") not in (None, dataset.name):
    problems.append(f"the checkpoint was trained on {meta['dataset']!r} "
                    f"but config.dataset.name={dataset.name!r}")
  if list(meta["input_shape"]) != list(dataset.input_shape):
    problems.append(f"the checkpoint takes inputs of shape "
                    f"{meta['input_shape']} but dataset {dataset.name!r} has "
                    f"{list(dataset.input_shape)}")
  if meta["head_path"] != "head":
    problems.append(f"its head is at {meta['head_path']!r}, but a cil_jax "
                    f"model's is at 'head'")
  return problems


def _as_list(value):
  return list(value) if isinstance(value, (list, tuple)) else value
