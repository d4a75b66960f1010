"""docs/methods.md and docs/methods/results.json from the runs of
docs/methods/run.sh.

  python docs/methods/report.py [RUNS_DIR]

results.json holds one row per setting x model x method x memory size:
the seeds, mean and std over them (fractions in [0, 1]) and
``memory_size`` (0: the method stores no old data; joint, the oracle,
trains on all of it; er, icarl and agem keep that many training
examples). Rows whose runs are not under RUNS_DIR are kept from the
existing results.json, so a partial run updates only what it finished.
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
METHODS = ("finetune", "lwf", "ewc", "si", "mas", "joint", "er", "icarl",
           "agem", "bic", "lucir")
# Methods whose runs change the model: lucir's cosine head (its own C_A).
MODEL_ARGS = {"lucir": ("cosine head", " --config.model.cosine_head=True")}
GROUPS = "((0,1),(2,3),(4,5),(6,7),(8,9))"
# van de Ven & Tolias 2019 ("Three scenarios for continual learning"),
# class-incremental split MNIST, MLP 2x400, final accuracy on all classes.
PUBLISHED = {"finetune": 19.9, "ewc": 20.0, "si": 20.0, "lwf": 23.9,
             "joint": 97.9, ("icarl", 2000): 94.6}


def collect(runs):
  """``{(setting, method, weight, memory size): [per-seed metrics]}`` from
  ``RUNS/<setting>/seed_<n>/results.json`` (weight ``None``: the
  default), the weight runs ``RUNS/<setting>_weights/<method>_<weight>/
  seed_<n>/results.json`` and the rehearsal runs
  ``RUNS/<setting>_memory_<size>[_<methods>]/seed_<n>/results.json``."""
  rows = {}
  for setting in SETTINGS:
    prefix = f"{setting}_memory_"
    sources = [(os.path.join(runs, setting), None, 0)] + [
        (os.path.join(runs, name), None,
         int(name[len(prefix):].split("_")[0]))
        for name in sorted(os.listdir(runs) if os.path.isdir(runs) else [])
        if name.startswith(prefix)
        and os.path.isdir(os.path.join(runs, name))]
    weights_dir = os.path.join(runs, setting + "_weights")
    if os.path.isdir(weights_dir):
      sources += [(os.path.join(weights_dir, name),
                   float(name.rsplit("_", 1)[1]), 0)
                  for name in sorted(os.listdir(weights_dir))
                  if os.path.isdir(os.path.join(weights_dir, name))]
    for directory, weight, memory_size in sources:
      if not os.path.isdir(directory):
        continue
      for seed_dir in sorted(os.listdir(directory)):
        path = os.path.join(directory, seed_dir, "results.json")
        if not os.path.exists(path):
          continue
        seed = int(seed_dir.split("_")[1])
        for method, r in jsonio.read_json(path)["methods"].items():
          rows.setdefault((setting, method, weight, memory_size),
                          []).append(
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
  for setting, method, weight, memory_size in collected:
    runs = collected[setting, method, weight, memory_size]
    s = seeds_lib.stats(runs)
    out.append({
        "setting": setting,
        "model": SETTINGS[setting][0] + (
            f", {MODEL_ARGS[method][0]}" if method in MODEL_ARGS else ""),
        "method": method, "weight": weight,
        "seeds": sorted(r["seed"] for r in runs),
        "final_acc_all_mean": _round(s["final_acc_all_mean"]),
        "final_acc_all_std": _round(s["final_acc_all_std"]),
        "final_acc_old_mean": _round(s["final_acc_old_mean"]),
        "final_acc_new_mean": _round(s["final_acc_new_mean"]),
        "avg_incr_acc_mean": _round(s["average_incremental_accuracy_mean"]),
        "avg_incr_acc_std": _round(s["average_incremental_accuracy_std"]),
        "forgetting_mean": _round(s["forgetting_mean"]),
        "memory_size": memory_size,
        "train_seconds_per_step": _median(runs, "train_seconds"),
        "importance_seconds_per_step": _median(runs, "importance_seconds"),
        "command": (f"python -m cil_jax.main --config "
                    f"{SETTINGS[setting][1]} --config.seed=SEED "
                    f"--config.classes.groups='{GROUPS}' "
                    f"--config.methods={method}"
                    + (f" --config.{method}.weight={weight:g}"
                       if weight is not None else "")
                    + (f" --config.memory.size={memory_size}"
                       if memory_size else "")
                    + (MODEL_ARGS[method][1] if method in MODEL_ARGS
                       else "")
                    + " --workdir DIR")})
  return out


def _key(row):
  return (row["setting"], row["method"], row["weight"],
          row.get("memory_size", 0))


def merge(new_rows, old_rows):
  """``new_rows`` plus the ``old_rows`` they do not replace, in table
  order: setting, memory size, default weights first, method."""
  keys = {_key(r) for r in new_rows}
  rows = new_rows + [r for r in old_rows if _key(r) not in keys]
  return sorted(rows, key=lambda r: (
      list(SETTINGS).index(r["setting"]), r.get("memory_size", 0),
      r["weight"] is not None, METHODS.index(r["method"]), r["weight"] or 0))


def _round(x):
  return None if x is None else round(float(x), 4)


def table(rows, rehearsal=False):
  """The regularisation rows (memory 0), or the rehearsal rows, which
  store old data."""
  lines = ["| setting | model | method | seeds | final acc. (all) | "
           "final acc. (new group) | avg. incr. acc. | forgetting | "
           "published (split MNIST) |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  if rehearsal:
    lines[0] = lines[0].replace("| method |",
                                "| method (STORES OLD DATA) | memory |")
    lines[1] = "|---|---|---|---:" + lines[1][len("|---|---|---"):]
  for r in rows:
    memory_size = r.get("memory_size", 0)
    if bool(memory_size) != rehearsal:
      continue
    published = (PUBLISHED.get((r["method"], memory_size) if memory_size
                               else r["method"])
                 if r["weight"] is None else None)
    label = r["method"] + (" (oracle, all data)" if r["method"] == "joint"
                           else "")
    if r["weight"] is not None:
      label += f", weight {r['weight']:g}"
    if rehearsal:
      label += f" (not data-free) | {memory_size} exemplars"
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
      memory_size = r.get("memory_size", 0)
      method = r["method"] + (f" (memory {memory_size}, stores old data)"
                              if memory_size else "")
      lines.append(f"| {r['setting']} | {method} | "
                   f"{r['train_seconds_per_step']:.1f} | "
                   f"{'-' if importance is None else f'{importance:.1f}'} |")
  return "\n".join(lines)


def _pct(mean, std):
  return f"{100 * mean:.1f} ± {100 * std:.1f}"


def main():
  runs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "runs",
                                                            "methods")
  path = os.path.join(HERE, "results.json")
  new_rows = summarise(collect(runs))
  old_rows = jsonio.read_json(path)["rows"] if os.path.exists(path) else []
  rows = merge(new_rows, old_rows)
  jsonio.write_json(path, {"rows": rows})
  with open(os.path.join(HERE, "methods.md.in")) as f:
    template = f.read()
  with open(os.path.join(os.path.dirname(HERE), "methods.md"), "w") as f:
    f.write(template.replace("{{table}}", table(rows)).replace(
        "{{rehearsal_table}}", table(rows, rehearsal=True)).replace(
            "{{costs}}", cost_table(rows)))
  print(f"{len(new_rows)} rows from {runs}, {len(rows) - len(new_rows)} "
        f"kept from {path}")


if __name__ == "__main__":
  main()
