"""What ``api.add_classes`` takes, made into what the run takes: numpy
splits from arrays or tf.data, checked; a ``(module, params)`` teacher
written as a cil_jax classifier in the workdir."""

import dataclasses
import json
import os

import jax
import numpy as np

from cil_jax.classifier import checkpoint
from cil_jax.models import foreign

GIVEN_TEACHER = "given_teacher"


def arrays(name, split):
  """numpy ``(images, labels)`` of a pair of arrays or of a
  ``tf.data.Dataset`` of ``(image, label)`` pairs or ``{"image", "label"}``
  dicts, batched or not."""
  if not hasattr(split, "as_numpy_iterator"):
    return split
  images, labels = [], []
  for element in split.as_numpy_iterator():
    image, label = ((element["image"], element["label"])
                    if isinstance(element, dict) else element)
    batched = np.ndim(label) == 1
    images.extend(image if batched else [image])
    labels.extend(label if batched else [label])
  if not images:
    raise ValueError(f"The tf.data.Dataset given as {name} is empty.")
  return np.stack(images), np.asarray(labels)


def check_split(name, split):
  """``split`` must be ``(images [N, H, W, C], int labels [N])``."""
  try:
    images, labels = split
    images, labels = np.asarray(images), np.asarray(labels)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a pair (images, labels) of numpy "
                     f"arrays.") from None
  if images.ndim != 4 or labels.shape != images.shape[:1]:
    raise ValueError(
        f"{name} has images of shape {images.shape} and labels of shape "
        f"{labels.shape}; give images [N, height, width, channels] (add a "
        f"channel axis with images[..., None]) and one label per image.")
  if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
    raise ValueError(f"{name}'s labels must be dataset class ids, ints >= 0; "
                     f"they are {labels.dtype} from {labels.min()}.")


def save_given(teacher, workdir, classes, spec, input_shape, train_kwarg,
                head_path):
  """Writes ``(module, params)`` as a cil_jax classifier in ``workdir``
  and returns its path; a rerun finds it, and refuses another teacher
  there (the workdir belongs to its run)."""
  module, params = teacher
  kwargs = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
            if f.init and f.name not in ("parent", "name")}
  try:
    json.dumps(kwargs)
  except TypeError as e:
    raise ValueError(f"{type(module).__name__}'s attributes {kwargs} are not "
                     f"JSON ({e}); save the teacher with "
                     f"checkpoint.save_classifier and pass its path.") from None
  variables = jax.device_get(params if "params" in params
                             else {"params": params})
  denses, _, _ = foreign.trace(module, input_shape, train_kwarg)
  metadata = {
      "model": {"name": checkpoint.FLAX_MODEL, "kwargs": kwargs,
                "module": f"{type(module).__module__}:"
                          f"{type(module).__qualname__}",
                "train_kwarg": train_kwarg},
      "adapter_dim": 0, "num_classes": len(classes), "class_order": classes,
      "input_shape": [int(d) for d in input_shape], "input": spec,
      "head_path": foreign.find_head(denses, len(classes), head_path,
                                     "the teacher given to add_classes")}
  path = os.path.join(os.path.abspath(workdir), GIVEN_TEACHER)
  if not os.path.exists(path):
    checkpoint.save_classifier(path, variables, metadata)
    return path
  stored, stored_meta = checkpoint.load_classifier(path, variables)
  same = all(stored_meta.get(k) == v for k, v in metadata.items()) and all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(stored),
                                           jax.tree.leaves(variables)))
  if not same:
    raise ValueError(f"{path} holds another teacher than the one given: "
                     f"{workdir} belongs to the run of that teacher. Use a "
                     f"new workdir.")
  return path
