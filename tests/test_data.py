"""Class sequences, label remapping, pipelines, the augmentation, the
no-leak guarantee and the TensorFlow-free path of cached data (on digits
and hand-made data; real Fashion-MNIST is in test_tfds.py)."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from cil_jax import parallel
from cil_jax.data import augment
from cil_jax.data import batches
from cil_jax.data import cache
from cil_jax.data import classes
from cil_jax.data import digits
from cil_jax.data import pipeline
from cil_jax.data import source
from cil_jax.data import train_data
from cil_jax import config_files

default = config_files.from_checkout("default")


def test_digits_split_is_fixed_and_stratified():
  data = digits.load()
  train_x, train_y = data["train"]
  test_x, test_y = data["test"]
  assert train_x.shape == (1347, 8, 8, 1) and test_x.shape == (450, 8, 8, 1)
  assert train_x.max() == 16.0  # raw intensities 0..16
  # Stratified: each class keeps 25% of its 174-183 images in test.
  counts = np.bincount(test_y, minlength=10)
  assert counts.min() >= 43 and counts.max() <= 46
  np.testing.assert_array_equal(digits.load()["test"][1], test_y)


def test_digits_source_info_counts_and_statistics():
  info = source.Source(default.get_config().dataset).info
  raw = digits.load()
  assert info.num_classes == 10 and info.input_shape == (8, 8, 1)
  np.testing.assert_array_equal(info.class_counts["train"],
                                np.bincount(raw["train"][1]))
  np.testing.assert_array_equal(info.class_counts["test"],
                                np.bincount(raw["test"][1]))
  assert info.mean[0] == pytest.approx(raw["train"][0].mean(), rel=1e-6)
  assert info.std[0] == pytest.approx(raw["train"][0].std(), rel=1e-6)
  assert not info.augment


def test_class_sequence_errors_name_the_problem():
  with pytest.raises(ValueError, match="appears twice"):
    classes.class_sequence([[0, 1], [1, 2]], 10)
  with pytest.raises(ValueError, match="group 1 is empty"):
    classes.class_sequence([[0, 1], []], 10)
  with pytest.raises(ValueError, match="outside the dataset's classes 0..9"):
    classes.class_sequence([[0, 12]], 10)
  with pytest.raises(ValueError, match="groups is empty"):
    classes.class_sequence([], 10)


def test_order_seed_permutes_ids_and_keeps_group_sizes():
  groups = [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]]
  shuffled = classes.class_sequence(groups, 10, order_seed=3)
  assert [len(g) for g in shuffled] == [3, 2, 5]
  assert sorted(c for g in shuffled for c in g) == list(range(10))
  assert shuffled != groups
  assert shuffled == classes.class_sequence(groups, 10, order_seed=3)
  assert shuffled != classes.class_sequence(groups, 10, order_seed=4)


class _ArraySource:
  """A Source over in-memory arrays, for pipeline tests; with
  ``in_memory=False`` it streams, as a split too large to hold does."""

  def __init__(self, images, labels, in_memory=True, augment=False,
               mean=(1.0,), std=(2.0,)):
    self._data = {"image": images, "label": labels}
    self._in_memory = in_memory
    self.info = source.DatasetInfo(
        name="arrays", num_classes=10, input_shape=images.shape[1:],
        mean=mean, std=std,
        class_counts={"train": np.bincount(labels, minlength=10)},
        augment=augment)

  def split(self, which):
    del which
    return tf.data.Dataset.from_tensor_slices(self._data)

  def arrays(self, which):
    del which
    if not self._in_memory:
      return None
    return self._data["image"], self._data["label"]


def test_filtered_remaps_and_normalises_alike_in_numpy_and_tf_data():
  # uint8 pixels, as TFDS gives them, held in memory or streamed.
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (200, 3, 3, 2), dtype=np.uint8)
  labels = rng.integers(0, 10, 200).astype(np.int32)
  stats = {"mean": (73.34, 12.5), "std": (90.32, 3.3)}
  in_memory, streamed = (pipeline.filtered(
      _ArraySource(images, labels, held, **stats), "train", [2, 5],
      classes.label_map([7, 2, 5], 10)) for held in (True, False))
  assert isinstance(in_memory, pipeline.Examples)
  keep = np.isin(labels, [2, 5])
  np.testing.assert_array_equal(in_memory.label,
                                np.where(labels[keep] == 2, 1, 2))
  np.testing.assert_allclose(
      in_memory.image, (images[keep] - [73.34, 12.5]) / [90.32, 3.3],
      rtol=1e-6, atol=1e-6)
  streamed = pipeline.in_memory(streamed)  # the same float32 arithmetic
  np.testing.assert_array_equal(in_memory.image, streamed.image)
  np.testing.assert_array_equal(in_memory.label, streamed.label)


def _images():
  return np.random.default_rng(0).normal(size=(70, 4, 4, 1)).astype(
      np.float32)


def _train_data(placement, augment=False, streamed=False):
  """Training data of classes 5..9 (14 of ``_images`` each) on 8 devices."""
  labels = np.repeat(np.arange(5, 10), 14).astype(np.int32)
  config = default.get_config().dataset
  config.placement = placement
  return train_data.make_train_data(
      _ArraySource(_images(), labels, not streamed, augment),
      list(range(5, 10)),
      classes.label_map(list(range(10)), 10), config, 16,
      jax.local_devices()[:8])


def _batches(data, feed):
  """``data.batch_fn`` run on every device, as the train step runs it."""
  return jax.device_get(jax.pmap(data.batch_fn, axis_name=parallel.BATCH_AXIS)(
      data.resident, feed))


def _are_rows_of(images, rows):
  """Whether every image of ``images`` is one of ``rows``, unchanged."""
  rows = np.asarray(rows).reshape(len(rows), -1)
  return all((rows == x).all(1).any()
             for x in np.asarray(images).reshape(-1, rows.shape[1]))


@pytest.mark.parametrize("placement", ["host", "device"])
@pytest.mark.parametrize("streamed", [False, True])
def test_train_data_feeds_batches_in_a_seeded_order(placement, streamed):
  if placement == "device" and streamed:
    with pytest.raises(ValueError, match="placement='device' keeps the whole"):
      _train_data(placement, streamed=streamed)
    return
  data = _train_data(placement, streamed=streamed)
  assert data.mode == placement and data.num_examples == 70
  epoch1 = [_batches(data, feed) for feed in data.epoch([0, 1], 1)]
  assert len(epoch1) == 4  # 70 // 16, the partial batch dropped
  assert epoch1[0]["image"].shape == (8, 2, 4, 4, 1)
  assert epoch1[0]["label"].shape == (8, 2)
  again = [_batches(data, feed) for feed in data.epoch([0, 1], 1)]
  epoch2 = [_batches(data, feed) for feed in data.epoch([0, 1], 2)]
  np.testing.assert_array_equal(epoch1[0]["image"], again[0]["image"])
  assert not np.array_equal(epoch1[0]["image"], epoch2[0]["image"])
  # Normalised ((x - 1) / 2) examples of the split, not augmented.
  assert _are_rows_of(epoch1[0]["image"], (_images() - 1) / 2)


@pytest.mark.parametrize("placement,streamed", [
    ("host", False), ("host", True), ("device", False)])
def test_leak_guard_refuses_old_class_labels(placement, streamed):
  labels = np.repeat(np.arange(5, 10), 14).astype(np.int32)
  # Old-class examples slipped into the new step's data (more than the
  # 70 % 16 that an epoch drops, so a batch holds one).
  labels[:7] = 0
  base = pipeline.Examples(image=np.zeros((70, 4, 4, 1), np.float32),
                           label=labels)
  if streamed:
    base = tf.data.Dataset.from_tensor_slices(dataclasses.asdict(base))
  with pytest.raises(batches.LeakError, match=r"labels \[0\]"):
    # In-memory data is checked at load, streamed host batches each batch.
    if placement == "host":
      data = train_data.HostTrainData(base, 70, range(5, 10), False, 16,
                                      jax.local_devices()[:8],
                                      shuffle_buffer=70)
    else:
      data = train_data.DeviceTrainData.from_examples(
          base, range(5, 10), False, 16, jax.local_devices()[:8])
    for _ in data.epoch([0], 1):
      pass


def test_crop_flip_gives_the_expected_pixels():
  image = np.arange(6 * 7, dtype=np.float32).reshape(1, 6, 7, 1)
  centre = np.array([[augment.PAD, augment.PAD]])
  np.testing.assert_array_equal(
      augment.crop_flip(image, centre, np.array([False])), image)
  np.testing.assert_array_equal(
      augment.crop_flip(image, centre, np.array([True])), image[:, :, ::-1])
  corner = augment.crop_flip(image, np.array([[0, 0]]), np.array([False]))
  # Reflected: the padded row/column 0 mirrors row/column 4 of the image.
  assert corner[0, 0, 0, 0] == image[0, 4, 4, 0]
  np.testing.assert_array_equal(corner[:, 4:, 4:], image[:, :2, :3])

  # A key's crops and flips, against numpy's reflect padding.
  images = np.random.default_rng(1).normal(size=(64, 6, 7, 2)).astype(
      np.float32)
  key = jax.random.PRNGKey(3)
  offsets, flips = map(np.asarray, augment.draw(key, 64))
  assert flips.any() and not flips.all()
  assert offsets.min() == 0 and offsets.max() == 2 * augment.PAD
  got = np.asarray(augment.random_crop_flip(key, images))
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
  for i, ((y, x), flip) in enumerate(zip(offsets, flips)):
    want = padded[i, y:y + 6, x:x + 7]
    np.testing.assert_array_equal(got[i], want[:, ::-1] if flip else want)


def test_both_placements_augment_a_feed_alike():
  host, device = _train_data("host", True), _train_data("device", True)
  device_feed = next(device.epoch([0], 1))
  # The resident split holds the images as stored; the step normalises.
  rows = device.split.normalised(np.arange(len(device.split.label)))
  labels = device.split.label
  indices = device_feed["indices"]
  # The host feed of the same examples and augment_seed: the same batch.
  host_feed = {"image": rows[indices], "label": labels[indices],
               "augment_seed": device_feed["augment_seed"]}
  from_device = _batches(device, device_feed)
  np.testing.assert_array_equal(_batches(host, host_feed)["image"],
                                from_device["image"])
  assert not np.array_equal(from_device["image"], rows[indices])  # augmented
  # The host epoch feeds the device epoch's examples, in its order, with
  # its augment seeds: both placements train on the same batches.
  for host_feed, device_feed in zip(host.epoch([0], 1), device.epoch([0], 1),
                                    strict=True):
    np.testing.assert_array_equal(host_feed["image"],
                                  rows[device_feed["indices"]])
    np.testing.assert_array_equal(host_feed["augment_seed"],
                                  device_feed["augment_seed"])


def test_augmentation_follows_the_step_not_the_call():
  data = _train_data("device", augment=True)
  step0, step1 = list(data.epoch([0], 1))[:2]
  np.testing.assert_array_equal(_batches(data, step0)["image"],
                                _batches(data, step0)["image"])
  # The same examples at another step, or on another device: other crops.
  moved = dict(step0, augment_seed=step1["augment_seed"])
  assert not np.array_equal(_batches(data, moved)["image"],
                            _batches(data, step0)["image"])
  same_everywhere = dict(step0, indices=np.tile(step0["indices"][:1], (8, 1)))
  images = _batches(data, same_everywhere)["image"]
  assert not all(np.array_equal(images[0], images[d]) for d in range(1, 8))


@pytest.mark.parametrize("streamed", [False, True])
def test_eval_batches_cover_every_example_once_in_order(streamed):
  base = pipeline.Examples(
      image=np.arange(37, dtype=np.float32).reshape(37, 1, 1, 1),
      label=np.arange(37, dtype=np.int32) % 10)
  if streamed:
    base = tf.data.Dataset.from_tensor_slices(dataclasses.asdict(base))
  seen = []
  for batch in pipeline.eval_batches(base, batch_size=16, num_devices=8):
    assert batch["image"].shape == (8, 2, 1, 1, 1)
    seen.extend(batch["image"][batch["mask"]].reshape(-1).tolist())
  assert seen == list(range(37))


def _fake_tfds_cache(data_dir):
  """The dataset config of a made-up 3-class dataset cached in ``data_dir``
  as if TFDS had built it, and its arrays."""
  config = default.get_config().dataset
  config.name, config.data_dir = "fake_tfds", str(data_dir)
  rng = np.random.default_rng(0)
  arrays = {which: (rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8),
                    np.arange(n, dtype=np.int32) % 3)
            for which, n in (("train", 30), ("test", 12))}
  info = cache.describe(3, (4, 4, 1), arrays["train"][0].astype(np.float64),
                        {w: labels for w, (_, labels) in arrays.items()},
                        arrays, name=config.name)
  cache.write(cache.directory(config, 0, 1), info, arrays)
  return config, arrays


_WITHOUT_TF = """
import json, sys
import jax, numpy as np
import cil_jax.main
from cil_jax import config_files, evaluate
from cil_jax.data import classes, pipeline, source, train_data
result = {}
for name, data_dir in [("digits", ""), ("fake_tfds", sys.argv[1])]:
  config = config_files.from_checkout("default").get_config().dataset
  config.name, config.data_dir = name, data_dir
  src = source.Source(config)
  n = src.info.num_classes
  mapping = classes.label_map(list(range(n)), n)
  for config.placement in ("host", "device"):
    data = train_data.make_train_data(src, [0, 1], mapping, config, 4,
                                      jax.local_devices()[:1])
    feeds = list(data.epoch([0], 1))
  test = pipeline.filtered(src, "test", list(range(n)), mapping)
  _, total = evaluate.class_counts(
      lambda v, x: np.zeros(x.shape[:2], np.int32), None, test, n, 8, 1)
  result[name] = {"steps": len(feeds), "test": total.tolist()}
result["imported"] = sorted({"tensorflow", "tensorflow_datasets"}
                            & set(sys.modules))
print(json.dumps(result))
"""


def test_cached_data_never_imports_tensorflow(tmp_path):
  """A run's whole data path (import, source, both placements, evaluation)
  on embedded digits and on a cached TFDS dataset, in a fresh process."""
  config, arrays = _fake_tfds_cache(tmp_path)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", _WITHOUT_TF, str(tmp_path)],
                       cwd=repo, capture_output=True, text=True, check=True)
  result = json.loads(out.stdout.splitlines()[-1])
  assert result["imported"] == []
  assert result["fake_tfds"] == {"steps": 5, "test": [4, 4, 4]}  # 20 // 4
  assert result["digits"]["test"] == np.bincount(
      digits.load()["test"][1]).tolist()
  images, labels = source.Source(config).arrays("train")
  np.testing.assert_array_equal(images, arrays["train"][0])
  np.testing.assert_array_equal(labels, arrays["train"][1])
