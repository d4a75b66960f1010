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
- ``device``: the run's whole training split lives on every device, as
  stored (``device_split.py``); a feed is only a ``[devices, per_device]``
  index array into it, gathered and normalised on device, so there is no
  per-step host work beyond the dispatch and every step feeds the compiled
  step the same shapes. Without augmentation the teacher's logits can be
  precomputed once per step (``with_teacher_logits``).

In-memory labels are checked once, when the data is loaded.
"""

import copy
import itertools

import jax
import numpy as np
from flax import jax_utils
from jax.experimental import multihost_utils

from cil_jax.data import augment as augment_lib
from cil_jax.data import batches
from cil_jax.data import device_split as device_split_lib
from cil_jax.data import pipeline

PLACEMENTS = ("auto", "device", "host")


def make_train_data(source, class_ids, mapping, dataset_config, batch_size,
                    devices, device_split=None):
  """Training data of ``class_ids`` in the configured placement.

  ``device_split`` (``device_split_of``), when given, is the run's resident
  split, shared by its steps; placement ``device`` needs the split in
  memory.
  """
  info = source.info
  local = int(info.class_counts["train"][np.asarray(class_ids)].sum())
  # Every process must run the same number of steps (the gradient pmean
  # spans all of them): the smallest shard sets it.
  counts = np.asarray(multihost_utils.process_allgather(np.int64(local)))
  steps_per_epoch = int(counts.min()) // (batch_size // jax.process_count())
  allowed = sorted(int(mapping[c]) for c in class_ids)
  if placement_of(source, dataset_config) == "device":
    split = device_split or device_split_of(source, mapping, devices)
    rows = np.flatnonzero(np.isin(split.label, allowed)).astype(np.int32)
    if len(rows) != local:
      raise RuntimeError(
          f"Expected {local} training examples from the dataset's cached "
          f"class counts but found {len(rows)}: the cache is stale; delete "
          f"the dataset's directory under <data_dir>/cil_jax/ to rebuild it.")
    data = DeviceTrainData(split, rows, allowed, info.augment, batch_size,
                           devices)
  else:
    data = HostTrainData(pipeline.filtered(source, "train", class_ids,
                                           mapping),
                         local, allowed, info.augment, batch_size, devices,
                         dataset_config.shuffle_buffer)
  data.steps_per_epoch = steps_per_epoch  # equal on every process
  data.global_examples = int(counts.sum())
  return data


def placement_of(source, dataset_config):
  """``device`` or ``host``: ``auto`` keeps the training split on the
  devices when it is in memory and fits ``device_max_mb`` as stored."""
  arrays = source.arrays("train")
  if arrays is None:  # streamed: too large for memory, so for the devices
    if dataset_config.placement == "device":
      raise ValueError(
          "config.dataset.placement='device' keeps the whole training split "
          "on the devices, but this split is streamed (too large to hold in "
          "memory); use placement 'auto' or 'host'.")
    return "host"
  if dataset_config.placement != "auto":
    return dataset_config.placement
  return ("device" if arrays[0].nbytes / 2**20 <= dataset_config.device_max_mb
          else "host")


def device_split_of(source, mapping, devices):
  """This process's training split on ``devices``, labels as positions."""
  images, labels = source.arrays("train")
  return device_split_lib.DeviceSplit.create(
      images, np.asarray(mapping, np.int32)[labels], source.info.mean,
      source.info.std, devices)


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
    self.augment = augment
    self.batch_fn = _fed_augmented_batch if augment else _fed_batch

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
  """A step's examples (``rows``) of a resident ``DeviceSplit``."""
  mode = "device"

  def __init__(self, split, rows, allowed, augment, batch_size, devices):
    batches.check_labels(split.label[rows], allowed)
    self.split, self.rows = split, rows
    self.num_examples = len(rows)
    self._batch_size = batch_size // jax.process_count()
    self._devices = devices
    self.steps_per_epoch = self.num_examples // self._batch_size
    self.global_examples = self.num_examples
    self.resident = split.resident
    self.augment = augment
    self.batch_fn = (device_split_lib.gathered_augmented_batch if augment
                     else device_split_lib.gathered_batch)

  @classmethod
  def from_examples(cls, examples, allowed, augment, batch_size, devices):
    """All of ``examples`` (``pipeline.Examples``, normalised) as a step's
    data on a split of their own."""
    channels = examples.image.shape[-1]
    split = device_split_lib.DeviceSplit.create(
        examples.image, examples.label, np.zeros(channels),
        np.ones(channels), devices)
    return cls(split, np.arange(len(examples), dtype=np.int32), allowed,
               augment, batch_size, devices)

  def with_teacher_logits(self, logits_fn, teacher_variables):
    """This data with the teacher's logits precomputed into the resident
    data and gathered into every batch (``teacher_logits``); only without
    augmentation, where they are constant."""
    if self.augment:
      raise ValueError("Teacher logits cannot be precomputed for augmented "
                       "batches.")
    data = copy.copy(self)
    data.resident = self.split.teacher_logits(
        logits_fn, teacher_variables, self.rows, self._devices)
    return data

  def with_zero_teacher_logits(self, num_outputs):
    """This data with all-zero ``teacher_logits`` of ``num_outputs``: the
    batches of a distilling step that trains without a teacher (eps 0)."""
    data = copy.copy(self)
    data.resident = self.split.zero_teacher_logits(num_outputs,
                                                   self._devices)
    return data

  def epoch(self, seed, epoch):
    """Per step: ``indices`` ``[devices, per_device]`` into the resident
    split, and the batch's ``augment_seed``."""
    s = pipeline.epoch_seed(seed, epoch)
    num_devices = len(self._devices)
    steps = pipeline.epoch_indices(s, self.num_examples, self._batch_size,
                                   num_devices)
    for step, indices in enumerate(itertools.islice(steps,
                                                    self.steps_per_epoch)):
      yield {"indices": self.rows[indices],
             "augment_seed": _augment_seeds(s, step, num_devices)}


