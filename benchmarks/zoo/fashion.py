"""Fashion-MNIST as a user reads it: Debian's IDX files with gzip and
numpy, pixels in [0, 1], normalised by the user's own mean and std."""

import gzip
import os

import numpy as np

DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # the user's own statistics of the train split


def _read(name, offset):
  with gzip.open(os.path.join(DIR, name)) as f:
    return np.frombuffer(f.read(), np.uint8, offset=offset)


def load(split):
  """``(images [n, 28, 28, 1] float32 in [0, 1], labels [n])``."""
  prefix = "train" if split == "train" else "t10k"
  images = _read(f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)
  labels = _read(f"{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int32)
  return images.astype(np.float32) / 255.0, labels


def normalised(images):
  return (images - MEAN) / STD
