"""The check that runs at every step start: before any training, the
student's outputs for the old classes equal the teacher's on the test data.

A widened head that copied its old columns wrongly, a teacher applied to
other inputs than the student's, or a foreign module whose head was found
at the wrong path all break this equality, and all of them would otherwise
only show as lower accuracy after training. ``RECORDED_TOLERANCE`` is how
far a given classifier's accuracy here may fall from the one its metadata
records (another test split may differ a little; another input scaling
differs a lot).
"""

import jax
import numpy as np

RECORDED_TOLERANCE = 0.05


class TeacherMismatchError(ValueError):
  """The student at step start does not reproduce the teacher."""


def logits_fn(apply_fn):
  """A jitted ``(variables, images) -> logits`` of a model in inference."""
  return jax.jit(lambda v, x: apply_fn(v, x, train=False))


def old_logits(logits, variables, images, num_old, batch_size):
  """The first ``num_old`` outputs of ``logits`` (a ``logits_fn``) on
  ``images``, in batches."""
  return np.concatenate([
      np.asarray(logits(variables, images[i:i + batch_size]))[:, :num_old]
      for i in range(0, len(images), batch_size)])


def check_old_logits(student_logits, teacher_logits, what):
  """Raises ``TeacherMismatchError`` unless the two ``[examples, num_old]``
  arrays agree to float rounding; ``what`` names the step and the models."""
  scale = max(1.0, float(np.max(np.abs(teacher_logits))))
  diff = np.abs(student_logits - teacher_logits)
  if not np.all(diff <= 1e-4 * scale):
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    raise TeacherMismatchError(
        f"{what}: before training, the student's logits for the old classes "
        f"differ from the teacher's on the test data (largest difference "
        f"{diff[worst]:.3g} at example {worst[0]}, class output {worst[1]}, "
        f"over {diff.shape[0]} examples); the widened model does not "
        f"reproduce the teacher. Check the teacher's head path and that "
        f"student and teacher are the same architecture.")


def check_recorded_accuracy(accuracy, recorded, where):
  """A given classifier must score about what its metadata records."""
  if recorded is not None and accuracy < recorded - RECORDED_TOLERANCE:
    raise TeacherMismatchError(
        f"The teacher scores {accuracy:.1%} on this test data of its classes "
        f"but {where} records {recorded:.1%}: it most likely gets other "
        f"inputs than it was trained on. Check its input spec (key 'input', "
        f"or config.teacher.input_*; docs/checkpoint.md); if the recorded "
        f"accuracy is of another test set, remove 'accuracy' from the "
        f"metadata.")
