"""Orbax checkpoints: resumable training state, and saved classifiers.

Training state: one ``CheckpointManager`` per run and (method, class step),
saving the student's ``TrainState`` at epoch boundaries; ``fit`` resumes a
killed step from the newest epoch saved (by every member trained with it).

Classifiers (format ``cil_jax.classifier/3``): ONE orbax checkpoint, a
directory with two items, ``variables/`` (params and BatchNorm statistics)
and ``metadata/metadata`` (JSON). This is the format a user hands us as
C_A, and what each finished step writes, so any result can be the teacher of
a later run. ``docs/checkpoint.md`` documents every key (``METADATA_KEYS``
required, ``OPTIONAL_KEYS`` optional) with an example; in short: ``model``,
``adapter_dim``, ``num_classes``, ``class_order``, ``input_shape``,
``input`` (the input spec, ``cil_jax.classifier.input_spec``), ``head_path``, and
optionally ``class_names``, ``dataset`` and ``accuracy``.

Every read checks the metadata key by key, and damaged files (truncated or
deleted by a kill, a full disk, a bad copy) raise ``DamagedCheckpointError``
naming the checkpoint and the fix, never a raw tensorstore error.

Classifiers of formats ``/1`` (``variables/`` + ``metadata.json``) and
``/2`` (``input_mean``/``input_std`` instead of ``input``, the head at
``head``) are still read, as ``/3`` metadata, never written, so earlier
workdirs resume and their classifiers remain teachers.
"""

import logging
import os

import jax
import numpy as np

from cil_jax.classifier import input_spec
from cil_jax import jsonio

FORMAT = "cil_jax.classifier/3"


def ocp():
  """``orbax.checkpoint``, imported at first use: with what it pulls in
  (tensorstore, rich, asyncio, ...) it takes 0.15-0.25 s of a 2-core CPU,
  which a run then spends while its first train program compiles on
  another thread (``compile_ahead``), not before anything starts."""
  import orbax.checkpoint  # pylint: disable=g-import-not-at-top
  return orbax.checkpoint
VARIABLES_DIR = "variables"
# Where orbax's JsonSave puts the item "metadata" inside the checkpoint.
METADATA_FILE = os.path.join("metadata", "metadata")
_V1_FORMAT, _V1_METADATA_FILE = "cil_jax.classifier/1", "metadata.json"
_V2_FORMAT = "cil_jax.classifier/2"


def _ints(value, minimum):
  return (isinstance(value, list) and all(_int(v, minimum) for v in value))


def _int(value, minimum):
  return (isinstance(value, int) and not isinstance(value, bool)
          and value >= minimum)


def _numbers(value):
  return isinstance(value, list) and value and all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _model(value):
  if not (isinstance(value, dict) and isinstance(value.get("name"), str)):
    return False
  return value["name"] != FLAX_MODEL or (
      isinstance(value.get("module"), str) and ":" in value["module"]
      and isinstance(value.get("kwargs", {}), dict)
      and isinstance(value.get("train_kwarg", ""), str))


