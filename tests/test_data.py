"""Class sequences, label remapping, batching and the no-leak guarantee."""

import numpy as np
import pytest

from cil_jax.data import batches
from cil_jax.data import classes
from cil_jax.data import digits


def test_digits_split_is_fixed_and_stratified():
  data = digits.load()
  assert data.train_images.shape == (1347, 8, 8, 1)
  assert data.test_images.shape == (450, 8, 8, 1)
  assert data.input_shape == (8, 8, 1)
  # Stratified: each class keeps 25% of its 174-183 images in test.
  counts = np.bincount(data.test_labels, minlength=10)
  assert counts.min() >= 43 and counts.max() <= 46
  np.testing.assert_array_equal(digits.load().test_labels, data.test_labels)
  assert abs(float(data.train_images.mean())) < 1e-5


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


def test_select_remaps_labels_to_order_positions():
  order = [7, 2, 5]
  mapping = classes.label_map(order, 10)
  images = np.arange(6)[:, None].astype(np.float32)
  labels = np.array([2, 7, 9, 5, 2, 0])
  x, y = classes.select(images, labels, [2, 5], mapping)
  np.testing.assert_array_equal(x[:, 0], [0, 3, 4])
  np.testing.assert_array_equal(y, [1, 2, 1])


def test_train_batches_shape_order_and_leak_guard():
  images = np.random.default_rng(0).normal(size=(70, 8, 8, 1)).astype(
      np.float32)
  labels = np.repeat(np.arange(5, 10), 14).astype(np.int32)
  epoch1 = list(batches.train_batches(images, labels, 16, 8, seed=[0, 1],
                                      epoch=1, allowed_labels=range(5, 10)))
  assert len(epoch1) == 4  # 70 // 16, the partial batch dropped
  assert epoch1[0]["image"].shape == (8, 2, 8, 8, 1)
  assert epoch1[0]["label"].shape == (8, 2)
  again = list(batches.train_batches(images, labels, 16, 8, seed=[0, 1],
                                     epoch=1, allowed_labels=range(5, 10)))
  epoch2 = list(batches.train_batches(images, labels, 16, 8, seed=[0, 1],
                                      epoch=2, allowed_labels=range(5, 10)))
  np.testing.assert_array_equal(epoch1[0]["image"], again[0]["image"])
  assert not np.array_equal(epoch1[0]["label"], epoch2[0]["label"])
  leaky = labels.copy()
  leaky[3] = 0  # one old-class example in the new step's data
  with pytest.raises(batches.LeakError, match=r"labels \[0\]"):
    for _ in batches.train_batches(images, leaky, 70, 1, seed=[0], epoch=1,
                                   allowed_labels=range(5, 10)):
      pass


def test_eval_batches_cover_every_example_once():
  images = np.arange(37, dtype=np.float32).reshape(37, 1, 1, 1)
  labels = np.arange(37, dtype=np.int32)
  seen = []
  for batch in batches.eval_batches(images, labels, 16, 8):
    assert batch["image"].shape == (8, 2, 1, 1, 1)
    seen.extend(batch["label"][batch["mask"]].tolist())
  assert sorted(seen) == list(range(37))
