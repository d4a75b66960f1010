"""A step's training data, on the host (tf.data) or resident on the devices.

Both give ``epoch(seed, epoch)`` (what to feed each step of an epoch) and
``make_step(train_step)`` (the pmapped function that consumes it):

- ``host``: a tf.data pipeline per epoch, prefetched to the devices; each
  batch is checked on the host for old-class labels.
- ``device``: the filtered, normalised split lives on every device; a step
  receives only a ``[devices, per_device]`` index array and gathers (and
  augments) its batch on device, so there is no per-step host work beyond
  the dispatch. The labels are checked once, when the data is loaded.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils
from jax import lax
from jax.experimental import multihost_utils

from cil_jax import train_step as ts
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
    self._base, self._allowed, self._augment = base, allowed, augment
    self._batch_size, self._devices = batch_size, devices
    self._shuffle_buffer = shuffle_buffer
    self.num_examples = num_examples
    self.steps_per_epoch = num_examples // (batch_size // jax.process_count())
    self.global_examples = num_examples

  def make_step(self, train_step):
    return ts.pmap_train_step(train_step)

  def epoch(self, seed, epoch):
    return jax_utils.prefetch_to_device(itertools.islice(pipeline.train_epoch(
        self._base, batch_size=self._batch_size,
        num_devices=len(self._devices), seed=seed, epoch=epoch,
        augment=self._augment, shuffle_buffer=self._shuffle_buffer,
        allowed_labels=self._allowed), self.steps_per_epoch), 2,
                                        self._devices)


class DeviceTrainData:
  mode = "device"

  def __init__(self, base, num_examples, allowed, augment, batch_size,
               devices, shuffle_buffer):
    del shuffle_buffer  # a full permutation per epoch
    arrays = [b for b in base.batch(8192).as_numpy_iterator()]
    images = np.concatenate([b["image"] for b in arrays])
    labels = np.concatenate([b["label"] for b in arrays])
    if len(labels) != num_examples:
      raise RuntimeError(f"Expected {num_examples} training examples from the "
                         f"class counts but read {len(labels)}; delete the "
                         f"stale cil_jax_stats_*.json beside the dataset.")
    batches.check_labels(labels, allowed)
    self.num_examples = num_examples
    self._augment, self._batch_size, self._devices = (
        augment, batch_size // jax.process_count(), devices)
    self.steps_per_epoch = num_examples // self._batch_size
    self.global_examples = num_examples
    self._data = ts.replicate({"image": images, "label": labels}, devices)

  def make_step(self, train_step):
    augment = self._augment

    def step(state, teacher, data, feed, rng):
      indices = feed["indices"]
      batch = {"image": data["image"][indices], "label": data["label"][indices]}
      if augment:
        # Augmentation depends on the data order, not on the model's rng
        # or state, so stacked members (cil_jax.members) share it.
        seed = feed["augment_seed"]
        key = jax.random.fold_in(jax.random.fold_in(
            jax.random.PRNGKey(seed[0]), seed[1]),
                                 lax.axis_index(ts.BATCH_AXIS))
        batch["image"] = random_crop_flip(key, batch["image"])
      return train_step(state, teacher, batch, rng)

    pmapped = jax.pmap(step, axis_name=ts.BATCH_AXIS,
                       in_axes=(0, 0, 0, 0, None), donate_argnums=(0,))
    return lambda state, teacher, feed, rng: pmapped(
        state, teacher, self._data, feed, rng)

  def epoch(self, seed, epoch):
    """Per step: ``indices`` ``[devices, per_device]`` into the resident
    data, and ``augment_seed`` (epoch seed, step) for on-device augmentation."""
    s = pipeline.epoch_seed(seed, epoch)
    order = np.random.default_rng(s).permutation(
        self.num_examples).astype(np.int32)
    num_devices = len(self._devices)
    for i in range(self.steps_per_epoch):
      start = i * self._batch_size
      yield {
          "indices": order[start:start + self._batch_size].reshape(
              num_devices, -1),
          "augment_seed": np.tile(np.array([s, i], np.uint32),
                                  (num_devices, 1)),
      }


def random_crop_flip(rng, images):
  """The device-side twin of ``pipeline._augment``: 4-pixel reflect-padded
  random crop and random horizontal flip, per image."""
  n, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
  k_y, k_x, k_flip = jax.random.split(rng, 3)
  ys = jax.random.randint(k_y, (n,), 0, 9)
  xs = jax.random.randint(k_x, (n,), 0, 9)
  crops = jax.vmap(lambda img, y, x: lax.dynamic_slice(
      img, (y, x, 0), (height, width, channels)))(padded, ys, xs)
  flip = jax.random.bernoulli(k_flip, 0.5, (n,))
  return jnp.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
