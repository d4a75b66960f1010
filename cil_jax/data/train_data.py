"""A step's training data, on the host or resident on the devices.

Both placements give the same interface to the one pmapped train step
(``train_step.pmap_train_step``): ``resident``, data placed on the devices
once; ``epoch(seed, epoch)``, the *feeds* of an epoch's steps, pytrees with
a leading ``[devices]`` axis; and ``batch_fn(resident, feed)``, the pure
function that makes one device's batch inside the step and augments it
(``augment.py``) when the dataset augments.

- ``host``: a feed is the batch itself, prefetched to the devices. Examples
  in memory are batched in numpy in the same order as ``device`` (one
  permutation per epoch), so both placements train on the same batches; a
  streamed split goes through a tf.data shuffle buffer and each batch is
  checked on the host for old-class labels.
- ``device``: the filtered, normalised split lives on every device; a feed
  is only a ``[devices, per_device]`` index array, gathered on device, so
  there is no per-step host work beyond the dispatch.

In-memory labels are checked once, when the data is loaded.
"""

import itertools
import math

import jax
import numpy as np
from flax import jax_utils
from jax.experimental import multihost_utils

from cil_jax import parallel
from cil_jax.data import augment as augment_lib
from cil_jax.data import batches
from cil_jax.data import pipeline

PLACEMENTS = ("auto", "device", "host")


def make_train_data(source, class_ids, mapping, dataset_config, batch_size,
                    devices):
  """Training data of ``class_ids`` in the configured placement."""
  info = source.info
  local = int(info.class_counts["train"][np.asarray(class_ids)].sum())
  # Every process must run the same number of steps (the gradient pmean
  # spans all of them): the smallest shard sets it.
  counts = np.asarray(multihost_utils.process_allgather(np.int64(local)))
  steps_per_epoch = int(counts.min()) // (batch_size // jax.process_count())
  allowed = sorted(int(mapping[c]) for c in class_ids)
  base = pipeline.filtered(source, "train", class_ids, mapping)
  placement = dataset_config.placement
  if placement == "auto":
    megabytes = local * math.prod(info.input_shape) * 4 / 2**20
    placement = ("device" if megabytes <= dataset_config.device_max_mb
                 else "host")
  cls = DeviceTrainData if placement == "device" else HostTrainData
  data = cls(base, local, allowed, info.augment, batch_size, devices,
             dataset_config.shuffle_buffer)
  data.steps_per_epoch = steps_per_epoch  # equal on every process
  data.global_examples = int(counts.sum())
  return data


class HostTrainData:
  mode = "host"

  def __init__(self, base, num_examples, allowed, augment, batch_size,
               devices, shuffle_buffer):
    self._base, self._allowed = base, allowed
    if isinstance(base, pipeline.Examples):
      batches.check_labels(base.label, allowed)
    self._batch_size, self._devices = batch_size, devices
    self._shuffle_buffer = shuffle_buffer
    self.num_examples = num_examples
    self.steps_per_epoch = num_examples // (batch_size // jax.process_count())
    self.global_examples = num_examples
    self.resident = {}
    self.batch_fn = _batch_fn(_fed_batch, augment)

  def epoch(self, seed, epoch):
    """Per step: the batch ``image`` ``[devices, per_device, ...]`` and
    ``label`` ``[devices, per_device]``, and its ``augment_seed``."""
    num_devices = len(self._devices)
    s = pipeline.epoch_seed(seed, epoch)
    if isinstance(self._base, pipeline.Examples):
      host_batches = ({"image": self._base.image[indices],
                       "label": self._base.label[indices]}
                      for indices in pipeline.epoch_indices(
                          s, self.num_examples,
                          self._batch_size // jax.process_count(),
                          num_devices))
    else:
      host_batches = pipeline.train_epoch(
          self._base, batch_size=self._batch_size, num_devices=num_devices,
          shuffle_seed=s, shuffle_buffer=self._shuffle_buffer,
          allowed_labels=self._allowed)
    feeds = (dict(batch, augment_seed=_augment_seeds(s, step, num_devices))
             for step, batch in enumerate(itertools.islice(
                 host_batches, self.steps_per_epoch)))
    return jax_utils.prefetch_to_device(feeds, 2, self._devices)


class DeviceTrainData:
  mode = "device"

  def __init__(self, base, num_examples, allowed, augment, batch_size,
               devices, shuffle_buffer):
    del shuffle_buffer  # a full permutation per epoch
    examples = pipeline.in_memory(base)
    if len(examples) != num_examples:
      raise RuntimeError(
          f"Expected {num_examples} training examples from the dataset's "
          f"cached class counts but read {len(examples)}: the cache is "
          f"stale; delete the dataset's directory under <data_dir>/cil_jax/ "
          f"to rebuild it.")
    batches.check_labels(examples.label, allowed)
    self.num_examples = num_examples
    self._batch_size = batch_size // jax.process_count()
    self._devices = devices
    self.steps_per_epoch = num_examples // self._batch_size
    self.global_examples = num_examples
    self.resident = parallel.replicate(
        {"image": examples.image, "label": examples.label}, devices)
    self.batch_fn = _batch_fn(_gathered_batch, augment)

  def epoch(self, seed, epoch):
    """Per step: ``indices`` ``[devices, per_device]`` into the resident
    data, and the batch's ``augment_seed``."""
    s = pipeline.epoch_seed(seed, epoch)
    num_devices = len(self._devices)
    steps = pipeline.epoch_indices(s, self.num_examples, self._batch_size,
                                   num_devices)
    for step, indices in enumerate(itertools.islice(steps,
                                                    self.steps_per_epoch)):
      yield {"indices": indices,
             "augment_seed": _augment_seeds(s, step, num_devices)}


def _augment_seeds(epoch_seed, step, num_devices):
  """``[devices, 2]``: (epoch seed, step) for every device; each device
  folds in its own index (``augment.device_key``)."""
  return np.tile(np.array([epoch_seed, step], np.uint32), (num_devices, 1))


def _fed_batch(resident, feed):
  del resident  # host placement keeps nothing on the devices
  return {"image": feed["image"], "label": feed["label"]}


def _gathered_batch(resident, feed):
  indices = feed["indices"]
  return {"image": resident["image"][indices],
          "label": resident["label"][indices]}


def _batch_fn(select, augment):
  """``batch_fn(resident, feed)``: this device's batch, by ``select``,
  augmented if the dataset augments."""
  if not augment:
    return select

  def batch_fn(resident, feed):
    batch = select(resident, feed)
    key = augment_lib.device_key(feed["augment_seed"])
    return dict(batch, image=augment_lib.random_crop_flip(key, batch["image"]))

  return batch_fn
