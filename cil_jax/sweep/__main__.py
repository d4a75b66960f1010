"""Runs a config's sweep: one ``cil_jax.main`` process per run or group.

  python -m cil_jax.sweep --config configs/x.py --workdir DIR [--backend ray]

``configs/x.py`` defines ``get_sweep()`` (see ``cil_jax/sweep/grid.py``).
Each run gets a stable name and its own ``DIR/<name>`` workdir. Rerunning
skips finished runs (``results.json`` present) and resumes interrupted ones
from their checkpoints. A failing run does not stop the others; failures
are listed at the end (and in ``DIR/failures.json``) with their errors.
Then ``python -m cil_jax.sweep.aggregate --workdir DIR`` tabulates them.

Runs that differ only in member keys (``methods``, ``eps_kd.*``,
``df_replay.*``: ``overrides.is_member_key``) form
a group, run as one process (``--grouping``: ``vmap`` on accelerators,
``serial`` on CPU,
``none`` for a process per run); groups are split to give every worker one.
"""

import os

from absl import app
from absl import flags

from cil_jax.sweep import backends
from cil_jax.sweep import record
from cil_jax.sweep import runs as runs_lib
from cil_jax.sweep import tasks as tasks_lib

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
    "Runs differing only in member keys (methods, eps_kd.*, df_replay.*) "
    "share one "
    "process: vmap (members in one program), serial (in turn), none (a "
    "process per run); "
    "auto = vmap on GPU/TPU, serial on CPU.")
_FILTER = flags.DEFINE_string(
    "filter", None, "Run only the runs whose names match this regex "
    "(re.search); the others are left as they are.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", "xla_cache", "JAX's persistent compilation cache "
    "for the sweep's processes (config.runtime.compilation_cache_dir), "
    "relative to --workdir unless absolute: each run after the first with "
    "the same shapes loads its programs instead of compiling them; '' "
    "leaves the config's own setting.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs, run nothing, "
                             "write nothing.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sweep_dir = os.path.abspath(_WORKDIR.value)
  # Everything a user can get wrong is checked before anything is written.
  try:
    runs, base_config = runs_lib.load(_CONFIG.value)
    if _FILTER.value:
      runs = runs_lib.select(runs, _FILTER.value)
    if os.path.exists(sweep_dir) and not os.path.isdir(sweep_dir):
      raise record.SweepDirError(f"--workdir={sweep_dir} is a file; give a "
                                 f"directory (new, or of this sweep).")
    sweep_record = record.merge(sweep_dir, _CONFIG.value, runs, base_config)
  except ValueError as e:  # the errors above, and a damaged sweep.json
    raise app.UsageError(str(e)) from None

  finished = [n for n in runs if os.path.exists(
      os.path.join(sweep_dir, n, "results.json"))]
  print(f"{len(runs)} runs in {sweep_dir}: {len(finished)} finished, "
        f"{len(runs) - len(finished)} to run", flush=True)
  todo = {n: o for n, o in runs.items() if n not in finished}
  envs = (backends.worker_envs(_WORKERS.value) if _BACKEND.value == "local"
          else [{}])
  grouping = backends.resolve_grouping(_GROUPING.value)
  if not _DRY_RUN.value:
    os.makedirs(sweep_dir, exist_ok=True)
    record.write(sweep_dir, _CONFIG.value, sweep_record)
  if _CACHE.value:
    cache_dir = os.path.join(sweep_dir, _CACHE.value)  # absolute stays
    todo = {n: {**o, "runtime.compilation_cache_dir": cache_dir}
            for n, o in todo.items()}
  tasks = tasks_lib.make_tasks(_CONFIG.value, sweep_dir, todo, grouping,
                               len(envs), write=not _DRY_RUN.value)
  if _DRY_RUN.value:
    for task in tasks:
      cmd = task.group_cmd or next(iter(task.runs.values()))[0]
      print(" ".join(cmd[2:]))
    return
  if todo:
    error = backends.prepare_data(_CONFIG.value, todo)
    if error:
      raise SystemExit(error)
    print(f"{len(tasks)} task(s): {sum(t.group_cmd is not None for t in tasks)}"
          f" group(s) ({grouping}), {len(envs)} worker(s)", flush=True)
  if _BACKEND.value == "ray":
    failures = backends.run_ray(tasks, _RAY_ADDRESS.value, _CPUS.value,
                                _GPUS.value)
  else:
    failures = backends.run_local(tasks, envs)
  record.write_failures(sweep_dir, failures)
  if failures:
    print(f"\n{len(failures)} of {len(todo)} runs failed:")
    for name, error in failures.items():
      print(f"--- {name}: {error}")
    raise SystemExit(1)
  print(f"all {len(runs)} runs finished; python -m cil_jax.sweep.aggregate "
        f"--workdir {sweep_dir}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
