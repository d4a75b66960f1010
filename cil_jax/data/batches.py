"""Host-side batching into ``[devices, per_device, ...]`` arrays."""

import numpy as np


class LeakError(RuntimeError):
  """A training batch holds a label outside the step's allowed classes."""


def num_train_batches(num_examples, batch_size):
  return num_examples // batch_size


def train_batches(images, labels, batch_size, num_devices, seed, epoch,
                  allowed_labels):
  """Yields shuffled batches for one epoch; the last partial batch is dropped.

  The order depends only on ``(seed, epoch)``, so a run resumed at an epoch
  boundary sees the same batches. Every batch is checked to hold only
  ``allowed_labels``: the guarantee that no old-class example trains a step.
  """
  allowed = np.asarray(sorted(allowed_labels))
  order = np.random.default_rng([seed, epoch]).permutation(len(labels))
  per_device = batch_size // num_devices
  for start in range(0, num_train_batches(len(labels), batch_size) * batch_size,
                     batch_size):
    idx = order[start:start + batch_size]
    batch_labels = labels[idx]
    if not np.isin(batch_labels, allowed).all():
      bad = sorted(set(batch_labels.tolist()) - set(allowed.tolist()))
      raise LeakError(f"Training batch holds labels {bad} outside this step's "
                      f"classes {allowed.tolist()}: old-class data leaked.")
    yield {
        "image": images[idx].reshape(num_devices, per_device,
                                     *images.shape[1:]),
        "label": batch_labels.reshape(num_devices, per_device),
    }


def eval_batches(images, labels, batch_size, num_devices):
  """Yields every example exactly once; the last batch is zero-padded and
  ``mask`` marks the real examples."""
  per_device = batch_size // num_devices
  for start in range(0, len(labels), batch_size):
    chunk_x = images[start:start + batch_size]
    chunk_y = labels[start:start + batch_size]
    pad = batch_size - len(chunk_y)
    mask = np.concatenate([np.ones(len(chunk_y), bool), np.zeros(pad, bool)])
    chunk_x = np.concatenate(
        [chunk_x, np.zeros((pad, *images.shape[1:]), images.dtype)])
    chunk_y = np.concatenate([chunk_y, np.zeros(pad, labels.dtype)])
    yield {
        "image": chunk_x.reshape(num_devices, per_device, *images.shape[1:]),
        "label": chunk_y.reshape(num_devices, per_device),
        "mask": mask.reshape(num_devices, per_device),
    }