def without_rows(data, rows):
  """A copy of device-resident ``data`` that never trains on the split's
  ``rows`` (a method's held-out examples, ``Spec.train_rows``); one
  process only."""
  if data.mode != "device" or jax.process_count() > 1:
    raise ValueError(
        "Holding training rows out needs the training split on the "
        "devices of one process; set config.dataset.placement='device' "
        "or drop the method that holds rows out from config.methods.")
  data = copy.copy(data)
  data.rows = np.setdiff1d(data.rows, rows).astype(np.int32)
  data.num_examples = data.global_examples = len(data.rows)
  data.steps_per_epoch = data.num_examples // data._batch_size  # pylint: disable=protected-access
  return data


def epoch_chunks(data, seed, epoch, chunk):
  """``data.epoch``'s feeds stacked ``chunk`` at a time, leaves ``[devices,
  chunk, ...]``, for ``train_step.pmap_train_epoch``; ``valid`` ``[devices,
  chunk]`` marks real steps, the last chunk padded with copies of its last
  feed."""
  feeds = list(data.epoch(seed, epoch))
  num_devices = len(next(iter(feeds[0].values())))
  for start in range(0, len(feeds), chunk):
    part = feeds[start:start + chunk]
    valid = np.arange(chunk) < len(part)
    part += [part[-1]] * (chunk - len(part))
    stacked = {key: np.stack([f[key] for f in part], axis=1)
               for key in part[0]}
    stacked["valid"] = np.tile(valid, (num_devices, 1))
    yield stacked


def _augment_seeds(epoch_seed, step, num_devices):
  """``[devices, 2]``: (epoch seed, step) for every device; each device
  folds in its own index (``augment.device_key``)."""
  return np.tile(np.array([epoch_seed, step], np.uint32), (num_devices, 1))


def _fed_batch(resident, feed):
  del resident  # host placement keeps nothing on the devices
  return {"image": feed["image"], "label": feed["label"]}


def _fed_augmented_batch(resident, feed):
  batch = _fed_batch(resident, feed)
  key = augment_lib.device_key(feed["augment_seed"])
  return dict(batch, image=augment_lib.random_crop_flip(key, batch["image"]))
