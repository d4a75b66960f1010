"""Orbax checkpoints: resumable training state, and saved classifiers.

Training state: one ``CheckpointManager`` per run and (method, class step),
saving the student's ``TrainState`` at epoch boundaries; ``fit`` resumes a
killed step from the newest epoch saved (by every member trained with it).

Classifiers: a directory holding ``variables/`` (orbax, params and BatchNorm
statistics) and ``metadata.json`` (model config, class order, input shape).
This is the format a user hands us as C_A, and what each finished step
writes, so any result can be the teacher of a later run.
"""

import json
import os
import uuid

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT = "cil_jax.classifier/1"
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"


class TrainCheckpoints:
  """Epoch-boundary checkpoints of a ``TrainState`` under ``directory``."""

  def __init__(self, directory, max_to_keep=2):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def save(self, epoch, host_state):
    self._manager.save(epoch, args=ocp.args.StandardSave(host_state))

  def epochs(self):
    """The epochs saved so far, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, epoch, host_state_template):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            host_state_template)
    return self._manager.restore(
        epoch, args=ocp.args.StandardRestore(abstract))

  def delete(self, epoch):
    self._manager.delete(epoch)

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def save_classifier(path, variables, metadata):
  """Writes a classifier atomically: a temporary sibling, then a rename.

  Refuses to overwrite an existing classifier.
  """
  path = os.path.abspath(path)
  if os.path.exists(path):
    raise FileExistsError(f"{path} already exists; a saved classifier is "
                          f"never overwritten. Choose another path.")
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  os.makedirs(tmp)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(tmp, VARIABLES_DIR),
                    jax.device_get(variables))
  checkpointer.wait_until_finished()
  with open(os.path.join(tmp, METADATA_FILE), "w") as f:
    json.dump({"format": FORMAT, **metadata}, f, indent=2)
  os.rename(tmp, path)


def read_metadata(path):
  meta_path = os.path.join(path, METADATA_FILE)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(
        f"No classifier at {path!r}: {METADATA_FILE} is missing. A classifier "
        f"directory holds {VARIABLES_DIR}/ (orbax) and {METADATA_FILE}; "
        f"write one with cil_jax.checkpoint.save_classifier.")
  with open(meta_path) as f:
    metadata = json.load(f)
  if metadata.get("format") != FORMAT:
    raise ValueError(f"{meta_path} has format {metadata.get('format')!r}, "
                     f"expected {FORMAT!r}.")
  return metadata


def load_classifier(path, expected_variables):
  """Restores variables and checks them leaf by leaf against
  ``expected_variables`` (arrays or shape structs of the model the metadata
  describes). Any difference in structure or shape raises before training.
  """
  metadata = read_metadata(path)
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(os.path.abspath(path), VARIABLES_DIR))
  want = _shapes(expected_variables)
  got = _shapes(restored)
  if want != got:
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    differ = [(k, got[k], want[k]) for k in sorted(set(want) & set(got))
              if want[k] != got[k]][:3]
    raise ValueError(
        f"Checkpoint {path!r} does not match the model its metadata names "
        f"({metadata['model']['name']}, {metadata['num_classes']} classes): "
        f"missing {missing}, unexpected {extra}, shape (got, want) {differ}. "
        f"Re-save the classifier with matching metadata.")
  return restored, metadata


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in flat}
