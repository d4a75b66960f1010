"""Paired end-to-end comparison with Avalanche on issue 11's protocol.

  .venv/bin/python benchmarks/compare_avalanche.py \
      --avalanche_python /work/avl_venv/bin/python [--repeats 2]

Each repeat runs every protocol once in cil_jax (``cil_jax.bench.e2e``) and
once in Avalanche (``avalanche_protocol.py`` under the other environment's
Python), each a fresh process timed from outside the same way (wall, peak
RSS by ``os.wait4``); the order of the two tools alternates from repeat to
repeat. Unmeasured warm-up runs first prepare cil_jax's data cache and load
both tools' libraries into the OS's file cache. Writes every run to
``benchmarks/results.json`` and the issue's table (medians, with every
repeat's value in parentheses) to ``benchmarks/results.md``.

Torch's two threads slow down about tenfold when another process holds a
core, so measure on a quiet machine; each run records the load average.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

from cil_jax.bench import e2e

HERE = os.path.dirname(os.path.abspath(__file__))
# (row label, cil_jax e2e run, Avalanche strategy)
PAIRS = (("LwF, 5 steps", "lwf", "lwf"),
         ("naive / finetune", "finetune", "naive"),
         ("joint, one training on all classes", "joint", "joint"),
         ("naive + LwF + joint in one process", "all3", "all"))


def run_cil_jax(run, epochs):
  config_file, overrides = e2e.RUNS[run]
  if epochs is not None:
    overrides = [*overrides, f"--config.train.epochs={epochs}"]
  result = e2e.run_main(config_file, overrides)
  return {"wall_s": result["wall_s"], "peak_rss_mb": result["peak_rss_mb"],
          "accuracy": result["accuracy"], "inside": result["timing"]}


def run_avalanche(python, strategy, epochs):
  with tempfile.TemporaryDirectory(prefix="avl_e2e_") as tmp:
    out = os.path.join(tmp, "out.json")
    argv = [python, os.path.join(HERE, "avalanche_protocol.py"),
            f"--strategy={strategy}", f"--out={out}"]
    if epochs is not None:
      argv.append(f"--epochs={epochs}")
    result = e2e.run_child(argv, os.path.join(tmp, "log.txt"))
    if strategy == "none":
      return result
    with open(out) as f:
      inside = json.load(f)
  return {"wall_s": result["wall_s"], "peak_rss_mb": result["peak_rss_mb"],
          "accuracy": {n: s["final_accuracy"]
                       for n, s in inside.pop("strategies").items()},
          "inside": inside}


def _values(runs, key, fmt):
  values = [r[key] for r in runs]
  text = fmt(statistics.median(values))
  return text + (f" ({', '.join(fmt(v) for v in values)})"
                 if len(values) > 1 else "")


def _accuracy(runs):
  return ", ".join(f"{m} {a:.1f}" for m, a in runs[-1]["accuracy"].items())


def markdown(rows):
  lines = ["| run | Avalanche wall | cil_jax wall | ratio | Avalanche RSS "
           "| cil_jax RSS | Avalanche accuracy % | cil_jax accuracy % |",
           "|---|---:|---:|---:|---:|---:|---|---|"]
  seconds = lambda v: f"{v:.1f} s"
  gigabytes = lambda v: f"{v / 1024:.2f} GB"
  for label, runs in rows.items():
    avl, cil = runs["avalanche"], runs["cil_jax"]
    # Ratios of paired runs (same repeat), so a slow spell cancels out.
    ratios = [{"ratio": a["wall_s"] / c["wall_s"]} for a, c in zip(avl, cil)]
    lines.append(" | ".join([
        f"| {label}", _values(avl, "wall_s", seconds),
        _values(cil, "wall_s", seconds),
        _values(ratios, "ratio", lambda v: f"{v:.2f}x"),
        _values(avl, "peak_rss_mb", gigabytes),
        _values(cil, "peak_rss_mb", gigabytes), _accuracy(avl),
        _accuracy(cil)]) + " |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--avalanche_python", required=True,
                      help="python of an environment with avalanche-lib")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--epochs", type=int, default=None,
                      help="override the protocol's 5 (smoke runs only)")
  parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
  parser.add_argument("--table", default=os.path.join(HERE, "results.md"))
  args = parser.parse_args()
  print("warming up (unmeasured)", flush=True)
  e2e.prepare([p[1] for p in PAIRS])
  run_avalanche(args.avalanche_python, "none", None)
  rows = {label: {"cil_jax": [], "avalanche": []} for label, _, _ in PAIRS}
  for repeat in range(args.repeats):
    for label, run, strategy in PAIRS:
      tools = [("cil_jax", lambda: run_cil_jax(run, args.epochs)),
               ("avalanche", lambda: run_avalanche(
                   args.avalanche_python, strategy, args.epochs))]
      # Alternate which tool goes first, so neither always follows the
      # other's page-cache and CPU-frequency aftermath.
      for tool, fn in tools[::1 if repeat % 2 == 0 else -1]:
        load = os.getloadavg()[0]
        result = {"repeat": repeat, "loadavg_1min_before": round(load, 2),
                  **fn()}
        rows[label][tool].append(result)
        print(f"repeat {repeat + 1}/{args.repeats} {label}, {tool}: "
              f"{result['wall_s']:.1f} s, {result['peak_rss_mb']:.0f} MB, "
              f"{result['accuracy']} (load {load:.1f})", flush=True)
  table = markdown(rows)
  print("\n" + table)
  with open(args.table, "w") as f:
    f.write(table)
  with open(args.out, "w") as f:
    json.dump({"cil_jax_python": sys.executable,
               "avalanche_python": args.avalanche_python,
               "cpu_count": os.cpu_count(), "repeats": args.repeats,
               "epochs": args.epochs or 5,
               "rows": [{"run": label, "tool": tool, "repeats": runs}
                        for label, by_tool in rows.items()
                        for tool, runs in by_tool.items()]}, f, indent=2)
  print(f"wrote {args.out} and {args.table}")


if __name__ == "__main__":
  main()
