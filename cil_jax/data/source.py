"""In-memory datasets and the registry of named sources."""

import dataclasses

import numpy as np

SOURCES = ("digits",)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Images ``[N, H, W, C]`` float32 and integer dataset class ids."""
  name: str
  num_classes: int
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  @property
  def input_shape(self):
    return tuple(self.train_images.shape[1:])


def load_dataset(dataset_config):
  """Loads ``dataset_config.name`` into memory."""
  if dataset_config.name == "digits":
    from cil_jax.data import digits  # pylint: disable=import-outside-toplevel
    return digits.load()
  raise ValueError(f"Unknown dataset {dataset_config.name!r}; set "
                   f"config.dataset.name to one of {SOURCES}.")