FLAX_MODEL = "flax"  # model.name of a Flax module given by import path
KERAS_MODEL = "keras"  # model.name of a Keras model (model.keras beside)
# key: (what it should hold, check of a parsed JSON value)
METADATA_KEYS = {
    "model": ("the model config dict, with its 'name' (config.model), or "
              "{'name': 'flax', 'module': 'pkg.mod:Net', 'kwargs': {...}, "
              "'train_kwarg': 'train'}, or {'name': 'keras'}", _model),
    "adapter_dim": ("the width of the adapter layers, an int >= 0 (0: none)",
                    lambda v: _int(v, 0)),
    "num_classes": ("the number of outputs, an int >= 1",
                    lambda v: _int(v, 1)),
    "class_order": ("the dataset class id of each output, a list of ints",
                    lambda v: _ints(v, 0)),
    "input_shape": ("one input's shape, a list of ints, e.g. [8, 8, 1]",
                    lambda v: _ints(v, 1) and v),
    "input": ("the input the model expects, e.g. {'pixels': 'unit', "
              "'normalization': 'none'} (docs/checkpoint.md)",
              lambda v: not input_spec.problems(v)),
    "head_path": ("the slash path of the final Dense inside params, e.g. "
                  "'head'", lambda v: isinstance(v, str) and v),
}
OPTIONAL_KEYS = {
    "class_names": ("a name per output, a list of strings (null: unnamed)",
                    lambda v: isinstance(v, list) and all(
                        n is None or (isinstance(n, str) and n)
                        for n in v)),
    "dataset": ("the name of the dataset it was trained on, e.g. 'digits'",
                lambda v: isinstance(v, str) and v),
    "accuracy": ("its test accuracy on its classes, a number in [0, 1]",
                 lambda v: isinstance(v, (int, float)) and not isinstance(
                     v, bool) and 0 <= v <= 1),
}
# The keys of formats /1 and /2, read as /3 by ``_upgrade``.
_V2_KEYS = {
    **{k: METADATA_KEYS[k] for k in ("model", "adapter_dim", "num_classes",
                                     "class_order", "input_shape")},
    "input_mean": ("the per-channel mean of the raw training inputs, a list "
                   "of numbers", _numbers),
    "input_std": ("the per-channel std of the raw training inputs, a list "
                  "of numbers", _numbers),
    "dataset": OPTIONAL_KEYS["dataset"],
}


class DamagedCheckpointError(ValueError):
  """A checkpoint's files exist but cannot be read."""


class MetadataError(ValueError):
  """A classifier's metadata lacks a key or holds a wrong value."""


