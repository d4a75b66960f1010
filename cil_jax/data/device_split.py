"""A training split resident on the devices, shared by every class step.

``DeviceSplit`` places this process's whole training split on every device
once per run, as stored (uint8 images for TFDS datasets) with the labels as
output positions and the normalisation statistics. A class step selects its
examples by index, so every step of every method feeds arrays of the same
shapes to the one compiled train step, and the images are normalised inside
the step (the same float32 arithmetic as on the host: ``(x - mean) / std``).

The ``batch_fn``s here are module-level functions, so a pmapped step built
on one of them is the same program for every step (``pmap_train_step`` is
cached by function).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cil_jax import parallel
from cil_jax.data import arrays
from cil_jax.data import augment as augment_lib

# Rows per teacher forward pass when precomputing its logits: one shape,
# one compile; the last chunk is padded.
_TEACHER_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class DeviceSplit:
  """The split on the host (``image``, ``label``: positions, -1 for classes
  outside the run) and its replicated device copy ``resident``."""
  image: np.ndarray
  label: np.ndarray
  mean: np.ndarray  # float32 [channels]
  std: np.ndarray
  resident: dict

  @classmethod
  def create(cls, image, label, mean, std, devices):
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    resident = parallel.replicate(
        {"image": image, "label": label, "mean": mean, "std": std}, devices)
    return cls(image, label, mean, std, resident)

  def normalised(self, rows):
    """Host float32 images of ``rows``, as the step normalises them."""
    return arrays.standardize(self.image[rows], self.mean, self.std)

  def teacher_logits(self, logits_fn, teacher_variables, rows, devices):
    """``resident`` plus ``teacher_logits`` ``[examples, outputs]``: the
    teacher's logits on ``rows`` (zeros elsewhere), computed once.

    Without augmentation the frozen teacher's logits on an example never
    change, so a step gathers them instead of running the teacher per batch.
    ``logits_fn(variables, images)`` is a jitted inference forward pass.
    """
    logits = arrays.apply_in_chunks(
        logits_fn, teacher_variables, len(rows),
        lambda start, stop: self.normalised(rows[start:stop]),
        _TEACHER_CHUNK)
    if logits is None:
      logits = np.zeros((0, 0))
    table = np.zeros((len(self.label), logits.shape[-1]), np.float32)
    table[rows] = logits
    return dict(self.resident, teacher_logits=parallel.replicate(table,
                                                                  devices))

  def zero_teacher_logits(self, num_outputs, devices):
    """``resident`` plus all-zero ``teacher_logits`` ``[examples,
    num_outputs]``, laid out as ``teacher_logits`` lays out real ones."""
    table = np.zeros((len(self.label), num_outputs), np.float32)
    return dict(self.resident, teacher_logits=parallel.replicate(table,
                                                                  devices))


def _gather(resident, indices):
  batch = {"image": (resident["image"][indices].astype(jnp.float32)
                     - resident["mean"]) / resident["std"],
           "label": resident["label"][indices]}
  if "teacher_logits" in resident:
    batch["teacher_logits"] = resident["teacher_logits"][indices]
  return batch


def gathered_batch(resident, feed):
  """One device's batch: its ``indices`` of the resident split."""
  return _gather(resident, feed["indices"])


def gathered_augmented_batch(resident, feed):
  """``gathered_batch``, randomly cropped and flipped (``augment.py``)."""
  batch = _gather(resident, feed["indices"])
  key = augment_lib.device_key(feed["augment_seed"])
  return dict(batch, image=augment_lib.random_crop_flip(key, batch["image"]))
