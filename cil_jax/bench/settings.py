"""What a step benchmark run measures: its warm-up and timed steps, its
sweep size and models (``FULL``, ``QUICK``), narrowed by ``--models`` and
``--steps`` (``resolve_settings``). No flags are defined here."""

from typing import NamedTuple


class Settings(NamedTuple):
  warmup: int
  steps: int
  members: int
  models: tuple
  member_models: tuple


FULL = Settings(warmup=2, steps=20, members=16,
                models=("mlp", "cnn", "resnet20"),
                member_models=("mlp", "cnn"))
QUICK = Settings(warmup=2, steps=5, members=4, models=("mlp", "cnn"),
                 member_models=("mlp",))


def resolve_settings(quick, models=None, steps=None):
  """The ``Settings`` of ``--quick``, ``--models`` and ``--steps``."""
  settings = QUICK if quick else FULL
  if models:
    unknown = sorted(set(models) - set(FULL.models))
    if unknown:
      raise ValueError(f"--models: unknown {unknown}; choose from "
                       f"{list(FULL.models)}.")
    settings = settings._replace(
        models=tuple(models), member_models=tuple(
            m for m in settings.member_models if m in models))
  if steps is not None:
    if steps < 1:
      raise ValueError(f"--steps must be at least 1, not {steps}.")
    settings = settings._replace(steps=steps)
  return settings
