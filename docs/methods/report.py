"""docs/methods.md and docs/methods/results.json from the runs of
docs/methods/run.sh.

  python docs/methods/report.py [RUNS_DIR]

results.json holds one row per setting x model x method: the seeds, mean
and std over them (fractions in [0, 1]) and ``memory_size`` (0: none of
these methods stores old data; joint, the oracle, trains on all of it).
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from cil_jax import jsonio
from cil_jax.sweep import seeds as seeds_lib

SETTINGS = {  # directory: (model, config arguments)
    "fashion_mnist_5x2": ("MLP 784-400-400", "configs/fashion_mnist.py"),
    "digits_5x2": ("MLP 64-256-256", "configs/default.py"),
}
METHODS = ("finetune", "lwf", "ewc", "si", "mas", "joint")
GROUPS = "((0,1),(2,3),(4,5),(6,7),(8,9))"
# van de Ven & Tolias 2019 ("Three scenarios for continual learning"),
# class-incremental split MNIST, MLP 2x400, final accuracy on all classes.
PUBLISHED = {"finetune": 19.9, "ewc": 20.0, "si": 20.0, "lwf": 23.9,
             "joint": 97.9}


def collect(runs):
  """``{(setting, method, weight): [per-seed metrics]}`` from
  ``RUNS/<setting>/seed_<n>/results.json`` (weight ``None``: the
  default) and the weight runs ``RUNS/<setting>_weights/<method>_<weight>/
  seed_<n>/results.json``."""
  rows = {}
  for setting in SETTINGS:
    sources = [(os.path.join(runs, setting), None)]
    weights_dir = os.path.join(runs, setting + "_weights")
    if os.path.isdir(weights_dir):
      sources += [(os.path.join(weights_dir, name),
                   float(name.rsplit("_", 1)[1]))
                  for name in sorted(os.listdir(weights_dir))
                  if os.path.isdir(os.path.join(weights_dir, name))]
    for directory, weight in sources:
      if not os.path.isdir(directory):
        continue
      for seed_dir in sorted(os.listdir(directory)):
        path = os.path.join(directory, seed_dir, "results.json")
        if not os.path.exists(path):
          continue
        seed = int(seed_dir.split("_")[1])
        for method, r in jsonio.read_json(path)["methods"].items():
          rows.setdefault((setting, method, weight), []).append(
              {"seed": seed, **{m: r[m] for m in seeds_lib.METRICS},
               **_costs(r["steps"][1:])})
  return rows


def _costs(steps):
  """Median seconds per class step after the first: training (with its
  compile, on the first step of a method) and computing the importance
  (where the record has it)."""
  out = {}
  for key in ("train_seconds", "importance_seconds"):
    values = [s[key] for s in steps if key in s]
    if values:
      out[key] = float(np.median(values))
  return out


def _median(runs, key):
  values = [r[key] for r in runs if key in r]
  return round(float(np.median(values)), 2) if values else None


def summarise(collected):
  out = []
  order = sorted(collected, key=lambda k: (
      list(SETTINGS).index(k[0]), k[2] is not None, METHODS.index(k[1]),
      k[2] or 0))
  for setting, method, weight in order:
    runs = collected[setting, method, weight]
    s = seeds_lib.stats(runs)
    out.append({
        "setting": setting, "model": SETTINGS[setting][0],
        "method": method, "weight": weight,
        "seeds": sorted(r["seed"] for r in runs),
        "final_acc_all_mean": _round(s["final_acc_all_mean"]),
        "final_acc_all_std": _round(s["final_acc_all_std"]),
        "final_acc_old_mean": _round(s["final_acc_old_mean"]),
        "final_acc_new_mean": _round(s["final_acc_new_mean"]),
        "avg_incr_acc_mean": _round(s["average_incremental_accuracy_mean"]),
        "avg_incr_acc_std": _round(s["average_incremental_accuracy_std"]),
        "forgetting_mean": _round(s["forgetting_mean"]),
        "memory_size": 0,
        "train_seconds_per_step": _median(runs, "train_seconds"),
        "importance_seconds_per_step": _median(runs, "importance_seconds"),
        "command": (f"python -m cil_jax.main --config "
                    f"{SETTINGS[setting][1]} --config.seed=SEED "
                    f"--config.classes.groups='{GROUPS}' "
                    f"--config.methods={method}"
                    + (f" --config.{method}.weight={weight:g}"
                       if weight is not None else "")
                    + " --workdir DIR")})
  return out


def _round(x):
  return None if x is None else round(float(x), 4)


def table(rows):
  lines = ["| setting | model | method | seeds | final acc. (all) | "
           "final acc. (new group) | avg. incr. acc. | forgetting | "
           "published (split MNIST) |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    published = PUBLISHED.get(r["method"]) if r["weight"] is None else None
    label = r["method"] + (" (oracle, all data)" if r["method"] == "joint"
                           else "")
    if r["weight"] is not None:
      label += f", weight {r['weight']:g}"
    lines.append(
        f"| {r['setting']} | {r['model']} | {label} | {len(r['seeds'])} | "
        f"{_pct(r['final_acc_all_mean'], r['final_acc_all_std'])} | "
        f"{100 * r['final_acc_new_mean']:.1f} | "
        f"{_pct(r['avg_incr_acc_mean'], r['avg_incr_acc_std'])} | "
        f"{100 * r['forgetting_mean']:.1f} | "
        f"{'-' if published is None else f'{published:.1f}'} |")
  return "\n".join(lines)


def cost_table(rows):
  lines = ["| setting | method | training s/step | importance s/step |",
           "|---|---|---:|---:|"]
  for r in rows:
    if r["weight"] is None:
      importance = r["importance_seconds_per_step"]
      lines.append(f"| {r['setting']} | {r['method']} | "
                   f"{r['train_seconds_per_step']:.1f} | "
                   f"{'-' if importance is None else f'{importance:.1f}'} |")
  return "\n".join(lines)


def _pct(mean, std):
  return f"{100 * mean:.1f} ± {100 * std:.1f}"


def main():
  runs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "runs",
                                                            "methods")
  rows = summarise(collect(runs))
  jsonio.write_json(os.path.join(HERE, "results.json"), {"rows": rows})
  with open(os.path.join(HERE, "methods.md.in")) as f:
    template = f.read()
  with open(os.path.join(os.path.dirname(HERE), "methods.md"), "w") as f:
    f.write(template.replace("{{table}}", table(rows)).replace(
        "{{costs}}", cost_table(rows)))
  print(f"{len(rows)} rows from {runs}")


if __name__ == "__main__":
  main()
