"""Small configs for end-to-end tests."""

from cil_jax import config_files
from cil_jax import overrides as config_overrides

default = config_files.from_checkout("default")


def small_config(**overrides):
  """The default config, shortened: digits 0-4 then 5-9, few epochs."""
  config = default.get_config()
  config.train.epochs = 4
  config.train.checkpoint_every_epochs = 2
  config.runtime.checkpoint_min_seconds = 0.0
  config.train.num_devices = 1
  return config_overrides.apply(config, overrides)


def tiny_model_config(name, **overrides):
  """``config.model`` of ``name`` with tiny layer sizes, for unit tests."""
  config = default.get_config().model
  config.name = name
  config.hidden_sizes = (8, 8)
  config.conv_features = (4, 8)
  config.dense_size = 8
  config.resnet_depth = 20
  config.resnet_width = 4
  for key, value in overrides.items():
    config[key] = value
  return config
