"""scikit-learn's digits: 1,797 real 8x8 images of 10 digits, shipped in the wheel.

The train/test split is fixed (stratified, 25% test, seed 0) and independent
of the run's seed, so every run evaluates on the same 450 test images.
Pixels are the raw 0..16 intensities as float32, ``[N, 8, 8, 1]``.
"""

import numpy as np

NAME = "digits"  # config.dataset.name of the embedded dataset
NUM_CLASSES = 10
PIXEL_MAX = 16.0  # the raw intensities are 0..16
TEST_FRACTION = 0.25
SPLIT_SEED = 0


def load():
  """``{"train": (images, labels), "test": (images, labels)}``."""
  # Imported here: scikit-learn costs about a second, which runs on other
  # datasets need not pay.
  # pylint: disable-next=g-import-not-at-top
  from sklearn import datasets, model_selection
  data = datasets.load_digits()
  images = data.images.astype(np.float32)[..., None]
  labels = data.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=TEST_FRACTION, stratify=labels,
      random_state=SPLIT_SEED)
  return {"train": (train_x, train_y), "test": (test_x, test_y)}
