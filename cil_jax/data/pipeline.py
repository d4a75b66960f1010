"""A step's examples: class filtering, remapping, normalisation, and
batches for evaluation.

``filtered`` gives ``Examples`` (numpy) for a split held in memory, or a
tf.data.Dataset for a streamed one (only then is TensorFlow imported);
everything downstream takes either. Labels come out as output positions
(``classes.label_map``). Training orders derive from ``(seed, epoch)``
(``epoch_seed``), so a run resumed at an epoch boundary sees the same
batches. Evaluation covers every example of the requested classes exactly
once, in split order: the last batch is padded and ``mask`` marks the real
examples.
"""

import dataclasses

import jax
import numpy as np

from cil_jax.data import arrays
from cil_jax.data import batches


@dataclasses.dataclass(frozen=True)
class Examples:
  """A step's examples in memory: ``image`` float32, normalised;
  ``label`` int32 output positions."""
  image: np.ndarray
  label: np.ndarray

  def __len__(self):
    return len(self.label)


def filtered(source, which, class_ids, mapping):
  """Examples of ``class_ids`` from split ``which``, labels remapped,
  images normalised with the train statistics: ``Examples`` if the split
  is in memory, else a cached tf.data.Dataset of the same dicts."""
  info = source.info
  split = source.arrays(which)
  if split is None:
    return _streamed(source.split(which), info, class_ids, mapping)
  images, labels = split
  keep = np.isin(labels, np.asarray(class_ids))
  images = arrays.standardize(images[keep], info.mean, info.std)
  return Examples(image=images,
                  label=np.asarray(mapping, np.int32)[labels[keep]])


def _streamed(ds, info, class_ids, mapping):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  wanted = tf.constant(np.asarray(class_ids, np.int32))
  positions = tf.constant(np.asarray(mapping, np.int32))
  mean = tf.constant(info.mean, tf.float32)
  std = tf.constant(info.std, tf.float32)

  def keep(example):
    return tf.reduce_any(tf.equal(example["label"], wanted))

  def prepare(example):
    image = (tf.cast(example["image"], tf.float32) - mean) / std
    return {"image": image, "label": tf.gather(positions, example["label"])}

  return ds.filter(keep).map(prepare,
                             num_parallel_calls=tf.data.AUTOTUNE).cache()


def in_memory(base):
  """``base`` (``Examples`` or a tf.data.Dataset) as ``Examples``."""
  if isinstance(base, Examples):
    return base
  parts = list(base.batch(8192).as_numpy_iterator())
  return Examples(image=np.concatenate([p["image"] for p in parts]),
                  label=np.concatenate([p["label"] for p in parts]))


def epoch_seed(seed, epoch):
  return int(np.random.SeedSequence([*np.atleast_1d(seed), epoch])
             .generate_state(1)[0])


def epoch_indices(shuffle_seed, num_examples, batch_size, num_devices):
  """Per step of an epoch of in-memory examples: ``[devices, per_device]``
  indices of a batch of this process's ``batch_size``, from one permutation
  seeded by ``shuffle_seed``; the last partial batch is dropped."""
  order = np.random.default_rng(shuffle_seed).permutation(
      num_examples).astype(np.int32)
  for start in range(0, num_examples - batch_size + 1, batch_size):
    yield order[start:start + batch_size].reshape(num_devices, -1)


def train_epoch(base, *, batch_size, num_devices, shuffle_seed,
                shuffle_buffer, allowed_labels):
  """Numpy batches ``{"image": [D, B/D, ...], "label": [D, B/D]}`` for one
  epoch of this process from a streamed ``base``, shuffled in a buffer;
  the last partial batch is dropped. Each batch is checked to hold only
  ``allowed_labels``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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
  """Padded numpy batches with a ``mask``, in order; every example of
  ``base`` (``Examples`` or a tf.data.Dataset) exactly once."""
  process_batch = batch_size // jax.process_count()
  if isinstance(base, Examples):
    chunks = ((base.image[i:i + process_batch],
               base.label[i:i + process_batch])
              for i in range(0, len(base), process_batch))
  else:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    chunks = ((b["image"], b["label"])
              for b in base.batch(process_batch).prefetch(tf.data.AUTOTUNE)
              .as_numpy_iterator())
  for images, labels in chunks:
    yield batches.pad_and_shard(images, labels, process_batch, num_devices)
