"""Class sequences, label remapping, pipelines and the no-leak guarantee
(on digits and hand-made data; real Fashion-MNIST is in test_tfds.py)."""

import numpy as np
import pytest
import tensorflow as tf

from cil_jax.data import batches
from cil_jax.data import classes
from cil_jax.data import digits
from cil_jax.data import pipeline
from cil_jax.data import source
from cil_jax.data import train_data
from configs import default


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

  def __init__(self, images, labels, in_memory=True):
    self._data = {"image": images, "label": labels}
    self._in_memory = in_memory
    self.info = source.DatasetInfo(
        name="arrays", num_classes=10, input_shape=images.shape[1:],
        mean=(1.0,), std=(2.0,),
        class_counts={"train": np.bincount(labels, minlength=10)},
        augment=False)

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


@pytest.mark.parametrize("placement", ["host", "device"])
def test_train_data_batches_and_leak_guard(placement):
  import jax  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).normal(size=(70, 4, 4, 1)).astype(
      np.float32)
  labels = np.repeat(np.arange(5, 10), 14).astype(np.int32)
  src = _ArraySource(images, labels)
  mapping = classes.label_map(list(range(10)), 10)
  config = default.get_config().dataset
  config.placement = placement
  data = train_data.make_train_data(src, list(range(5, 10)), mapping, config,
                                    16, jax.local_devices()[:8])
  assert data.mode == placement and data.num_examples == 70
  epoch1 = list(data.epoch([0, 1], 1))
  assert len(epoch1) == 4  # 70 // 16, the partial batch dropped
  again = list(data.epoch([0, 1], 1))
  epoch2 = list(data.epoch([0, 1], 2))
  if placement == "host":
    assert epoch1[0]["image"].shape == (8, 2, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(epoch1[0]["label"]),
                                  np.asarray(again[0]["label"]))
    assert not np.array_equal(np.asarray(epoch1[0]["label"]),
                              np.asarray(epoch2[0]["label"]))
  else:
    assert epoch1[0]["indices"].shape == (8, 2)  # gathered on device
    np.testing.assert_array_equal(epoch1[0]["indices"], again[0]["indices"])
    assert not np.array_equal(epoch1[0]["indices"], epoch2[0]["indices"])

  # One old-class example slipped into the new step's data: refused.
  leaky = labels.copy()
  leaky[3] = 0
  leaky_data = train_data.make_train_data(
      _ArraySource(images, leaky), list(range(10)), mapping, config, 16,
      jax.local_devices()[:8])
  leaky_data._allowed = list(range(5, 10))  # pylint: disable=protected-access
  with pytest.raises(batches.LeakError, match=r"labels \[0\]"):
    if placement == "host":
      for _ in leaky_data.epoch([0], 1):
        pass
    else:
      batches.check_labels(leaky, range(5, 10))


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
