"""Runs a config's sweep: one ``cil_jax.main`` process per run.

  python -m launch.sweep --config configs/x.py --workdir DIR [--backend ray]

``configs/x.py`` defines ``get_sweep()`` (see ``launch/grid.py``). Each run
gets a stable name and its own ``DIR/<name>`` workdir. Rerunning skips
finished runs (``results.json`` present) and resumes interrupted ones from
their checkpoints. A failing run does not stop the others; failures are
listed at the end (and in ``DIR/failures.json``) with their errors.

Runs that differ only in ``eps_kd.*`` and ``methods`` (the eps grid, the
presets, the references of one class split and seed) form a *group*, run as
one ``cil_jax.main --members`` process that trains C_A once and shares data
and compiled steps (``--grouping``): on accelerators the eps-KD members of a
preset are vmapped into one program (``vmap``); on CPU they train in turn
(``serial``), which saves start-up, C_A and compiles but not the matmuls;
``none`` runs every run as its own process. Groups are split to give every
worker one. Should a group fail, its unfinished runs are retried one by
one, resuming from the group's checkpoints, so one bad run fails alone.

Backends: ``local`` runs a pool of worker processes sized to the machine
(one per GPU, each seeing only its GPU; on CPU one per core, each
single-threaded); ``ray`` submits one task per run to a Ray cluster
(``--ray_address``; ``pip install -e .[ray]``), with ``--cpus_per_run`` and
``--gpus_per_run`` as its resource needs. With Ray the workdir must be on a
filesystem every node sees.
"""

import concurrent.futures
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

from absl import app
from absl import flags
from tqdm import tqdm

from cil_jax import overrides as overrides_lib
from launch import grid

_CONFIG = flags.DEFINE_string("config", None, "Config file with get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.")
_BACKEND = flags.DEFINE_enum("backend", "local", ["local", "ray"],
                             "Where runs execute.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Local workers; 0 = one per "
                                "GPU, or one per CPU core without GPUs.")
_RAY_ADDRESS = flags.DEFINE_string("ray_address", None, "Ray cluster address "
                                   "(None starts or joins a local one).")
_CPUS = flags.DEFINE_float("cpus_per_run", 1, "Ray: CPUs per run.")
_GPUS = flags.DEFINE_float("gpus_per_run", 0, "Ray: GPUs per run.")
_GROUPING = flags.DEFINE_enum(
    "grouping", "auto", ["auto", "vmap", "serial", "none"],
    "Runs differing only in eps_kd.* and methods share one process: vmap "
    "(members in one program), serial (in turn), none (a process per run); "
    "auto = vmap on GPU/TPU, serial on CPU.")
_FILTER = flags.DEFINE_string(
    "filter", None, "Run only the runs whose names match this regex "
    "(re.search); the others are left as they are.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs, run nothing.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TAIL_LINES = 15


def load_sweep(config_path):
  """``({name: overrides}, base config as JSON)`` from the config file."""
  spec = importlib.util.spec_from_file_location("sweep_config", config_path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, ROOT)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{config_path} has no get_sweep(); add one returning a "
                     f"list of override dicts (see launch/grid.py).")
  runs = module.get_sweep()
  if not runs:
    raise ValueError(f"{config_path}: get_sweep() returned no runs.")
  return grid.check_unique(runs), module.get_config().to_json(sort_keys=True)


def command(config_path, workdir, overrides):
  return [sys.executable, "-m", "cil_jax.main", "--config",
          os.path.abspath(config_path), "--workdir", workdir] + [
              f"--config.{key}={_flag_value(value)}"
              for key, value in sorted(overrides.items())]


def run_one(cmd, workdir, env=None):
  """Runs one command to ``workdir/log.txt``; ``None`` or the error tail.

  Never raises: a launcher-side error is that run's failure, not the sweep's.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(os.path.join(workdir, "results.json")):
      return None
    return _call(cmd, os.path.join(workdir, "log.txt"), env)
  except Exception as e:  # pylint: disable=broad-except
    return f"launcher error: {e!r}"


def run_task(task, env=None):
  """Runs a task (one run, or a group of runs); ``{run: error}`` of those
  that failed. A failed group's unfinished runs are retried one by one."""
  if task.group_cmd is None:
    (name, (cmd, workdir)), = task.runs.items()
    error = run_one(cmd, workdir, env)
    return {name: error} if error else {}
  try:
    os.makedirs(os.path.dirname(task.group_log), exist_ok=True)
    group_error = _call(task.group_cmd, task.group_log, env)
  except Exception as e:  # pylint: disable=broad-except
    group_error = f"launcher error: {e!r}"
  if not group_error:
    return {}
  failures = {}
  for name, (cmd, workdir) in task.runs.items():
    error = run_one(cmd, workdir, env)
    if error:
      failures[name] = (f"{error}\n(its group failed first; see "
                        f"{task.group_log})")
  return failures


