"""A config file's sweep: its runs by name, and the command of each run."""

import os
import re
import sys

from cil_jax import config_files
from cil_jax.sweep import grid


class SweepConfigError(ValueError):
  """A config file or run filter that gives no sweep to run."""


def load(config_path):
  """``({name: overrides}, base config as JSON)`` of the config file."""
  if not os.path.isfile(config_path):
    raise SweepConfigError(
        f"--config={config_path}: no such file; give the path of a config "
        f"file that defines get_sweep(), e.g. configs/taitelbaum_sweep.py.")
  module = config_files.load(config_path)
  if not hasattr(module, "get_sweep"):
    raise SweepConfigError(
        f"{config_path} has no get_sweep(); add one returning a list of "
        f"override dicts (see cil_jax/sweep/grid.py), or run its single "
        f"config with python -m cil_jax.main --config {config_path}.")
  runs = module.get_sweep()
  if not runs:
    raise SweepConfigError(f"{config_path}: get_sweep() returned no runs; "
                           f"make it return at least one override dict.")
  return grid.check_unique(runs), module.get_config().to_json(sort_keys=True)


def select(runs, pattern):
  """The runs whose names match the regex ``pattern`` (``re.search``)."""
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise SweepConfigError(f"--filter={pattern!r} is not a valid regular "
                           f"expression ({e}); fix or quote it.") from None
  selected = {n: o for n, o in runs.items() if regex.search(n)}
  if not selected:
    raise SweepConfigError(f"--filter={pattern!r} matches none of the "
                           f"{len(runs)} runs; --dry_run lists their names.")
  return selected


def main_command(config_path, overrides, *args):
  """``python -m cil_jax.main`` of ``config_path`` with ``overrides`` as
  ``--config.key=value`` flags, after ``args``."""
  return [sys.executable, "-m", "cil_jax.main", "--config",
          os.path.abspath(config_path), *args] + override_flags(overrides)


def override_flags(overrides):
  return [f"--config.{key}={_flag_value(value)}"
          for key, value in sorted(overrides.items())]


def _flag_value(value):
  # config_flags parses a tuple literal; JSON gave lists for nested tuples.
  if isinstance(value, (list, tuple)):
    return repr(tuple(tuple(v) if isinstance(v, list) else v for v in value))
  return str(value)
