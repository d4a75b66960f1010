"""A workdir belongs to one config: checked first, claimed last.

``check_path`` and ``check_config`` run before any data is loaded: the path
must be a directory we can create or write, and a workdir that already holds
a run must hold a run of the same config (its ``config.json``; only the
``NEUTRAL_SECTIONS`` may differ), so earlier results are never mixed with
or overwritten by another run's. ``claim``
creates the workdir and writes ``config.json``, after every other check has
passed.
"""

import json
import os

from cil_jax import jsonio

CONFIG_FILE = "config.json"
# Config sections that say how a process runs or what it writes besides
# results, never what it computes: a workdir accepts a config that differs
# from its own only there (and keeps its config.json).
NEUTRAL_SECTIONS = ("outputs", "runtime")


def check_path(workdir):
  """Raises if ``workdir`` is not a directory that can be (or is) used."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(
        f"--workdir {workdir} is a file, not a directory; give a directory "
        f"path (new or holding a run of this config).")
  ancestor = os.path.abspath(workdir)
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise NotADirectoryError(
        f"--workdir {workdir} cannot be created: {ancestor} is a file; "
        f"choose another path.")
  if ancestor != os.path.abspath(workdir) and not os.access(ancestor,
                                                            os.W_OK):
    raise PermissionError(
        f"--workdir {workdir} cannot be created: {ancestor} is not "
        f"writable; choose a writable location.")


def check_config(workdir, config):
  """Raises if ``workdir`` holds a run of another config."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  stored = jsonio.read_json(
      path, fix=f"it records which config {workdir} belongs to; restore it "
      f"or use a new --workdir")
  current = json.loads(config.to_json())
  changed = sorted(key for key in _diff_keys(stored, current)
                   if key.split(".")[0] not in NEUTRAL_SECTIONS)
  if changed:
    raise ValueError(f"{workdir} holds a run of a different config (changed: "
                     f"{changed[:6]}). Use a new --workdir, or the same "
                     f"config to resume.")


def claim(workdir, config):
  """Creates ``workdir`` bound to ``config`` (kept if already bound)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    jsonio.write_json(path, json.loads(config.to_json()))


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for key in set(a) | set(b):
      yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
  elif a != b:
    yield prefix.rstrip(".")