def _call(cmd, log_path, env):
  with open(log_path, "a") as log:
    code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                           cwd=ROOT, env={**os.environ, **(env or {})})
  if code == 0:
    return None
  with open(log_path) as log:
    tail = log.readlines()[-_TAIL_LINES:]
  return f"exit code {code}:\n" + "".join(tail)


class Task:
  """Runs executed by one worker: ``runs`` is ``{name: (cmd, workdir)}``;
  a group has one ``group_cmd`` for all of them, logging to ``group_log``."""

  def __init__(self, runs, group_cmd=None, group_log=None):
    self.runs, self.group_cmd, self.group_log = runs, group_cmd, group_log


def group_runs(runs, num_slots):
  """Lists of run names whose overrides differ only in member keys, the
  largest halved until each of ``num_slots`` workers can have one."""
  groups = {}
  for name, overrides in runs.items():
    key = json.dumps({k: v for k, v in overrides.items()
                      if not overrides_lib.is_member_key(k)},
                     sort_keys=True, default=list)
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
    return command(config_path, workdir, runs[name]), workdir

  if grouping == "none":
    return [Task({name: single(name)}) for name in runs]
  tasks = []
  for names in group_runs(runs, num_slots):
    if len(names) == 1:
      tasks.append(Task({names[0]: single(names[0])}))
      continue
    common = {k: v for k, v in runs[names[0]].items()
              if not overrides_lib.is_member_key(k)}
    members = {os.path.join(sweep_dir, name): {
        k: v for k, v in runs[name].items() if overrides_lib.is_member_key(k)}
               for name in names}
    group_name = hashlib.sha256(json.dumps(
        sorted(names)).encode()).hexdigest()[:12]
    member_file = os.path.join(sweep_dir, "groups", f"{group_name}.json")
    if write:
      os.makedirs(os.path.dirname(member_file), exist_ok=True)
      _write_json(member_file, members)
    group_cmd = [sys.executable, "-m", "cil_jax.main", "--config",
                 os.path.abspath(config_path), "--members", member_file,
                 f"--member_mode={grouping}"] + [
                     f"--config.{key}={_flag_value(value)}"
                     for key, value in sorted(common.items())]
    tasks.append(Task({name: single(name) for name in names}, group_cmd,
                      os.path.join(sweep_dir, "groups", f"{group_name}.log")))
  return tasks


