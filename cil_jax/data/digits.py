"""scikit-learn's digits: 1,797 real 8x8 images of 10 digits, shipped in the wheel.

The train/test split is fixed (stratified, 25% test, seed 0) and independent
of the run's seed, so every run evaluates on the same 450 test images.
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cil_jax.data.source import Dataset

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def load():
  digits = load_digits()
  images = (digits.images.astype(np.float32) / 16.0)[..., None]  # [N, 8, 8, 1]
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = train_test_split(
      images, labels, test_size=TEST_FRACTION, stratify=labels,
      random_state=SPLIT_SEED)
  mean, std = train_x.mean(), train_x.std()
  return Dataset(name="digits", num_classes=10,
                 train_images=(train_x - mean) / std, train_labels=train_y,
                 test_images=(test_x - mean) / std, test_labels=test_y)