class TrainCheckpoints:
  """Epoch-boundary checkpoints of a ``TrainState`` under ``directory``."""

  def __init__(self, directory, max_to_keep=2):
    self._directory = os.path.abspath(directory)
    self._manager = ocp().CheckpointManager(
        self._directory,
        options=ocp().CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def save(self, epoch, host_state):
    self._manager.save(epoch, args=ocp().args.StandardSave(host_state))

  def epochs(self):
    """The epochs saved so far, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, epoch, host_state_template):
    abstract = jax.tree.map(ocp().utils.to_shape_dtype_struct,
                            host_state_template)
    epoch_dir = os.path.join(self._directory, str(epoch))
    earlier = [e for e in self.epochs() if e < epoch]
    fix = (f"delete {epoch_dir} to resume from epoch {earlier[-1]}"
           if earlier else f"delete {self._directory} to restart the step")
    return _restore(epoch_dir, "training checkpoint", fix,
                    lambda: self._manager.restore(
                        epoch, args=ocp().args.StandardRestore(abstract)))

  def delete(self, epoch):
    self._manager.delete(epoch)

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def save_classifier(path, variables, metadata):
  """Writes a classifier: ``variables`` and ``metadata`` (``METADATA_KEYS``,
  ``format`` added) as one orbax checkpoint. Orbax writes a temporary
  sibling and renames it, so a kill never leaves a partial classifier.

  Refuses to overwrite an existing classifier, and to write metadata that a
  later read would refuse.
  """
  path = os.path.abspath(path)
  if os.path.lexists(path):
    raise FileExistsError(f"{path} already exists; a saved classifier is "
                          f"never overwritten. Choose another path.")
  metadata = {"format": FORMAT, **metadata}
  _check_metadata(metadata, f"the metadata given for {path}", FORMAT,
                  fix="Complete the metadata (docs/checkpoint.md lists "
                  "every key)")
  checkpointer = ocp().Checkpointer(ocp().CompositeCheckpointHandler())
  checkpointer.save(path, ocp().args.Composite(
      variables=ocp().args.StandardSave(jax.device_get(variables)),
      metadata=ocp().args.JsonSave(metadata)))


def save_tree(path, tree):
  """Writes a pytree of arrays as one orbax checkpoint at ``path`` (a
  method's state beside a step's classifier), replacing one there: orbax
  writes a temporary sibling and renames it, so a kill leaves the old one
  or the new one, never a part."""
  ocp().Checkpointer(ocp().StandardCheckpointHandler()).save(
      os.path.abspath(path), args=ocp().args.StandardSave(jax.device_get(tree)),
      force=True)


def load_tree(path, fix):
  """The pytree ``save_tree`` wrote at ``path``, as numpy arrays; a damaged
  one raises ``DamagedCheckpointError`` with ``fix``."""
  path = os.path.abspath(path)
  return _restore(path, "checkpoint", fix, lambda: ocp().Checkpointer(
      ocp().StandardCheckpointHandler()).restore(
          path, args=ocp().args.StandardRestore()))


def read_metadata(path):
  """The checked metadata of the classifier at ``path``, as format ``/3``;
  no array is read. ``input`` may be missing (a config may give it:
  ``teacher.resolve`` requires one of the two); every other key of
  ``METADATA_KEYS`` is required."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"No classifier at {path}: it does not exist. A classifier is a "
        f"directory written by cil_jax.classifier.checkpoint.save_classifier, e.g. "
        f"<workdir>/base/step_0/classifier of a finished run.")
  if not os.path.isdir(path):
    raise NotADirectoryError(
        f"No classifier at {path}: it is a file. A classifier is a directory "
        f"(variables/ and {METADATA_FILE}); give the directory (a .msgpack "
        f"file of a Flax module needs --config.teacher.module; "
        f"docs/checkpoint.md).")
  meta_path, format_ = os.path.join(path, METADATA_FILE), None
  if not os.path.exists(meta_path) and os.path.exists(
      os.path.join(path, _V1_METADATA_FILE)):
    meta_path, format_ = os.path.join(path, _V1_METADATA_FILE), _V1_FORMAT
  if not os.path.isfile(meta_path):
    raise DamagedCheckpointError(
        f"{path} is not a classifier or is damaged: {meta_path} is missing. "
        f"A classifier holds {VARIABLES_DIR}/ and {METADATA_FILE}; rerun the "
        f"step that wrote it, or write it with "
        f"cil_jax.classifier.checkpoint.save_classifier (a plain orbax checkpoint of a "
        f"Flax module needs --config.teacher.module; docs/checkpoint.md).")
  metadata = jsonio.read_json(
      meta_path, fix="rerun the step that wrote this classifier, or write it "
      "again with cil_jax.classifier.checkpoint.save_classifier")
  if format_ is None:
    format_ = (_V2_FORMAT if isinstance(metadata, dict) and
               metadata.get("format") == _V2_FORMAT else FORMAT)
  _check_metadata(metadata, meta_path, format_, input_required=False)
  return _upgrade(metadata)


def _upgrade(metadata):
  """Metadata of format /1 or /2 as /3 (their inputs were the stored pixels
  normalised with the dataset's mean and std; their head was ``head``)."""
  if metadata["format"] == FORMAT:
    return metadata
  metadata = dict(metadata)
  metadata["input"] = {"pixels": "stored", "normalization": "mean_std",
                       "mean": metadata.pop("input_mean"),
                       "std": metadata.pop("input_std")}
  metadata["head_path"] = "head"
  metadata["source_format"] = metadata["format"]
  metadata["format"] = FORMAT
  return metadata


def load_classifier(path, expected_variables):
  """Restores variables and checks them leaf by leaf against
  ``expected_variables`` (arrays or shape structs of the model the metadata
  describes). Any difference in structure or shape raises before training.
  """
  metadata = read_metadata(path)
  path = os.path.abspath(path)
  fix = ("rerun the step that wrote it (delete its step directory), or "
         "write it again with cil_jax.classifier.checkpoint.save_classifier")
  if metadata.get("source_format") == _V1_FORMAT:
    restored = _restore(path, "classifier", fix, lambda: (
        ocp().StandardCheckpointer().restore(
            os.path.join(path, VARIABLES_DIR))))
  else:
    restored = _restore(path, "classifier", fix, lambda: ocp().Checkpointer(
        ocp().CompositeCheckpointHandler()).restore(path, ocp().args.Composite(
            variables=ocp().args.StandardRestore())).variables)
  check_shapes(restored, expected_variables, path,
               f"the model its metadata names ({metadata['model']['name']}, "
               f"{metadata['num_classes']} classes)",
               "Re-save the classifier with matching metadata.")
  return restored, metadata


