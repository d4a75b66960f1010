"""Datasets as tf.data sources: any TFDS image classification dataset, or
scikit-learn's embedded digits through the same interface.

A ``Source`` gives this process's shard of a split as a ``tf.data.Dataset``
of ``{"image": raw image, "label": dataset class id}`` plus a
``DatasetInfo`` (class count, input shape, normalisation statistics and
per-class example counts, computed once and cached beside the data).
"""

import dataclasses
import json
import os

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cil_jax.data import digits
from cil_jax.data import fashion_mnist

EMBEDDED = ("digits",)
AUGMENTED = ("cifar10", "cifar100")  # random crop (4 px padding) + flip
_STATS_EXAMPLES = 10_000  # images used for the mean/std estimate
# Splits up to this size (decoded, uint8) are held in memory as arrays.
_ARRAYS_MAX_BYTES = 2 * 2**30
# Without TFDS's in-memory cache of small datasets: every dataset we ask TFDS
# for is read once (small splits become arrays; ``pipeline.filtered`` caches
# what it keeps of a large one), so the cache would only hold a second copy,
# and the statistics' ``take`` of the first examples (``cache().take(k)``)
# made tf.data warn that the cache was discarded unread.
_READ_CONFIG = tfds.ReadConfig(try_autocache=False)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the pipeline needs to know about a dataset."""
  name: str
  num_classes: int
  input_shape: tuple
  mean: tuple  # per channel, of raw pixel values
  std: tuple
  class_counts: dict  # split -> np.ndarray [num_classes], this process
  augment: bool


class Source:
  """One dataset: ``split(name)`` and ``info``."""

  def __init__(self, dataset_config):
    self.config = dataset_config
    self._decoded = {}
    if dataset_config.name == "digits":
      self._arrays = digits.load()
      self._builder = None
    else:
      self._arrays = None
      self._builder = _prepared_builder(dataset_config)
    self.info = self._make_info()

  def split(self, which, shard=True):
    """This process's shard of split ``which`` ("train" or "test"), or the
    whole split with ``shard=False``."""
    if self._arrays is not None:
      images, labels = self._arrays[which]
      ds = tf.data.Dataset.from_tensor_slices(
          {"image": images, "label": labels})
      return ds.shard(jax.process_count(), jax.process_index()) if shard else ds
    split_name = {"train": self.config.train_split,
                  "test": self.config.test_split}[which]
    ds = self._builder.as_dataset(
        split=tfds.split_for_jax_process(split_name) if shard else split_name,
        as_supervised=True, shuffle_files=False, read_config=_READ_CONFIG)
    return ds.map(lambda image, label: {"image": image,
                                        "label": tf.cast(label, tf.int32)})

  def arrays(self, which):
    """This process's shard of split ``which`` as numpy ``(images,
    labels)``, decoded once and kept (every step and evaluation of a run, or
    of a group of runs, filters the same split again); ``None`` for a split
    too large to hold in memory, which is streamed by ``split``."""
    if which in self._decoded:
      return self._decoded[which]
    if self._arrays is not None:
      images, labels = self._arrays[which]
      # As ``Dataset.shard``: every process_count-th example.
      arrays = (images[jax.process_index()::jax.process_count()],
                labels[jax.process_index()::jax.process_count()])
    else:
      split_name = {"train": self.config.train_split,
                    "test": self.config.test_split}[which]
      if (int(self.info.class_counts[which].sum()) *
          np.prod(self.info.input_shape) > _ARRAYS_MAX_BYTES):
        return None
      arrays = self._decoded_cache(split_name)
    self._decoded[which] = arrays
    return arrays

  def _decoded_cache(self, split_name):
    """This process's shard decoded, cached beside the prepared data as
    ``.npz`` (TFDS stores images encoded; decoding costs seconds a run)."""
    cache = os.path.join(
        self._builder.data_dir,
        f"cil_jax_arrays_{split_name}_{jax.process_index()}of"
        f"{jax.process_count()}.npz")
    if os.path.isfile(cache):
      with np.load(cache) as f:
        return f["images"], f["labels"]
    batches = list(self._builder.as_dataset(
        split=tfds.split_for_jax_process(split_name), as_supervised=True,
        shuffle_files=False, read_config=_READ_CONFIG).batch(
            8192).as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches]).astype(np.int32)
    try:
      tmp = f"{cache}.{os.getpid()}.tmp.npz"  # parallel runs may race here
      np.savez(tmp, images=images, labels=labels)
      os.replace(tmp, cache)
    except OSError:
      pass  # read-only data dir: decode again next time
    return images, labels

  def _make_info(self):
    if self._arrays is not None:
      num_classes = digits.NUM_CLASSES
      input_shape = self._arrays["train"][0].shape[1:]
    else:
      image_key, label_key = self._builder.info.supervised_keys
      num_classes = self._builder.info.features[label_key].num_classes
      input_shape = self._builder.info.features[image_key].shape
    stats = self._cached_stats(num_classes)
    return DatasetInfo(
        name=self.config.name, num_classes=num_classes,
        input_shape=tuple(int(d) for d in input_shape),
        mean=tuple(stats["mean"]), std=tuple(stats["std"]),
        class_counts={k: np.asarray(v) for k, v in stats["counts"].items()},
        augment=self.config.name in AUGMENTED)

  def _cached_stats(self, num_classes):
    """Mean/std of the train split's pixels and per-class counts of both
    splits, from one pass; cached as JSON beside the prepared data."""
    cache = None
    if self._builder is not None:
      cache = os.path.join(
          self._builder.data_dir,
          f"cil_jax_stats_{self.config.train_split}_{self.config.test_split}"
          f"_{jax.process_index()}of{jax.process_count()}.json")
      if os.path.isfile(cache):
        with open(cache) as f:
          return json.load(f)
    counts = {}
    for which in ("train", "test"):
      labels = np.concatenate([
          b for b in self.split(which).map(lambda ex: ex["label"]).batch(
              8192).as_numpy_iterator()] or [np.zeros(0, np.int32)])
      counts[which] = np.bincount(labels, minlength=num_classes).tolist()
    # Statistics from the whole split, so every process normalises alike.
    images = np.concatenate([
        b.astype(np.float64) for b in self.split("train", shard=False).take(
            _STATS_EXAMPLES).map(lambda ex: ex["image"]).batch(
                2048).as_numpy_iterator()])
    axes = tuple(range(images.ndim - 1))
    stats = {"mean": images.mean(axes).tolist(),
             "std": np.maximum(images.std(axes), 1e-6).tolist(),
             "counts": counts}
    if cache is not None:
      try:
        tmp = f"{cache}.{os.getpid()}.tmp"  # parallel runs may race here
        with open(tmp, "w") as f:
          json.dump(stats, f)
        os.replace(tmp, cache)
      except OSError:
        pass  # read-only data dir: recompute next time
    return stats


def _prepared_builder(dataset_config):
  """A TFDS builder whose data is prepared (built offline where we can)."""
  try:
    builder = tfds.builder(dataset_config.name,
                           data_dir=dataset_config.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"config.dataset.name={dataset_config.name!r} is neither "
                     f"{EMBEDDED} nor a TFDS dataset: {e}") from None
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
