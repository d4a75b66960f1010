"""Host-side batch helpers: the leak check and padding for evaluation."""

import numpy as np


class LeakError(RuntimeError):
  """A training batch holds a label outside the step's allowed classes."""


def check_labels(labels, allowed_labels):
  """Raises ``LeakError`` if ``labels`` hold anything outside
  ``allowed_labels``: the guarantee that no old-class example is in a
  step's batches. The rehearsal methods' memory rows come beside the batch
  (``check_memory_labels``), never in it, so this holds for every method."""
  allowed = np.asarray(sorted(allowed_labels))
  if not np.isin(labels, allowed).all():
    bad = sorted(set(np.unique(labels).tolist()) - set(allowed.tolist()))
    raise LeakError(f"Training batch holds labels {bad} outside this step's "
                    f"classes {allowed.tolist()}: old-class data leaked.")


def check_memory_labels(labels, num_old):
  """Raises ``LeakError`` unless every exemplar memory row (the only old
  training data a step may see, and only in a rehearsal method's step) is
  of an old class, a position below ``num_old``."""
  labels = np.asarray(labels)
  if len(labels) and (labels.min() < 0 or labels.max() >= num_old):
    raise LeakError(f"The exemplar memory holds labels "
                    f"{sorted(set(labels.tolist()))}, not all among the "
                    f"{num_old} old classes.")


def pad_and_shard(images, labels, batch_size, num_devices):
  """Zero-pads a (last, short) batch to ``batch_size``, adds ``mask``, and
  reshapes to ``[devices, batch_size / devices, ...]``."""
  pad = batch_size - len(labels)
  mask = np.concatenate([np.ones(len(labels), bool), np.zeros(pad, bool)])
  images = np.concatenate(
      [images, np.zeros((pad, *images.shape[1:]), images.dtype)])
  labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  per_device = batch_size // num_devices
  return {
      "image": images.reshape(num_devices, per_device, *images.shape[1:]),
      "label": labels.reshape(num_devices, per_device),
      "mask": mask.reshape(num_devices, per_device),
  }
