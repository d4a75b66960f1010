"""Where tasks run: worker environments, a local pool, or a Ray cluster.

``local`` runs a pool of worker processes sized to the machine (one per GPU,
each seeing only its GPU; the TPU host's one process; on CPU one per core,
each single-threaded). ``ray`` submits one Ray task per task; the sweep
directory must then be on a filesystem every node sees.
"""

import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import sys

from tqdm import tqdm

from cil_jax.sweep import runs as runs_lib
from cil_jax.sweep import tasks as tasks_lib

# Pins a CPU worker to one thread, so one worker per core does not
# oversubscribe the machine.
_SINGLE_THREAD = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
                  "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                  "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"}


def worker_envs(requested):
  """Per-worker environment variables; ``requested`` workers, or (0) as
  many as the machine has GPUs, or CPU cores."""
  gpus = _count_gpus()
  if gpus:
    # Workers sharing a GPU must not each preallocate most of its memory.
    return [{"CUDA_VISIBLE_DEVICES": str(i % gpus),
             "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
            for i in range(requested or gpus)]
  if _has_tpu():
    return [{}]  # a TPU host's chips belong to one process at a time
  return [_SINGLE_THREAD] * (requested or os.cpu_count() or 1)


def resolve_grouping(grouping):
  """``auto``: members vmapped on accelerators; on CPU a batched matmul is
  no faster than H plain ones, so members train in turn."""
  if grouping != "auto":
    return grouping
  return "vmap" if _count_gpus() or _has_tpu() else "serial"


def prepare_data(config_path, runs):
  """Builds each dataset the runs use (and its cached arrays) once, on the
  CPU, before parallel workers would race to build it. ``None``, or the
  error of the first dataset that failed."""
  dataset_overrides = {json.dumps({k: v for k, v in o.items()
                                   if k.startswith("dataset.")},
                                  sort_keys=True) for o in runs.values()}
  for overrides in sorted(dataset_overrides):
    cmd = [sys.executable, "-m", "cil_jax.data.prepare", "--config",
           os.path.abspath(config_path)] + runs_lib.override_flags(
               json.loads(overrides))
    code = subprocess.call(cmd, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if code:
      return (f"preparing the data failed (exit code {code}; its output is "
              f"above): {' '.join(cmd[2:])}. Fix the config's dataset.* "
              f"settings; no run was started.")
  return None


def run_local(tasks, envs):
  """Runs ``tasks`` on a thread pool, one worker per environment in
  ``envs``; ``{run: error}`` of the runs that failed."""
  free = list(range(len(envs)))
  failures = {}
  with concurrent.futures.ThreadPoolExecutor(len(envs)) as pool, \
      _progress(tasks) as bar:
    pending, queue = {}, list(tasks)
    while queue or pending:
      while queue and free:
        task, slot = queue.pop(0), free.pop()
        pending[pool.submit(tasks_lib.run_task, task, envs[slot])] = (
            task, slot)
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
  """Runs ``tasks`` as Ray tasks of ``cpus`` CPUs and ``gpus`` GPUs each."""
  import ray  # pylint: disable=import-outside-toplevel  # optional extra
  ray.init(address=address, ignore_reinit_error=True)
  remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(tasks_lib.run_task)
  refs = {remote.remote(task): task for task in tasks}
  failures = {}
  with _progress(tasks) as bar:
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


def _progress(tasks):
  return tqdm(total=sum(len(t.runs) for t in tasks), desc="runs", unit="run")


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
