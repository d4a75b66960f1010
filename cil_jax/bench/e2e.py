"""End to end: fresh ``python -m cil_jax.main`` processes, timed from outside.

  python -m cil_jax.bench.e2e --out e2e.json [--repeats N] [--runs lwf,joint]
      [--warm_cache]

Issue 11's protocol (split Fashion-MNIST, 5 steps of 2 classes in order
0..9, MLP 784-400-400, Adam 1e-3 constant, batch 128, 5 epochs per step) for
``lwf``, ``finetune``, ``joint`` (ONE training on all ten classes: a single
class group, so only step 0 trains) and ``all3`` (lwf, finetune and joint in
one process; this joint retrains on all seen classes at every step), plus
the digits default (``configs/default.py`` as is). Each process gets a fresh
temporary workdir; wall time and peak RSS are the parent's view of the
child (``os.wait4``, what ``/usr/bin/time`` reads), so they include
interpreter start-up and exit, which ``timing.json`` cannot see.

A first, unmeasured run per dataset prepares and caches its arrays
(``cil_jax.data.cache``), so measured runs load prepared data, as a user's
second run does. ``--warm_cache`` adds rows ``<run>+cache``: the same run
with JAX's persistent compilation cache (``config.runtime``) filled by an
unmeasured run, as a rerun or a sweep's later runs see it; the rows
without it are the fresh-process figures.
``benchmarks/compare_avalanche.py`` uses ``run_child`` and
``run_main`` for the paired comparison with Avalanche.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")
FIVE_STEPS = "((0,1),(2,3),(4,5),(6,7),(8,9))"
ONE_GROUP = "((0,1,2,3,4,5,6,7,8,9),)"


# Training and evaluation are measured, as on the Avalanche side: no
# TensorBoard files (whose writer imports TensorFlow: about 5 s) or plots.
NO_OUTPUTS = ["--config.outputs.tensorboard=False",
              "--config.outputs.plots=False"]


def _protocol(methods, groups=FIVE_STEPS):
  # fashion_mnist.py's cosine schedule becomes the constant learning rate of
  # issue 11's protocol (and of the Avalanche side).
  return ("fashion_mnist.py", ["--config.optim.schedule=constant",
                               f"--config.classes.groups={groups}",
                               f"--config.methods={methods}", *NO_OUTPUTS])


RUNS = {
    "lwf": _protocol("lwf"),
    "finetune": _protocol("finetune"),
    # A single class group: only step 0 trains, once, on all ten classes.
    "joint": _protocol("joint", ONE_GROUP),
    "all3": _protocol("lwf,finetune,joint"),
    "digits": ("default.py", NO_OUTPUTS),
}
# One epoch of one group of each dataset: enough to build its cache.
_PREPARE = {"fashion_mnist.py": [*RUNS["joint"][1],
                                 "--config.train.epochs=1"],
            "default.py": ["--config.train.epochs=1",
                           "--config.methods=finetune"]}


def run_child(argv, log_path, env=None):
  """Runs ``argv`` to its end; returns ``{"wall_s", "peak_rss_mb"}``.

  ``os.wait4`` returns this child's own rusage (ru_maxrss in KiB on Linux),
  unlike RUSAGE_CHILDREN, whose maximum covers every child so far. Output
  goes to ``log_path``: a pipe could fill up and stall the child. Raises
  ``RuntimeError`` with the log's tail when the child fails.
  """
  with open(log_path, "wb") as log:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
  proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait
  if proc.returncode != 0:
    with open(log_path, errors="replace") as f:
      raise RuntimeError(f"{' '.join(argv)} exited with status "
                         f"{proc.returncode}:\n{f.read()[-3000:]}")
  return {"wall_s": round(wall, 2),
          "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def run_main(config_file, overrides, env=None):
  """One fresh ``cil_jax.main`` process in a new temporary workdir.

  Returns ``run_child``'s figures plus ``accuracy`` ({method: final accuracy
  on all seen classes, %}) and ``timing`` (the run's ``timing.json``).
  """
  tmp = tempfile.mkdtemp(prefix="cil_e2e_")
  try:
    workdir = os.path.join(tmp, "run")
    argv = [sys.executable, "-m", "cil_jax.main",
            f"--config={os.path.join(CONFIGS, config_file)}",
            f"--workdir={workdir}", *overrides]
    result = run_child(argv, os.path.join(tmp, "log.txt"), env)
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    with open(os.path.join(workdir, "timing.json")) as f:
      result["timing"] = json.load(f)
    result["accuracy"] = {
        name: round(100 * m["final_acc_all"], 2)
        for name, m in results["methods"].items()}
    return result
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def prepare(run_names, env=None):
  """Unmeasured runs that build the data caches of ``run_names``' datasets
  (and warm the OS's file cache for the interpreter and libraries)."""
  for config_file in sorted({RUNS[name][0] for name in run_names}):
    print(f"preparing {config_file} (unmeasured)", flush=True)
    run_main(config_file, _PREPARE[config_file], env)


def _median(values):
  return statistics.median(values) if values else float("nan")


def print_table(results):
  """One row per run: median wall, RSS and buckets; accuracy per method."""
  buckets = []
  for runs in results.values():
    for r in runs:
      buckets += [k for k in r["timing"] if k.endswith("_seconds")
                  and k != "wall_seconds" and k not in buckets]
  header = ["run", "n", "wall s", "inner s", "RSS MB", *(
      b[:-len("_seconds")] for b in buckets), "accuracy %"]
  rows = []
  for name, runs in results.items():
    wall = [r["wall_s"] for r in runs]
    row = [name, len(runs), f"{_median(wall):.1f}" + (
        f" ({', '.join(f'{w:.1f}' for w in wall)})" if len(runs) > 1 else ""),
           f"{_median([r['timing']['wall_seconds'] for r in runs]):.1f}",
           f"{_median([r['peak_rss_mb'] for r in runs]):.0f}"]
    row += [f"{_median([r['timing'].get(b, 0.0) for r in runs]):.1f}"
            for b in buckets]
    row.append(" ".join(f"{m} {a:.1f}"
                        for m, a in runs[-1]["accuracy"].items()))
    rows.append(row)
  widths = [max(len(str(r[i])) for r in [header, *rows])
            for i in range(len(header))]
  for row in [header, *rows]:
    print("  ".join(str(c).ljust(w) if i in (0, len(row) - 1)
                    else str(c).rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths))).rstrip())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="results JSON to write")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--runs", default=",".join(RUNS),
                      help=f"comma-separated, of {', '.join(RUNS)}")
  parser.add_argument("--warm_cache", action="store_true",
                      help="also time each run with a persistent "
                      "compilation cache that an unmeasured run of the "
                      "same kind filled (rows '<run>+cache')")
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.runs.split(",") if n.strip()]
  unknown = [n for n in names if n not in RUNS]
  if unknown:
    parser.error(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
  prepare(names)
  runs = {name: RUNS[name] for name in names}
  cache_root = tempfile.mkdtemp(prefix="cil_e2e_xla_") if (
      args.warm_cache) else None
  if cache_root:
    for name in names:
      config_file, overrides = RUNS[name]
      warm = (config_file, [*overrides, "--config.runtime."
                            f"compilation_cache_dir={cache_root}/{name}"])
      print(f"filling the compilation cache of {name} (unmeasured)",
            flush=True)
      run_main(*warm)
      runs[f"{name}+cache"] = warm
  names = list(runs)
  results = {name: [] for name in names}
  # Repeats interleave the kinds, so a slow spell of a shared machine
  # spreads over all of them instead of landing on one.
  for repeat in range(args.repeats):
    for name in names:
      result = run_main(*runs[name])
      results[name].append(result)
      print(f"repeat {repeat + 1}/{args.repeats} {name}: "
            f"{result['wall_s']:.1f} s, {result['peak_rss_mb']:.0f} MB, "
            f"accuracy {result['accuracy']}", flush=True)
  print()
  print_table(results)
  with open(args.out, "w") as f:
    json.dump({"python": sys.executable, "cpu_count": os.cpu_count(),
               "runs": {n: {"config": runs[n][0], "overrides": runs[n][1],
                            "repeats": results[n]} for n in names}},
              f, indent=2)
  if cache_root:
    shutil.rmtree(cache_root, ignore_errors=True)
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
