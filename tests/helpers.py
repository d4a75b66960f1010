"""Small configs for end-to-end tests."""

from configs import default


def small_config(**overrides):
  """The default config, shortened: digits 0-4 then 5-9, few epochs."""
  config = default.get_config()
  config.train.epochs = 4
  config.train.checkpoint_every_epochs = 2
  config.train.num_devices = 1
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config
