"""Runs a config's sweep: one ``cil_jax.main`` process per run.

  python -m launch.sweep --config configs/x.py --workdir DIR [--backend ray]

``configs/x.py`` defines ``get_sweep()`` (see ``launch/grid.py``). Each run
gets a stable name and its own ``DIR/<name>`` workdir. Rerunning skips
finished runs (``results.json`` present) and resumes interrupted ones from
their checkpoints. A failing run does not stop the others; failures are
listed at the end (and in ``DIR/failures.json``) with their errors.

Backends: ``local`` runs a pool of worker processes sized to the machine
(one per GPU, each seeing only its GPU; on CPU one per core, each
single-threaded); ``ray`` submits one task per run to a Ray cluster
(``--ray_address``; ``pip install -e .[ray]``), with ``--cpus_per_run`` and
``--gpus_per_run`` as its resource needs. With Ray the workdir must be on a
filesystem every node sees.
"""

import concurrent.futures
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

from absl import app
from absl import flags
from tqdm import tqdm

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
    with open(os.path.join(workdir, "log.txt"), "a") as log:
      code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                             cwd=ROOT, env={**os.environ, **(env or {})})
    if code == 0:
      return None
    with open(os.path.join(workdir, "log.txt")) as log:
      tail = log.readlines()[-_TAIL_LINES:]
    return f"exit code {code}:\n" + "".join(tail)
  except Exception as e:  # pylint: disable=broad-except
    return f"launcher error: {e!r}"


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
  """Per-worker environments: one GPU each, or single-threaded CPU."""
  gpus = _count_gpus()
  if gpus:
    n = requested or gpus
    # Workers sharing a GPU must not each preallocate most of its memory.
    return [{"CUDA_VISIBLE_DEVICES": str(i % gpus),
             "XLA_PYTHON_CLIENT_PREALLOCATE": "false"} for i in range(n)]
  n = requested or os.cpu_count() or 1
  single = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"}
  return [single] * n


def run_local(jobs, num_workers):
  envs = worker_envs(num_workers)
  free = list(range(len(envs)))
  failures = {}
  with concurrent.futures.ThreadPoolExecutor(len(envs)) as pool:
    pending = {}
    queue = list(jobs.items())
    with tqdm(total=len(jobs), desc="runs", unit="run") as bar:
      while queue or pending:
        while queue and free:
          name, (cmd, workdir) = queue.pop(0)
          slot = free.pop()
          pending[pool.submit(run_one, cmd, workdir, envs[slot])] = (name,
                                                                     slot)
        done, _ = concurrent.futures.wait(
            pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          name, slot = pending.pop(future)
          free.append(slot)
          error = future.result()
          if error:
            failures[name] = error
          bar.set_postfix(failed=len(failures))
          bar.update()
  return failures


def run_ray(jobs, address, cpus, gpus):
  import ray  # pylint: disable=import-outside-toplevel
  ray.init(address=address, ignore_reinit_error=True)
  remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(run_one)
  refs = {remote.remote(cmd, workdir): name
          for name, (cmd, workdir) in jobs.items()}
  failures = {}
  with tqdm(total=len(refs), desc="runs", unit="run") as bar:
    remaining = list(refs)
    while remaining:
      done, remaining = ray.wait(remaining, num_returns=1)
      try:
        error = ray.get(done[0])
      except ray.exceptions.RayError as e:  # the task itself died
        error = f"Ray task failed: {e}"
      if error:
        failures[refs[done[0]]] = error
      bar.set_postfix(failed=len(failures))
      bar.update()
  return failures


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runs, base_config = load_sweep(_CONFIG.value)
  sweep_dir = os.path.abspath(_WORKDIR.value)
  os.makedirs(sweep_dir, exist_ok=True)
  _record_sweep(sweep_dir, _CONFIG.value, runs, base_config)
  jobs = {name: (command(_CONFIG.value, os.path.join(sweep_dir, name),
                         overrides), os.path.join(sweep_dir, name))
          for name, overrides in runs.items()}
  finished = [n for n in jobs if os.path.exists(
      os.path.join(sweep_dir, n, "results.json"))]
  print(f"{len(jobs)} runs in {sweep_dir}: {len(finished)} finished, "
        f"{len(jobs) - len(finished)} to run", flush=True)
  if _DRY_RUN.value:
    for name, (cmd, _) in jobs.items():
      print(name, " ".join(cmd[2:]))
    return
  todo = {n: j for n, j in jobs.items() if n not in finished}
  if todo:
    prepare_data(_CONFIG.value, {n: runs[n] for n in todo})
  if _BACKEND.value == "ray":
    failures = run_ray(todo, _RAY_ADDRESS.value, _CPUS.value, _GPUS.value)
  else:
    failures = run_local(todo, _WORKERS.value)
  _write_json(os.path.join(sweep_dir, "failures.json"), failures)
  if failures:
    print(f"\n{len(failures)} of {len(todo)} runs failed:")
    for name, error in failures.items():
      print(f"--- {name}: {error}")
    raise SystemExit(1)
  print(f"all {len(jobs)} runs finished; python -m launch.aggregate "
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


def _write_json(path, obj):
  with open(f"{path}.tmp", "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(f"{path}.tmp", path)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
