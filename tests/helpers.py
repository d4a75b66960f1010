"""Small configs for end-to-end tests, and train-step objectives for unit
tests of the step."""

import dataclasses

from cil_jax import config_files
from cil_jax import overrides as config_overrides
from cil_jax.methods import spec
from cil_jax.methods.shared import kd

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


def objective_for(method=None, kd_form="full", kd_t2_scaling=False,
                  local_ce=False, head_path="head", **replace):
  """The ``methods.spec.Objective`` that ``train_step.make_train_step``
  takes: ``method``'s (its spec's ``objective``), or without one the plain
  CE + KD of ``methods.shared.kd``, built with the KD form, T^2 scaling,
  local CE and head path given; ``replace``: fields of the objective to
  set (``penalty``, ``running``, ``transform``)."""
  build = spec.BuildInfo(kd_form, kd_t2_scaling, local_ce, head_path)
  objective = (kd.objective(None, build) if method is None
               else method.spec.objective(method, build))
  return dataclasses.replace(objective, **replace)
