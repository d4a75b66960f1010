"""Runs into tasks, the unit a worker executes, and executing one.

Runs that differ only in member keys (``overrides.is_member_key``:
``methods`` and e.g. ``eps_kd.*``, ``df_replay.*``) form a *group*, run as one ``cil_jax.main --members`` process
that trains C_A once
and shares data and compiled steps. Should a group fail, its unfinished
runs are retried one by one, resuming from the group's checkpoints, so one
bad run fails alone.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
from typing import Optional

from cil_jax import jsonio
from cil_jax import overrides as overrides_lib
from cil_jax.sweep import runs as runs_lib

_TAIL_LINES = 15  # of a failed run's log, shown with its error


@dataclasses.dataclass(frozen=True)
class Task:
  """Runs executed by one worker: ``runs`` is ``{name: (cmd, workdir)}``;
  a group has one ``group_cmd`` for all of them, logging to ``group_log``."""
  runs: dict
  group_cmd: Optional[list] = None
  group_log: Optional[str] = None


def group_runs(runs, num_slots):
  """Lists of run names whose overrides differ only in member keys, the
  largest halved until each of ``num_slots`` workers can have one."""
  groups = {}
  for name, overrides in runs.items():
    key = json.dumps(_common(overrides), sort_keys=True, default=list)
    groups.setdefault(key, []).append(name)
  out = list(groups.values())
  while len(out) < num_slots:
    largest = max(out, key=len)
    if len(largest) < 2:
      break
    out.remove(largest)
    out += [largest[:len(largest) // 2], largest[len(largest) // 2:]]
  return out


def make_tasks(config_path, sweep_dir, runs, grouping, num_slots,
               write=True):
  """The tasks of ``runs`` (``{name: overrides}``); a group's member file is
  written to ``sweep_dir/groups/`` (unless ``write=False``: a dry run)."""
  def single(name):
    workdir = os.path.join(sweep_dir, name)
    return runs_lib.main_command(config_path, runs[name], "--workdir",
                                 workdir), workdir

  if grouping == "none":
    return [Task({name: single(name)}) for name in runs]
  tasks = []
  for names in group_runs(runs, num_slots):
    if len(names) == 1:
      tasks.append(Task({names[0]: single(names[0])}))
      continue
    members = {os.path.join(sweep_dir, name): {
        k: v for k, v in runs[name].items() if overrides_lib.is_member_key(k)}
               for name in names}
    group_name = hashlib.sha256(json.dumps(
        sorted(names)).encode()).hexdigest()[:12]
    member_file = os.path.join(sweep_dir, "groups", f"{group_name}.json")
    if write:
      os.makedirs(os.path.dirname(member_file), exist_ok=True)
      jsonio.write_json(member_file, members)
    group_cmd = runs_lib.main_command(config_path, _common(runs[names[0]]),
                                      "--members",
                                      member_file,
                                      f"--member_mode={grouping}")
    tasks.append(Task({name: single(name) for name in names}, group_cmd,
                      os.path.join(sweep_dir, "groups", f"{group_name}.log")))
  return tasks


def run_task(task, env=None):
  """Runs a task; ``{run: error}`` of its runs that failed.

  Never raises: a launcher-side error is that run's failure, not the sweep's.
  """
  if task.group_cmd is None:
    (name, (cmd, workdir)), = task.runs.items()
    error = _run_one(cmd, workdir, env)
    return {name: error} if error else {}
  group_error = _guarded(lambda: _call(task.group_cmd, task.group_log, env),
                         os.path.dirname(task.group_log))
  if not group_error:
    return {}
  failures = {}
  for name, (cmd, workdir) in task.runs.items():
    error = _run_one(cmd, workdir, env)
    if error:
      failures[name] = (f"{error}\n(its group failed first; see "
                        f"{task.group_log})")
  return failures


def _run_one(cmd, workdir, env):
  """Runs one command to ``workdir/log.txt``; ``None`` or the error tail.
  A finished run (``results.json`` present) is not started again."""
  if os.path.exists(os.path.join(workdir, "results.json")):
    return None
  return _guarded(lambda: _call(cmd, os.path.join(workdir, "log.txt"), env),
                  workdir)


def _guarded(call, log_dir):
  try:
    os.makedirs(log_dir, exist_ok=True)
    return call()
  except Exception as e:  # pylint: disable=broad-except
    return f"launcher error: {e!r}"


def _call(cmd, log_path, env):
  with open(log_path, "a") as log:
    code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, **(env or {})})
  if code == 0:
    return None
  with open(log_path) as log:
    tail = log.readlines()[-_TAIL_LINES:]
  return f"exit code {code}:\n" + "".join(tail)


def _common(overrides):
  """The overrides a group's runs share: all but the member keys."""
  return {k: v for k, v in overrides.items()
          if not overrides_lib.is_member_key(k)}