def prepare_data(config_path, runs):
  """Builds each dataset the sweep uses (and its cached statistics) once,
  on the CPU, before parallel workers would race to build it."""
  dataset_overrides = {json.dumps({k: v for k, v in o.items()
                                   if k.startswith("dataset.")},
                                  sort_keys=True) for o in runs.values()}
  for overrides in sorted(dataset_overrides):
    subprocess.run(
        [sys.executable, "-m", "cil_jax.data.prepare", "--config",
         os.path.abspath(config_path)] + [
             f"--config.{k}={_flag_value(v)}"
             for k, v in json.loads(overrides).items()],
        cwd=ROOT, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def worker_envs(requested):
  """Per-worker environments: one GPU each, the TPU host's one process, or
  single-threaded CPU."""
  gpus = _count_gpus()
  if gpus:
    n = requested or gpus
    # Workers sharing a GPU must not each preallocate most of its memory.
    return [{"CUDA_VISIBLE_DEVICES": str(i % gpus),
             "XLA_PYTHON_CLIENT_PREALLOCATE": "false"} for i in range(n)]
  if _has_tpu():
    return [{}]  # a TPU host's chips belong to one process at a time
  n = requested or os.cpu_count() or 1
  single = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"}
  return [single] * n


def resolve_grouping(grouping):
  if grouping != "auto":
    return grouping
  return "vmap" if _count_gpus() or _has_tpu() else "serial"


def run_local(tasks, envs):
  free = list(range(len(envs)))
  failures = {}
  with concurrent.futures.ThreadPoolExecutor(len(envs)) as pool:
    pending = {}
    queue = list(tasks)
    with tqdm(total=sum(len(t.runs) for t in tasks), desc="runs",
              unit="run") as bar:
      while queue or pending:
        while queue and free:
          task = queue.pop(0)
          slot = free.pop()
          pending[pool.submit(run_task, task, envs[slot])] = (task, slot)
        done, _ = concurrent.futures.wait(
            pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          task, slot = pending.pop(future)
          free.append(slot)
          failures.update(future.result())
          bar.set_postfix(failed=len(failures))
          bar.update(len(task.runs))
  return failures


def run_ray(tasks, address, cpus, gpus):
  import ray  # pylint: disable=import-outside-toplevel
  ray.init(address=address, ignore_reinit_error=True)
  remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(run_task)
  refs = {remote.remote(task): task for task in tasks}
  failures = {}
  with tqdm(total=sum(len(t.runs) for t in tasks), desc="runs",
            unit="run") as bar:
    remaining = list(refs)
    while remaining:
      done, remaining = ray.wait(remaining, num_returns=1)
      task = refs[done[0]]
      try:
        failures.update(ray.get(done[0]))
      except ray.exceptions.RayError as e:  # the task itself died
        failures.update({name: f"Ray task failed: {e}" for name in task.runs})
      bar.set_postfix(failed=len(failures))
      bar.update(len(task.runs))
  return failures


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runs, base_config = load_sweep(_CONFIG.value)
  if _FILTER.value:
    runs = {n: o for n, o in runs.items() if re.search(_FILTER.value, n)}
    if not runs:
      raise app.UsageError(f"--filter={_FILTER.value!r} matches no run; "
                           f"--dry_run lists their names.")
  sweep_dir = os.path.abspath(_WORKDIR.value)
  os.makedirs(sweep_dir, exist_ok=True)
  _record_sweep(sweep_dir, _CONFIG.value, runs, base_config)
  finished = [n for n in runs if os.path.exists(
      os.path.join(sweep_dir, n, "results.json"))]
  print(f"{len(runs)} runs in {sweep_dir}: {len(finished)} finished, "
        f"{len(runs) - len(finished)} to run", flush=True)
  todo = {n: o for n, o in runs.items() if n not in finished}
  envs = (worker_envs(_WORKERS.value) if _BACKEND.value == "local"
          else [{}])
  grouping = resolve_grouping(_GROUPING.value)
  tasks = make_tasks(_CONFIG.value, sweep_dir, todo, grouping, len(envs),
                     write=not _DRY_RUN.value)
  if _DRY_RUN.value:
    for task in tasks:
      print(" ".join((task.group_cmd or next(iter(task.runs.values()))[0])[2:]))
    return
  if todo:
    prepare_data(_CONFIG.value, todo)
    print(f"{len(tasks)} task(s): {sum(t.group_cmd is not None for t in tasks)}"
          f" group(s) ({grouping}), {len(envs)} worker(s)", flush=True)
  if _BACKEND.value == "ray":
    failures = run_ray(tasks, _RAY_ADDRESS.value, _CPUS.value, _GPUS.value)
  else:
    failures = run_local(tasks, envs)
  _write_json(os.path.join(sweep_dir, "failures.json"), failures)
  if failures:
    print(f"\n{len(failures)} of {len(todo)} runs failed:")
    for name, error in failures.items():
      print(f"--- {name}: {error}")
    raise SystemExit(1)
  print(f"all {len(runs)} runs finished; python -m launch.aggregate "
        f"--workdir {sweep_dir}")


def _record_sweep(sweep_dir, config_path, runs, base_config):
  """``sweep.json``: the runs of this directory. Another config file, or the
  same file with another ``get_config()``, is refused so finished results
  are never mixed with another sweep's; adding runs to the grid is fine."""
  path = os.path.join(sweep_dir, "sweep.json")
  config_hash = hashlib.sha256(base_config.encode()).hexdigest()
  record = {"config": os.path.relpath(os.path.abspath(config_path), ROOT),
            "config_hash": config_hash, "runs": runs}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old["config"] != record["config"]:
      raise ValueError(f"{sweep_dir} holds a sweep of {old['config']}; use "
                       f"another --workdir.")
    if old["config_hash"] != config_hash:
      raise ValueError(f"{config_path}'s get_config() changed since the runs "
                       f"in {sweep_dir}; their results would mix with new "
                       f"ones. Use another --workdir, or restore the config.")
    runs = {**old["runs"], **json.loads(json.dumps(runs))}
    record["runs"] = runs
  _write_json(path, record)
  shutil.copy(os.path.abspath(config_path),
              os.path.join(sweep_dir, "sweep_config.py"))


def _flag_value(value):
  if isinstance(value, (list, tuple)):
    return repr(tuple(tuple(v) if isinstance(v, list) else v for v in value))
  return str(value)


def _count_gpus():
  if not shutil.which("nvidia-smi"):
    return 0
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                         timeout=30, check=False).stdout
  except (OSError, subprocess.TimeoutExpired):
    return 0
  return sum(line.startswith("GPU ") for line in out.splitlines())


def _has_tpu():
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _write_json(path, obj):
  with open(f"{path}.tmp", "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(f"{path}.tmp", path)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