def check_shapes(restored, expected, path, model, fix):
  """Raises unless ``restored`` has ``expected``'s leaves and shapes,
  naming up to three missing, unexpected and differing leaves."""
  want = _shapes(expected)
  got = _shapes(restored)
  if want != got:
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    differ = [(k, got[k], want[k]) for k in sorted(set(want) & set(got))
              if want[k] != got[k]][:3]
    raise ValueError(
        f"Checkpoint {path!r} does not match {model}: missing {missing}, "
        f"unexpected {extra}, shape (got, want) {differ}. {fix}")


def check_metadata(metadata, where, fix=None):
  """Checks ``/3`` metadata built elsewhere (a config's), ``input`` aside."""
  _check_metadata(metadata, where, FORMAT, input_required=False, fix=fix)


def _check_metadata(metadata, where, format_, input_required=True,
                    fix=None):
  """Raises ``MetadataError`` naming every missing key, or the first wrong
  value, of ``where``, with what the key should hold."""
  fix = fix or ("Rerun the step that wrote this classifier, or write it with "
                "cil_jax.classifier.checkpoint.save_classifier and complete metadata "
                "(docs/checkpoint.md)")
  keys = _V2_KEYS if format_ in (_V1_FORMAT, _V2_FORMAT) else METADATA_KEYS
  if not isinstance(metadata, dict):
    raise MetadataError(f"{where} holds a JSON {type(metadata).__name__}, "
                        f"not an object of the keys {list(keys)}. {fix}.")
  if metadata.get("format") != format_:
    raise MetadataError(
        f"{where} has format {metadata.get('format')!r}, expected "
        f"{format_!r}. {fix}.")
  missing = [k for k in keys if k not in metadata
             and (input_required or k != "input")]
  if missing:
    raise MetadataError(
        f"{where} lacks the key(s) " + "; ".join(
            f"{k!r} ({keys[k][0]})" for k in missing) + f". {fix}.")
  optional = {} if keys is _V2_KEYS else OPTIONAL_KEYS
  for key, (holds, ok) in {**keys, **optional}.items():
    if key in metadata and (key in keys or metadata[key] is not None) and (
        not ok(metadata[key])):
      detail = ""
      if key == "input":
        detail = " (" + "; ".join(input_spec.problems(metadata[key])) + ")"
      raise MetadataError(f"{where}: {key!r} is {metadata[key]!r}{detail}, "
                          f"but should hold {holds}. {fix}.")
  num_outputs = len(metadata["class_order"])
  if metadata["num_classes"] != num_outputs:
    raise MetadataError(
        f"{where}: num_classes is {metadata['num_classes']} but class_order "
        f"lists {num_outputs} classes. {fix}.")
  if len(set(metadata["class_order"])) != num_outputs:
    raise MetadataError(f"{where}: class_order {metadata['class_order']} "
                        f"lists a class twice. {fix}.")
  names = metadata.get("class_names")
  if names is not None and len(names) != num_outputs:
    raise MetadataError(
        f"{where}: class_names lists {len(names)} names but class_order "
        f"lists {num_outputs} classes. {fix}.")


def _restore(directory, what, fix, restore):
  """``restore()``, with orbax/tensorstore errors of damaged files turned
  into one ``DamagedCheckpointError`` naming ``directory`` and ``fix``."""
  try:
    return restore()
  except (ValueError, OSError, KeyError) as e:
    # Orbax leaves sibling reads failing on the same damage; their
    # tracebacks, logged when collected, would bury this message.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    cause = str(e).split(" [tensorstore_spec")[0][:300]
    raise DamagedCheckpointError(
        f"The {what} {directory} is damaged: it cannot be read "
        f"({type(e).__name__}: {cause}); {fix}.") from None


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in flat}
