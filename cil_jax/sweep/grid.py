"""Sweep grids: lists of ``{config_key: value}`` override dicts.

Build them in a config file's ``get_sweep()`` from axes, crossed, zipped or
concatenated (in the spirit of big_vision's ``get_hyper``); a config depends
on this module, not on the launcher that runs the grid::

  from cil_jax.sweep import grid

  def get_sweep():
    return grid.product(grid.axis("seed", [0, 1, 2]),
                        grid.concat(
                            grid.axis("eps_kd.eps", ["0.3", "0.5"]),
                            grid.axis("methods", ["finetune"])))
"""

import hashlib
import itertools
import re


def axis(key, values):
  """One key over ``values``."""
  values = list(values)
  if not values:
    raise ValueError(f"Sweep axis {key!r} has no values.")
  return [{key: value} for value in values]


def product(*grids):
  """Every combination of one entry from each grid, merged."""
  out = []
  for combo in itertools.product(*grids):
    merged = {}
    for entry in combo:
      clash = set(merged) & set(entry)
      if clash:
        raise ValueError(f"Sweep keys {sorted(clash)} appear in two crossed "
                         f"grids; cross disjoint keys only.")
      merged.update(entry)
    out.append(merged)
  return out


def zip_(*grids):
  """Entry i of every grid, merged; grids must have equal lengths."""
  lengths = {len(g) for g in grids}
  if len(lengths) != 1:
    raise ValueError(f"zip_ needs grids of equal length, got "
                     f"{[len(g) for g in grids]}.")
  return [dict(kv for entry in entries for kv in entry.items())
          for entries in zip(*grids)]


def concat(*grids):
  """All entries of all grids, in order."""
  return [entry for g in grids for entry in g]


def run_name(overrides):
  """A stable, readable directory name for one run's overrides."""
  if not overrides:
    return "default"
  parts = [f"{key.split('.')[-1]}={_short(value)}"
           for key, value in sorted(overrides.items())]
  name = re.sub(r"[^A-Za-z0-9=.,+_-]", "", "_".join(parts))
  if len(name) > 100:
    digest = hashlib.sha1(repr(sorted(overrides.items())).encode()).hexdigest()
    name = f"{name[:90]}_{digest[:8]}"
  return name


def check_unique(runs):
  """Refuses a sweep with two identical runs or two runs of one name."""
  names = {}
  for overrides in runs:
    name = run_name(overrides)
    if name in names and names[name] != overrides:
      raise ValueError(f"Runs {names[name]} and {overrides} get the same name "
                       f"{name!r}; make their values distinguishable.")
    if name in names:
      raise ValueError(f"The sweep lists run {overrides} twice.")
    names[name] = overrides
  return names


def _short(value):
  if isinstance(value, (list, tuple)):
    nested = any(isinstance(v, (list, tuple)) for v in value)
    return ("," if nested else "+").join(_short(v) for v in value)
  return str(value)
