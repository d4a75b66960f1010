"""A given classifier as C_A: loaded from ``config.teacher.checkpoint`` and
checked against the config before anything is trained or written."""

import numpy as np

from cil_jax import checkpoint
from cil_jax.models import abstract_variables
from cil_jax.models import build_model


def load(config, dataset):
  """``(variables, metadata)`` of the teacher; raises one error listing
  every way it does not fit ``config`` and ``dataset``."""
  path = config.teacher.checkpoint
  meta = checkpoint.read_metadata(path)
  problems = _mismatches(config, dataset, meta)
  if problems:
    raise ValueError(f"Teacher checkpoint {path!r} does not match the config: "
                     + "; ".join(problems) + ". Set the config to the "
                     "checkpoint's model (see its metadata).")
  model = build_model(config.model, meta["num_classes"], meta["adapter_dim"])
  return checkpoint.load_classifier(
      path, abstract_variables(model, dataset.input_shape))


def check_new_classes(path, meta, new_groups):
  """The new groups must not hold any of the teacher's classes."""
  overlap = sorted(set(meta["class_order"]) &
                   {c for g in new_groups for c in g})
  if overlap:
    raise ValueError(
        f"Classes {overlap} of config.classes.groups are already classes of "
        f"the teacher ({meta['class_order']}, from the metadata of {path}); "
        f"with config.teacher.checkpoint, list only the new classes.")


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
  if meta["dataset"] != dataset.name:
    problems.append(f"the checkpoint was trained on {meta['dataset']!r} "
                    f"but config.dataset.name={dataset.name!r}")
  elif not (np.allclose(meta["input_mean"], dataset.mean, rtol=1e-3) and
            np.allclose(meta["input_std"], dataset.std, rtol=1e-3)):
    problems.append(f"the checkpoint's inputs were normalised with mean "
                    f"{meta['input_mean']} and std {meta['input_std']} but "
                    f"this dataset's are {list(dataset.mean)} and "
                    f"{list(dataset.std)} (another split or data_dir?)")
  if list(meta["input_shape"]) != list(dataset.input_shape):
    problems.append(f"the checkpoint takes inputs of shape "
                    f"{meta['input_shape']} but dataset {dataset.name!r} has "
                    f"{list(dataset.input_shape)}")
  return problems


def _as_list(value):
  return list(value) if isinstance(value, (list, tuple)) else value
