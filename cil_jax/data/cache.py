"""A TFDS dataset's decoded arrays and description, cached so that a run
whose data is prepared imports neither TensorFlow nor TFDS (together about
6 s and 850 MB of memory per process).

One directory per dataset, train and test split and process shard::

  <data_dir>/cil_jax/<name>/<train split>,<test split>/<index>of<count>/
    train.npz, test.npz  this shard's {"images": as stored (uint8),
                         "labels": int32}, for splits held in memory
    info.json            ``describe``'s dict; written last, so it marks a
                         complete cache

``<data_dir>`` is ``config.dataset.data_dir``, else TFDS's own default
($TFDS_DATA_DIR, else ~/tensorflow_datasets). The comma cannot occur in a
TFDS split name, so the directory names one pair of splits. The cache keeps
the TFDS version it was built from (``info.json``): delete the directory to
rebuild it, e.g. after a TFDS upgrade. A damaged file is an error naming it,
never silently rebuilt: parallel runs share the cache, and a rebuild would
hide whatever damaged it.
"""

import math
import os
import uuid
import zipfile

import numpy as np

from cil_jax import jsonio

# Splits up to this size (decoded, uint8) are held in memory as arrays;
# larger ones are streamed from TFDS by tf.data.
ARRAYS_MAX_BYTES = 2 * 2**30
# The mean/std come from the first images of the whole train split, the
# same on every process.
STATS_EXAMPLES = 10_000
_FORMAT = 1  # of info.json; a reader refuses any other


def data_root(dataset_config):
  return dataset_config.data_dir or os.environ.get(
      "TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"),
                                    "tensorflow_datasets"))


def directory(dataset_config, process_index, process_count):
  return os.path.join(
      data_root(dataset_config), "cil_jax", dataset_config.name,
      f"{dataset_config.train_split},{dataset_config.test_split}",
      f"{process_index}of{process_count}")


def fits_in_memory(num_examples, input_shape):
  return num_examples * math.prod(input_shape) <= ARRAYS_MAX_BYTES


def describe(num_classes, input_shape, stats_pixels, labels, in_memory,
             **provenance):
  """What a run needs to know of a dataset, as a JSON-able dict: mean/std
  per channel of ``stats_pixels`` (float64, the train split's first
  ``STATS_EXAMPLES`` images), per-class counts of ``labels`` (split -> this
  shard's labels), the splits held in memory and ``provenance`` (names and
  versions)."""
  axes = tuple(range(stats_pixels.ndim - 1))
  return dict(
      provenance, format=_FORMAT, num_classes=int(num_classes),
      input_shape=[int(d) for d in input_shape],
      mean=stats_pixels.mean(axes).tolist(),
      std=np.maximum(stats_pixels.std(axes), 1e-6).tolist(),
      counts={which: np.bincount(y, minlength=num_classes).tolist()
              for which, y in labels.items()},
      in_memory=sorted(in_memory))


def read_info(cache_dir):
  """``info.json``'s dict, or ``None`` if there is no cache yet."""
  path = os.path.join(cache_dir, "info.json")
  if not os.path.isfile(path):
    return None
  info = jsonio.read_json(path, fix=_fix(cache_dir))
  keys = ("num_classes", "input_shape", "mean", "std", "counts", "in_memory")
  if (not isinstance(info, dict) or info.get("format") != _FORMAT
      or any(k not in info for k in keys)):
    raise jsonio.DamagedFileError(
        f"{path} is not a cil_jax dataset cache of format {_FORMAT}; "
        f"{_fix(cache_dir)}.")
  return info


def read_arrays(cache_dir, which, info):
  """Split ``which``'s ``(images, labels)``, checked against ``info``."""
  path = os.path.join(cache_dir, f"{which}.npz")
  try:
    with np.load(path) as f:
      images, labels = f["images"], f["labels"]
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise jsonio.DamagedFileError(
        f"{path} cannot be read ({type(e).__name__}: {e}); "
        f"{_fix(cache_dir)}.") from None
  counts = np.bincount(labels, minlength=info["num_classes"])
  if (list(images.shape[1:]) != info["input_shape"]
      or len(images) != len(labels)
      or counts.tolist() != info["counts"][which]):
    raise jsonio.DamagedFileError(
        f"{path} does not match {os.path.join(cache_dir, 'info.json')} "
        f"(images {images.shape}, class counts {counts.tolist()}); "
        f"{_fix(cache_dir)}.")
  return images, labels


def write(cache_dir, info, arrays):
  """Writes the cache: ``arrays`` (split -> ``(images, labels)``) first,
  each to a temporary file renamed into place, then ``info.json``; runs
  racing to write the same cache write the same bytes."""
  os.makedirs(cache_dir, exist_ok=True)
  for which, (images, labels) in arrays.items():
    path = os.path.join(cache_dir, f"{which}.npz")
    # Unique per writer (as jsonio's); np.savez appends .npz unless given.
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}.npz"
    try:
      np.savez(tmp, images=images, labels=labels)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  jsonio.write_json(os.path.join(cache_dir, "info.json"), info)


def _fix(cache_dir):
  return (f"delete {cache_dir} (rm -r) and run again to rebuild it from "
          f"TFDS")
