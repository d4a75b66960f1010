"""What a finished class step leaves in its directory, and reading it back.

A step directory holds::

  classifier/    the model after the step (a cil_jax classifier checkpoint)
  penalty/       regularisation methods and the C_A they start from: per
                 regulariser, the anchor and importance the model leaves
                 for the next step (``methods.shared.penalties.after_step``), written
                 before classifier/
  memory.json    rehearsal methods and their C_A: the exemplar memory
                 after the step (``cil_jax.memory.exemplars``), before classifier/
  result.json    its test metrics (written last: the step is finished)
  checkpoints/   resumable training state, only while training
  tensorboard/   the training curves (``cil_jax.tensorboard``), if written

``StepResult`` is the step's value in memory: its ``record`` (the content
of ``result.json``), its ``variables``, its ``penalty`` and its exemplar ``memory``.
"""

import dataclasses
import os
import shutil
import uuid
from typing import Any

from cil_jax.classifier import checkpoint
from cil_jax import jsonio
from cil_jax import timer
from cil_jax.models import keras_model
from cil_jax.models.expand import resize_head

RESULT_FILE = "result.json"
CLASSIFIER_DIR = "classifier"
PENALTY_DIR = "penalty"


@dataclasses.dataclass(frozen=True)
class StepResult:
  record: dict  # what result.json holds: step, method, metrics, ...
  variables: Any  # host variables of the model after the step
  penalty: Any = None  # {regulariser: {"anchor", "importance"}}, or None
  memory: Any = None  # {"index", "label"} (cil_jax.memory.selection), or None

  @property
  def adapter_dim(self):
    return self.record["adapter_dim"]


def classifier_dir(step_dir):
  return os.path.join(step_dir, CLASSIFIER_DIR)


def has_classifier(step_dir):
  return os.path.exists(classifier_dir(step_dir))


def read_record(step_dir):
  """The step's ``result.json``, or ``None`` when the step is unfinished or
  its file is damaged (then the saved classifier is evaluated again)."""
  path = os.path.join(step_dir, RESULT_FILE)
  if not os.path.exists(path):
    return None
  try:
    record = jsonio.read_json(path)
  except jsonio.DamagedFileError as e:
    if not has_classifier(step_dir):
      raise jsonio.DamagedFileError(
          f"{e} Its classifier/ is missing too; delete {step_dir} to "
          f"retrain this step.") from None
    print(f"{path} is damaged; evaluating the step's saved classifier again "
          f"to rewrite it.", flush=True)
    return None
  if not isinstance(record, dict) or "adapter_dim" not in record:
    print(f"{path} is not a step result; evaluating the step's saved "
          f"classifier again to rewrite it.", flush=True)
    return None
  return record


def save_classifier(ctx, step_dir, variables, num_classes, adapter_dim):
  """Writes the step's (sequence-wide) model as a classifier of its
  ``num_classes`` seen classes, with the metadata that makes it a
  teacher."""
  metadata = {
      "model": (ctx.teacher["model"] if ctx.foreign
                else ctx.config.model.to_dict()), "adapter_dim": adapter_dim,
      "num_classes": num_classes, "class_order": ctx.order[:num_classes],
      "input_shape": list(ctx.dataset.input_shape),
      "input": ctx.input_spec, "head_path": ctx.head_path,
      "class_names": (ctx.class_names[:num_classes] if ctx.class_names
                      else None),
      "dataset": ctx.dataset.name}
  variables = resize_head(variables, num_classes, ctx.head_path)
  with timer.section("classifier_saves"):
    checkpoint.save_classifier(classifier_dir(step_dir), variables, metadata)
    if hasattr(ctx.foreign, "save_keras"):  # a Keras model: also as .keras
      ctx.foreign.widened(num_classes).save_keras(variables, os.path.join(
          classifier_dir(step_dir), keras_model.KERAS_FILE))


def load_classifier(ctx, step_dir, num_classes, adapter_dim):
  """A saved step's classifier, its head widened to the sequence's."""
  variables, _ = checkpoint.load_classifier(
      classifier_dir(step_dir), ctx.abstract(num_classes, adapter_dim))
  return resize_head(variables, ctx.num_outputs, ctx.head_path)


def save_penalty(step_dir, penalty):
  with timer.section("classifier_saves"):
    checkpoint.save_tree(os.path.join(step_dir, PENALTY_DIR), penalty)


def load_penalty(step_dir):
  path = os.path.join(step_dir, PENALTY_DIR)
  fix = f"delete {step_dir} to retrain the step"
  if not os.path.isdir(path):
    raise checkpoint.DamagedCheckpointError(
        f"{path} is missing: the step's classifier was saved without the "
        f"importance its regularisation method needs; {fix}.")
  return checkpoint.load_tree(path, fix)


def write_record(step_dir, record):
  jsonio.write_json(os.path.join(step_dir, RESULT_FILE), record)


def copy_finished_step(source_dir, step_dir):
  """Gives ``step_dir`` the finished step of ``source_dir`` (an identical
  run's), unless it has its own result already."""
  if not os.path.exists(os.path.join(step_dir, RESULT_FILE)):
    copy_step_dir(source_dir, step_dir)


def copy_step_dir(source_dir, step_dir):
  """Copies a finished step directory whole, then renames it into place; an
  unfinished one there (checkpoints of a killed run) is replaced."""
  tmp = f"{step_dir}.tmp-{uuid.uuid4().hex[:8]}"
  shutil.copytree(source_dir, tmp,
                  ignore=shutil.ignore_patterns("checkpoints"))
  shutil.rmtree(step_dir, ignore_errors=True)
  os.rename(tmp, step_dir)
