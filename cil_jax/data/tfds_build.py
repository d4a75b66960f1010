"""Everything that needs TFDS (and so TensorFlow): preparing a dataset,
decoding it once for the cache (``cache.py``) and streaming splits too
large to hold in memory.

Imported only inside the functions of ``source.py`` that need it: a run
whose dataset is cached never loads this module, TFDS or TensorFlow.
"""

import jax
import numpy as np
import tensorflow as tf  # only here and in fashion_mnist.py: see above
import tensorflow_datasets as tfds

from cil_jax.data import cache
from cil_jax.data import fashion_mnist
from cil_jax.data import digits

# Without TFDS's in-memory cache of small datasets: every split is read once
# here (a small one into the cil_jax cache; ``pipeline.filtered`` caches
# what a step keeps of a large one), so TFDS's cache would be a second copy,
# and the statistics' ``take`` of the first examples made tf.data warn that
# the cache was discarded unread.
_READ_CONFIG = tfds.ReadConfig(try_autocache=False)


def build(dataset_config):
  """``(info, arrays)``: ``cache.describe``'s dict of the dataset and this
  process's shard of each split that fits in memory, decoded, as
  ``{split: (images, labels)}``."""
  builder = _prepared_builder(dataset_config)
  image_key, label_key = builder.info.supervised_keys
  num_classes = builder.info.features[label_key].num_classes
  input_shape = builder.info.features[image_key].shape
  arrays, labels = {}, {}
  for which, split in _split_names(dataset_config).items():
    shard = tfds.split_for_jax_process(split)
    if cache.fits_in_memory(_num_examples(builder, shard), input_shape):
      arrays[which] = _decode(builder, shard)
      labels[which] = arrays[which][1]
    else:  # labels only: decoding a large split's images takes long
      labels[which] = np.concatenate([
          b[label_key] for b in builder.as_dataset(
              split=shard, shuffle_files=False, read_config=_READ_CONFIG,
              decoders={image_key: tfds.decode.SkipDecoding()}).batch(
                  8192).as_numpy_iterator()] or [np.zeros(0, np.int64)])
  stats_pixels = np.concatenate([
      b.astype(np.float64) for b in builder.as_dataset(
          split=dataset_config.train_split, as_supervised=True,
          shuffle_files=False, read_config=_READ_CONFIG).take(
              cache.STATS_EXAMPLES).map(
                  lambda image, label: image).batch(2048).as_numpy_iterator()])
  info = cache.describe(
      num_classes, input_shape, stats_pixels, labels, arrays,
      name=dataset_config.name, train_split=dataset_config.train_split,
      test_split=dataset_config.test_split,
      tfds_version=str(builder.info.version),
      class_names=list(builder.info.features[label_key].names),
      process_index=jax.process_index(), process_count=jax.process_count())
  return info, arrays


def streamed_split(dataset_config, which):
  """This process's shard of split ``which`` as a tf.data.Dataset of
  ``{"image": raw image, "label": int32 dataset class id}``."""
  ds = _prepared_builder(dataset_config).as_dataset(
      split=tfds.split_for_jax_process(_split_names(dataset_config)[which]),
      as_supervised=True, shuffle_files=False, read_config=_READ_CONFIG)
  return ds.map(lambda image, label: {"image": image,
                                      "label": tf.cast(label, tf.int32)})


def _split_names(dataset_config):
  return {"train": dataset_config.train_split,
          "test": dataset_config.test_split}


def _num_examples(builder, split):
  try:
    return builder.info.splits[split].num_examples
  except KeyError:  # no split sizes (tfds.testing.mock_data): decode it
    return 0


def _decode(builder, split):
  batches = list(builder.as_dataset(
      split=split, as_supervised=True, shuffle_files=False,
      read_config=_READ_CONFIG).batch(8192).as_numpy_iterator())
  return (np.concatenate([b[0] for b in batches]),
          np.concatenate([b[1] for b in batches]).astype(np.int32))


def _prepared_builder(dataset_config):
  """A TFDS builder whose data is prepared (built offline where we can)."""
  try:
    builder = tfds.builder(dataset_config.name,
                           data_dir=dataset_config.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"config.dataset.name={dataset_config.name!r} is neither "
                     f"{(digits.NAME,)} nor a TFDS dataset: {e}") from None
  keys = builder.info.supervised_keys
  if not keys or not isinstance(builder.info.features[keys[1]],
                                tfds.features.ClassLabel):
    raise ValueError(f"TFDS dataset {dataset_config.name!r} is not an image "
                     f"classification dataset (supervised image, ClassLabel "
                     f"label).")
  if builder.is_prepared():
    return builder
  manual_dir = dataset_config.manual_dir or fashion_mnist.DEBIAN_DIR
  if (dataset_config.name == "fashion_mnist"
      and fashion_mnist.has_debian_files(manual_dir)):
    fashion_mnist.prepare_from_debian(builder.data_dir_root, manual_dir)
  else:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=dataset_config.manual_dir or None))
  return tfds.builder(dataset_config.name,
                      data_dir=dataset_config.data_dir or None)
