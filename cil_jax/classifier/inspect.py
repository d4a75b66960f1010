"""``python -m cil_jax.classifier.inspect PATH``: what a classifier checkpoint holds and
whether cil_jax can extend it.

Prints the format, the model (cil_jax's or a Flax module's import path),
the classes (ids and names), the input spec, the head, the accuracy when
recorded (the metadata's ``accuracy``, or the ``result.json`` of the step
that wrote it), and the parameter tree with shapes; then ``extendable: yes``
or what is missing. Of a cil_jax classifier no array is read (the shapes
come from orbax's stored metadata); a plain checkpoint is loaded. Exit
status 1 when the checkpoint cannot be read or cannot be extended.
"""

import os
import sys

import orbax.checkpoint as ocp
from absl import app
from absl import logging
from flax import traverse_util

from cil_jax.classifier import checkpoint
from cil_jax.classifier import input_spec
from cil_jax import jsonio
from cil_jax.classifier import plain_checkpoint
from cil_jax.models import keras_model


def describe(path):
  """``(lines, problems)``: the description of the checkpoint at ``path``
  and what keeps it from being extended (empty: extendable)."""
  path = os.path.abspath(path)
  if os.path.isfile(path) or (os.path.isdir(path) and not
                              plain_checkpoint.is_cil_jax_classifier(path)):
    return _describe_plain(path)
  meta = checkpoint.read_metadata(path)
  problems = []
  model = meta["model"]
  lines = [f"checkpoint: {path}",
           f"format: {meta.get('source_format', meta['format'])}"]
  if model["name"] == checkpoint.KERAS_MODEL:
    lines.append("model: Keras 3 (model.keras beside the variables)")
  elif model["name"] == checkpoint.FLAX_MODEL:
    lines.append(f"model: Flax module {model['module']} with keyword "
                 f"arguments {model.get('kwargs') or {}}; train keyword "
                 f"{model.get('train_kwarg') or '(none)'!r}")
  else:
    lines.append(f"model: cil_jax {model['name']} "
                 f"{ {k: v for k, v in model.items() if k != 'name'} }"
                 + (f", adapter {meta['adapter_dim']}" if meta["adapter_dim"]
                    else ""))
  names = meta.get("class_names")
  lines.append(f"classes ({meta['num_classes']}): " + ", ".join(
      f"{c} {names[i]!r}" if names else str(c)
      for i, c in enumerate(meta["class_order"])))
  if "input" in meta:
    lines.append(f"input: shape {meta['input_shape']}, "
                 f"{input_spec.describe(meta['input'])}")
  else:
    lines.append(f"input: shape {meta['input_shape']}, spec MISSING")
    problems.append("the metadata does not say what input the model expects "
                    "(key 'input'); add it, or give config.teacher.input_*")
  lines.append(f"head: {meta['head_path']}")
  if meta.get("dataset"):
    lines.append(f"trained on: {meta['dataset']}")
  accuracy = _accuracy(path, meta)
  lines.append(f"accuracy: {accuracy}")
  lines.append("parameters:")
  lines.extend(_tree_lines(_stored_shapes(path, meta)))
  return lines, problems


def _describe_plain(path):
  if path.endswith(".keras"):
    model = keras_model.load_model(path)
    lines = [f"checkpoint: {path}", f"format: Keras 3 model {model.name!r}, "
             f"input {list(model.input_shape[1:])}, "
             f"{model.output_shape[-1]} outputs", "parameters:"]
    lines.extend(_tree_lines({v.path: tuple(v.shape)
                              for v in model.variables}))
  else:
    lines = [f"checkpoint: {path}", "format: plain parameters (no cil_jax "
             "metadata)", "parameters:"]
    lines.extend(_tree_lines(plain_checkpoint.load(path)))
  return lines, [
      "it has no cil_jax metadata: give its classes with "
      "--config.teacher.classes (and a Flax module with "
      "--config.teacher.module) and the input spec "
      "with --config.teacher.input_pixels / input_normalization "
      "(docs/checkpoint.md)"]


def _accuracy(path, meta):
  if meta.get("accuracy") is not None:
    return f"{meta['accuracy']:.4f} (recorded in the metadata)"
  result = os.path.join(os.path.dirname(path), "result.json")
  if os.path.isfile(result):
    try:
      record = jsonio.read_json(result)
      return (f"{record['acc_all']:.4f} on the test data of its classes "
              f"({result})")
    except (jsonio.DamagedFileError, KeyError, TypeError):
      pass
  return "not recorded"


def _stored_shapes(path, meta):
  """``{slash path: shape}`` of the stored variables, from orbax's metadata
  (no array is read)."""
  directory = os.path.join(path, checkpoint.VARIABLES_DIR)
  tree = ocp.StandardCheckpointer().metadata(directory)
  tree = getattr(tree, "item_metadata", tree)
  tree = getattr(tree, "tree", tree)
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(
      dict(tree), sep="/").items()}


def _tree_lines(tree):
  flat = tree if all(isinstance(k, str) and isinstance(v, tuple)
                     for k, v in tree.items()) else {
                         k: tuple(v.shape) for k, v in
                         traverse_util.flatten_dict(tree, sep="/").items()}
  total = 0
  lines = []
  for name, shape in sorted(flat.items()):
    size = 1
    for d in shape:
      size *= d
    total += size
    lines.append(f"  {name:<48} {list(shape)}")
  return lines + [f"  ({total:,} values)"]


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("Usage: python -m cil_jax.classifier.inspect PATH")
  logging.set_verbosity(logging.WARNING)
  try:
    lines, problems = describe(argv[1])
  except (ValueError, OSError) as e:
    print(f"cil_jax: error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  print("\n".join(lines))
  if problems:
    print("extendable: no: " + "; ".join(problems))
    sys.exit(1)
  print("extendable: yes (python -m cil_jax.main --config "
        "configs/add_classes.py --config.teacher.checkpoint=PATH ...)")


if __name__ == "__main__":
  app.run(main)
