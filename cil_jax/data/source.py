"""Datasets: any TFDS image classification dataset, or scikit-learn's
embedded digits, through one interface.

A ``Source`` gives this process's shard of a split as numpy arrays
(``arrays``), or, for a split too large to hold in memory, as a streamed
``tf.data.Dataset`` (``split``), plus a ``DatasetInfo`` (class count, input
shape, normalisation statistics and per-class example counts).

A TFDS dataset is decoded once into cil_jax's cache (``cache.py``); a
``Source`` over a cached dataset reads only that cache, without importing
TFDS or TensorFlow (``tfds_build.py`` is imported only to build the cache
or to stream).
"""

import dataclasses

import jax
import numpy as np

from cil_jax.data import cache
from cil_jax.data import digits

EMBEDDED = (digits.NAME,)
AUGMENTED = ("cifar10", "cifar100")  # random crop (4 px padding) + flip


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
  # The largest raw pixel value: 255 for TFDS images (uint8), 16 for digits
  # (``input_spec``: a classifier's "unit" pixels are raw / pixel_max).
  pixel_max: float = 255.0
  # The dataset's name of each class id (TFDS label names), if known.
  class_names: tuple = None


class Source:
  """One dataset: ``info``, ``arrays(which)`` and ``split(which)``."""

  def __init__(self, dataset_config):
    self.config = dataset_config
    if dataset_config.name in EMBEDDED:
      self.cache_dir = None
      self._arrays, description = _digits()
    else:
      self.cache_dir = cache.directory(dataset_config, jax.process_index(),
                                       jax.process_count())
      self._arrays = {}  # read from the cache when first asked for
      description = cache.read_info(self.cache_dir)
      if description is None:
        description, self._arrays = _build_cache(dataset_config,
                                                 self.cache_dir)
    self._description = description
    self.info = DatasetInfo(
        name=dataset_config.name, num_classes=description["num_classes"],
        input_shape=tuple(description["input_shape"]),
        mean=tuple(description["mean"]), std=tuple(description["std"]),
        class_counts={k: np.asarray(v)
                      for k, v in description["counts"].items()},
        augment=dataset_config.name in AUGMENTED,
        pixel_max=(digits.PIXEL_MAX if dataset_config.name == digits.NAME
                   else 255.0),
        class_names=(tuple(description["class_names"])
                     if description.get("class_names") else None))

  def normalize_as(self, mean, std):
    """From now on, inputs are ``(raw - mean) / std`` (a given teacher's
    input spec) instead of the dataset's own statistics."""
    self.info = dataclasses.replace(self.info, mean=tuple(mean),
                                    std=tuple(std))

  @classmethod
  def from_arrays(cls, name, train, test, num_classes, pixel_max):
    """A source over in-memory numpy ``(images, labels)`` splits (the Python
    API's data): raw images ``[N, *input_shape]`` whose largest possible
    value is ``pixel_max``, int dataset class ids below ``num_classes``."""
    source = cls.__new__(cls)
    source.config, source.cache_dir = None, None
    source._arrays = {  # pylint: disable=protected-access
        which: (np.asarray(images), np.asarray(labels, np.int32))
        for which, (images, labels) in (("train", train), ("test", test))}
    images = source._arrays["train"][0]  # pylint: disable=protected-access
    description = cache.describe(
        num_classes, images.shape[1:],
        images[:cache.STATS_EXAMPLES].astype(np.float64),
        {which: labels for which, (_, labels) in source._arrays.items()},  # pylint: disable=protected-access
        ("train", "test"))
    source._description = description  # pylint: disable=protected-access
    source.info = DatasetInfo(
        name=name, num_classes=num_classes,
        input_shape=tuple(description["input_shape"]),
        mean=tuple(description["mean"]), std=tuple(description["std"]),
        class_counts={k: np.asarray(v)
                      for k, v in description["counts"].items()},
        augment=False, pixel_max=float(pixel_max))
    return source

  def arrays(self, which):
    """This process's shard of split ``which`` ("train" or "test") as numpy
    ``(images, labels)``: raw images as stored, int32 dataset class ids;
    read once and kept (every step and evaluation of a run, or of a group
    of runs, filters the same split again). ``None`` for a split too large
    to hold in memory, which ``split`` streams."""
    if which not in self._arrays:
      if which not in self._description["in_memory"]:
        return None
      self._arrays[which] = cache.read_arrays(self.cache_dir, which,
                                              self._description)
    return self._arrays[which]

  def split(self, which):
    """This process's shard of a split that ``arrays`` does not hold, as a
    tf.data.Dataset of ``{"image": raw image, "label": int32 class id}``."""
    from cil_jax.data import tfds_build  # pylint: disable=g-import-not-at-top
    return tfds_build.streamed_split(self.config, which)


def _digits():
  """This process's shard of digits' splits, and their description."""
  data = digits.load()
  # As ``Dataset.shard``: every process_count-th example.
  shards = {which: (images[jax.process_index()::jax.process_count()],
                    labels[jax.process_index()::jax.process_count()])
            for which, (images, labels) in data.items()}
  train_images = data["train"][0]
  description = cache.describe(
      digits.NUM_CLASSES, train_images.shape[1:],
      train_images[:cache.STATS_EXAMPLES].astype(np.float64),
      {which: labels for which, (_, labels) in shards.items()}, shards)
  return shards, description


def _build_cache(dataset_config, cache_dir):
  """Prepares and decodes the dataset with TFDS, the only place a run
  imports it (and TensorFlow), and caches the result."""
  from cil_jax.data import tfds_build  # pylint: disable=g-import-not-at-top
  description, arrays = tfds_build.build(dataset_config)
  try:
    cache.write(cache_dir, description, arrays)
  except OSError as e:  # e.g. a read-only data_dir: decode again next time
    print(f"Could not cache the decoded dataset in {cache_dir} ({e}); every "
          f"run will decode it with TFDS again.", flush=True)
  return description, arrays
