"""Class sequences, label remapping, pipelines, the augmentation and the
no-leak guarantee (on digits and hand-made data; real Fashion-MNIST is in
test_tfds.py)."""

import jax
import numpy as np
import pytest
import tensorflow as tf

from cil_jax import parallel
from cil_jax.data import augment
from cil_jax.data import batches
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

  def __init__(self, images, labels, in_memory=True, augment=False):
    self._data = {"image": images, "label": labels}
    self._in_memory = in_memory
    self.info = source.DatasetInfo(
        name="arrays", num_classes=10, input_shape=images.shape[1:],
        mean=(1.0,), std=(2.0,),
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


@pytest.mark.parametrize("in_memory", [True, False])
def test_filtered_remaps_labels_and_normalises(in_memory):
  # uint8 pixels, as TFDS gives them, through numpy or tf.data.
  images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
  labels = np.array([2, 7, 9, 5, 2, 0], np.int32)
  order = [7, 2, 5]
  base = pipeline.filtered(_ArraySource(images, labels, in_memory), "train",
                           [2, 5], classes.label_map(order, 10))
  got = list(base.as_numpy_iterator())
  np.testing.assert_array_equal([g["label"] for g in got], [1, 2, 1])
  # (pixel - mean 1) / std 2 for pixels 0, 3, 4.
  np.testing.assert_allclose([g["image"].item() for g in got],
                             [-0.5, 1.0, 1.5])


def _images():
  return np.random.default_rng(0).normal(size=(70, 4, 4, 1)).astype(
      np.float32)


def _train_data(placement, augment=False):
  """Training data of classes 5..9 (14 of ``_images`` each) on 8 devices."""
  labels = np.repeat(np.arange(5, 10), 14).astype(np.int32)
  config = default.get_config().dataset
  config.placement = placement
  return train_data.make_train_data(
      _ArraySource(_images(), labels, augment=augment), list(range(5, 10)),
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
def test_train_data_feeds_batches_in_a_seeded_order(placement):
  data = _train_data(placement)
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


@pytest.mark.parametrize("cls", [train_data.HostTrainData,
                                 train_data.DeviceTrainData])
def test_leak_guard_refuses_old_class_labels(cls):
  labels = np.repeat(np.arange(5, 10), 14).astype(np.int32)
  # Old-class examples slipped into the new step's data (more than the
  # 70 % 16 that an epoch drops, so a batch holds one).
  labels[:7] = 0
  base = tf.data.Dataset.from_tensor_slices(
      {"image": np.zeros((70, 4, 4, 1), np.float32), "label": labels})
  with pytest.raises(batches.LeakError, match=r"labels \[0\]"):
    # Device placement checks at load, host placement each batch.
    data = cls(base, 70, range(5, 10), False, 16, jax.local_devices()[:8],
               shuffle_buffer=70)
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
  rows = np.asarray(device.resident["image"][0])
  labels = np.asarray(device.resident["label"][0])
  indices = device_feed["indices"]
  # The host feed of the same examples and augment_seed: the same batch.
  host_feed = {"image": rows[indices], "label": labels[indices],
               "augment_seed": device_feed["augment_seed"]}
  from_device = _batches(device, device_feed)
  np.testing.assert_array_equal(_batches(host, host_feed)["image"],
                                from_device["image"])
  assert not np.array_equal(from_device["image"], rows[indices])  # augmented
  # The host epoch feeds raw batches with the device epoch's augment seeds.
  host_feeds = list(host.epoch([0], 1))
  np.testing.assert_array_equal(
      [np.asarray(f["augment_seed"]) for f in host_feeds],
      [f["augment_seed"] for f in device.epoch([0], 1)])
  assert _are_rows_of(host_feeds[0]["image"], rows)


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


def test_eval_batches_cover_every_example_once():
  images = np.arange(37, dtype=np.float32).reshape(37, 1, 1, 1)
  labels = np.arange(37, dtype=np.int32) % 10
  base = tf.data.Dataset.from_tensor_slices({"image": images,
                                             "label": labels})
  seen = []
  for batch in pipeline.eval_batches(base, batch_size=16, num_devices=8):
    assert batch["image"].shape == (8, 2, 1, 1, 1)
    seen.extend(batch["image"][batch["mask"]].reshape(-1).tolist())
  assert sorted(seen) == list(range(37))
