"""tf.data pipelines: class filtering, remapping, shuffling, batching into
``[devices, per_device, ...]``.

Labels come out as output positions (``classes.label_map``). Training
pipelines are rebuilt per epoch from a seed derived from ``(seed, epoch)``,
so a run resumed at an epoch boundary sees the same batches. Evaluation
covers every example of the requested classes exactly once: the last batch
is padded and ``mask`` marks the real examples.
"""

import jax
import numpy as np
import tensorflow as tf

from cil_jax.data import batches


def filtered(source, which, class_ids, mapping):
  """Examples of ``class_ids`` from split ``which``, labels remapped,
  images normalised with the train statistics; in memory."""
  info = source.info
  arrays = source.arrays(which)
  if arrays is not None:  # the same float32 arithmetic, in numpy
    images, labels = arrays
    keep = np.isin(labels, np.asarray(class_ids))
    images = ((images[keep].astype(np.float32)
               - np.asarray(info.mean, np.float32))
              / np.asarray(info.std, np.float32))
    return tf.data.Dataset.from_tensor_slices({
        "image": images,
        "label": np.asarray(mapping, np.int32)[labels[keep]]})
  wanted = tf.constant(np.asarray(class_ids, np.int32))
  positions = tf.constant(np.asarray(mapping, np.int32))
  mean = tf.constant(info.mean, tf.float32)
  std = tf.constant(info.std, tf.float32)

  def keep(example):
    return tf.reduce_any(tf.equal(example["label"], wanted))

  def prepare(example):
    image = (tf.cast(example["image"], tf.float32) - mean) / std
    return {"image": image, "label": tf.gather(positions, example["label"])}

  ds = source.split(which).filter(keep).map(
      prepare, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.cache()


def epoch_seed(seed, epoch):
  return int(np.random.SeedSequence([*np.atleast_1d(seed), epoch])
             .generate_state(1)[0])


def train_epoch(base, *, batch_size, num_devices, shuffle_seed,
                shuffle_buffer, allowed_labels):
  """Numpy batches ``{"image": [D, B/D, ...], "label": [D, B/D]}`` for one
  epoch of this process; the last partial batch is dropped. Each batch is
  checked to hold only ``allowed_labels``."""
  process_batch = batch_size // jax.process_count()
  per_device = process_batch // num_devices
  ds = base.shuffle(shuffle_buffer, seed=shuffle_seed,
                    reshuffle_each_iteration=False)
  ds = ds.batch(process_batch, drop_remainder=True)
  ds = ds.map(lambda b: {k: tf.reshape(v, [num_devices, per_device,
                                           *v.shape[1:]])
                         for k, v in b.items()})
  ds = ds.prefetch(tf.data.AUTOTUNE)
  for batch in ds.as_numpy_iterator():
    batches.check_labels(batch["label"], allowed_labels)
    yield batch


def eval_batches(base, *, batch_size, num_devices):
  """Padded numpy batches with a ``mask``; every example exactly once."""
  process_batch = batch_size // jax.process_count()
  ds = base.batch(process_batch).prefetch(tf.data.AUTOTUNE)
  for batch in ds.as_numpy_iterator():
    yield batches.pad_and_shard(batch["image"], batch["label"],
                                process_batch, num_devices)

