"""The files of a sweep directory that the launcher itself writes.

``sweep.json`` lists the runs of the directory (``{name: overrides}``) and a
hash of the config's ``get_config()``; ``sweep_config.py`` is a copy of the
config file; ``failures.json`` maps each run that failed in the last
launch to its error.
"""

import hashlib
import json
import os
import shutil

from cil_jax import jsonio

SWEEP_FILE = "sweep.json"
_REWRITE = ("delete it and rerun python -m cil_jax.sweep with the same "
            "--config and --workdir (finished runs are kept)")


class SweepDirError(ValueError):
  """A directory that cannot hold or does not hold the sweep asked for."""


def merge(sweep_dir, config_path, runs, base_config):
  """The record ``sweep_dir`` is to hold: ``runs`` added to those it has.

  A different ``get_config()`` is refused, so finished results are never
  mixed with another experiment's; adding runs to the grid is fine (a run's
  name and workdir follow from its overrides alone).
  """
  config_hash = hashlib.sha256(base_config.encode()).hexdigest()
  record = {"config": os.path.abspath(config_path),
            "config_hash": config_hash,
            "runs": json.loads(json.dumps(runs))}  # tuples as JSON lists
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if os.path.exists(path):
    old = jsonio.read_json(path, fix=_REWRITE)
    if old["config_hash"] != config_hash:
      raise SweepDirError(
          f"{sweep_dir} holds runs of {old['config']} whose get_config() "
          f"differs from {config_path}'s (the config changed since the runs "
          f"in {sweep_dir}); their results would mix with new ones. Use "
          f"another --workdir, or restore the config.")
    record["runs"] = {**old["runs"], **record["runs"]}
  return record


def write(sweep_dir, config_path, record):
  """Writes ``sweep.json`` and the copy of the config file."""
  jsonio.write_json(os.path.join(sweep_dir, SWEEP_FILE), record)
  shutil.copy(os.path.abspath(config_path),
              os.path.join(sweep_dir, "sweep_config.py"))


def read_runs(sweep_dir):
  """``{name: overrides}`` of the sweep in ``sweep_dir``."""
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.isfile(path):
    state = ("does not exist" if not os.path.exists(sweep_dir)
             else f"has no {SWEEP_FILE}")
    raise SweepDirError(
        f"{sweep_dir} {state}: expected a sweep directory, which "
        f"`python -m cil_jax.sweep --config CONFIG --workdir {sweep_dir}` "
        f"writes (with {SWEEP_FILE} listing its runs). Run the sweep first, "
        f"or give the --workdir of an existing sweep.")
  return jsonio.read_json(path, fix=_REWRITE)["runs"]


def write_failures(sweep_dir, failures):
  jsonio.write_json(os.path.join(sweep_dir, "failures.json"), failures)
