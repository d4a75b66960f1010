"""Data-free class addition to the classifiers a user brings (issue 26):
each zoo classifier (``benchmarks/zoo``) trained by its own code on the old
classes, then new classes added through cil_jax's front door
(``configs/add_classes.py`` and the CLI, as docs/checkpoint.md tells a
user), against joint training of the same architecture.

  .venv/bin/python -m benchmarks.data_free_zoo --out docs/data_free/zoo \
      [--models flax_cnn,flax_resnet,plain_mlp,keras_cnn] \
      [--settings 8+2,9+1,5+5] [--methods df_replay,eps_kd,joint] \
      [--seeds 0,1,2] [--epochs 2] [--set key=value ...] [--doc]

(`--models "" --doc` only rewrites the table from results.json.)

Every finished run's row goes to OUT/runs.jsonl as it ends (a rerun skips
it); OUT/results.json holds one row per setting x model x method with means
and stds over seeds. Teachers and workdirs live under OUT/work (not
committed).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"8+2": (8, ((8, 9),)), "9+1": (9, ((9,),)),
            "5+5": (5, ((5, 6, 7, 8, 9),))}
MODULES = {"flax_cnn": "ConvNet", "flax_resnet": "ResNet",
           "plain_mlp": "PlainMLP"}
DESCRIPTIONS = {
    "flax_cnn": "Flax CNN, 2 conv + BatchNorm, dropout",
    "flax_resnet": "Flax ResNet, 3 blocks, BatchNorm",
    "plain_mlp": "MLP 784-256-256, no BatchNorm",
    "keras_cnn": "Keras 3 CNN, 2 conv + BatchNorm, model.fit",
    "own_mlp": "cil_jax's MLP 784-400-400 + BatchNorm (trained by cil_jax)",
}


def teacher_flags(model, teacher_dir, num_old):
  flags = {"teacher.classes": str(tuple(range(num_old))),
           "teacher.input_pixels": "unit",
           "teacher.input_normalization": "mean_std",
           "teacher.input_mean": "(0.286,)", "teacher.input_std": "(0.353,)"}
  if model == "keras_cnn":
    flags["teacher.checkpoint"] = os.path.join(teacher_dir, "model.keras")
  else:
    flags.update({
        "teacher.checkpoint": os.path.join(teacher_dir, "variables"),
        "teacher.module": f"benchmarks.zoo.models:{MODULES[model]}",
        "teacher.module_kwargs": json.dumps({"num_classes": num_old}),
        "teacher.train_kwarg": "train"})
  return flags


def run_one(out, model, setting, seed, methods, epochs, extra, variant=""):
  num_old, groups = SETTINGS[setting]
  work = os.path.join(out, "work")
  teacher_dir = os.path.join(work, "teachers", f"{model}_{num_old}_s{seed}")
  env = {**os.environ, "PYTHONPATH": ROOT}
  if model == "own_mlp":  # cil_jax trains C_A itself: configs/data_free.py
    return _run_cli(work, model, setting, seed, "data_free.py", {
        "classes.groups": str((tuple(range(num_old)), *groups)),
        "methods": methods, "train.epochs": str(epochs), "seed": str(seed),
        "outputs.plots": "False", **extra}, None, env, variant)
  if not os.path.exists(os.path.join(teacher_dir, "teacher.json")):
    subprocess.run([sys.executable, "-m", "benchmarks.zoo.train", "--model",
                    model, "--classes", ",".join(map(str, range(num_old))),
                    "--out", teacher_dir, "--epochs", str(epochs), "--seed",
                    str(seed)], cwd=ROOT, env=env, check=True)
  with open(os.path.join(teacher_dir, "teacher.json")) as f:
    teacher = json.load(f)
  return _run_cli(work, model, setting, seed, "add_classes.py", {
      **teacher_flags(model, teacher_dir, num_old),
      "dataset.name": "fashion_mnist", "classes.groups": str(groups),
      "methods": methods, "train.epochs": str(epochs),
      "train.batch_size": "128", "seed": str(seed),
      "outputs.plots": "False", **extra}, teacher["accuracy"], env, variant)


def _run_cli(work, model, setting, seed, config_file, flags,
             teacher_accuracy, env, variant):
  """One cil_jax run; its final step's rows, one per method (labelled
  ``method (variant)`` for a variant)."""
  name = f"{model}_{setting}_s{seed}" + (f"_{variant}" if variant else "")
  workdir = os.path.join(work, "runs", name)
  start = time.time()
  done = subprocess.run(
      [sys.executable, "-m", "cil_jax.main", "--workdir", workdir,
       "--config", os.path.join(ROOT, "configs", config_file)]
      + [f"--config.{k}={v}" for k, v in flags.items()],
      cwd=ROOT, env=env, capture_output=True, text=True)
  log = os.path.join(work, "logs", f"{name}.log")
  os.makedirs(os.path.dirname(log), exist_ok=True)
  with open(log, "w") as f:
    f.write(done.stdout + done.stderr)
  if done.returncode:
    raise RuntimeError(f"{name} failed; see {log}")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  rows = []
  for method, r in results["methods"].items():
    last = r["steps"][-1]
    rows.append({"setting": f"fashion_mnist_{setting}", "model": model,
                 "method": f"{method} ({variant})" if variant else method,
                 "variant": variant, "seed": seed,
                 "teacher_accuracy": (r["steps"][0]["acc_all"]
                                      if teacher_accuracy is None
                                      else teacher_accuracy),
                 "all": last["acc_all"], "old": last["acc_old"],
                 "new": last["acc_new"],
                 "train_seconds": last.get("train_seconds"),
                 "wall_seconds": round(time.time() - start, 1)})
  return rows


def aggregate(runs):
  groups = {}
  for r in runs:
    groups.setdefault((r["setting"], r["model"], r["method"]), []).append(r)
  rows = []
  for (setting, model, method), group in sorted(groups.items()):
    row = {"setting": setting, "model": model,
           "model_description": DESCRIPTIONS[model], "method": method,
           "seeds": len(group)}
    for key in ("all", "old", "new", "teacher_accuracy"):
      values = np.asarray([g[key] for g in group], np.float64)
      row[key] = float(values.mean())
      row[f"{key}_std"] = float(values.std())
    rows.append(row)
  return rows


DOC = os.path.join(ROOT, "docs", "data_free.md")
MARK = "<!-- zoo table: benchmarks/data_free_zoo.py writes it -->"


def table(rows):
  """The markdown table of ``aggregate``'s rows, with each setting's gap
  of the best data-free method to joint."""
  lines = ["| setting | given classifier | its accuracy | method | seeds | "
           "all | old | new | vs joint |", "|---|---|---:|---|---:|---:|"
           "---:|---:|---:|"]
  joint = {(r["setting"], r["model"]): r["all"] for r in rows
           if r["method"] == "joint"}
  pct = lambda v: f"{100 * v:.1f}"
  for r in rows:
    gap = joint.get((r["setting"], r["model"]))
    lines.append(
        f"| {r['setting']} | {r['model_description']} | "
        f"{pct(r['teacher_accuracy'])} | {r['method']} | {r['seeds']} | "
        f"{pct(r['all'])} ± {pct(r['all_std'])} | {pct(r['old'])} | "
        f"{pct(r['new'])} | "
        + ("" if gap is None or r["method"] == "joint"
           else f"{100 * (r['all'] - gap):+.1f}") + " |")
  return "\n".join(lines)


def write_doc(rows):
  """Replaces the table between the two ``MARK`` lines of docs/data_free.md."""
  with open(DOC) as f:
    text = f.read()
  parts = text.split(MARK)
  if len(parts) != 3:
    raise ValueError(f"{DOC} needs the table between two lines {MARK!r}.")
  with open(DOC, "w") as f:
    f.write(parts[0] + MARK + "\n" + table(rows) + "\n" + MARK + parts[2])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default=os.path.join(ROOT, "docs",
                                                    "data_free", "zoo"))
  parser.add_argument("--models", default="flax_cnn,flax_resnet,plain_mlp,"
                      "keras_cnn")
  parser.add_argument("--settings", default="8+2")
  parser.add_argument("--methods", default="df_replay,eps_kd,joint")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--set", action="append", default=[],
                      help="extra config override key=value")
  parser.add_argument("--variant", default="",
                      help="a label for --set overrides: rows read "
                      "'df_replay (LABEL)', runs kept apart")
  parser.add_argument("--doc", action="store_true",
                      help="rewrite the table in docs/data_free.md")
  args = parser.parse_args()
  extra = dict(kv.split("=", 1) for kv in args.set)
  os.makedirs(args.out, exist_ok=True)
  runs_path = os.path.join(args.out, "runs.jsonl")
  runs = []
  if os.path.exists(runs_path):
    with open(runs_path) as f:
      runs = [json.loads(line) for line in f if line.strip()]
  done = {(r["model"], r["setting"], r["seed"], r.get("variant", ""))
          for r in runs}
  for model in filter(None, args.models.split(",")):
    for setting in args.settings.split(","):
      for seed in map(int, args.seeds.split(",")):
        if (model, f"fashion_mnist_{setting}", seed, args.variant) in done:
          continue
        rows = run_one(args.out, model, setting, seed, args.methods,
                       args.epochs, extra, args.variant)
        with open(runs_path, "a") as f:
          for row in rows:
            f.write(json.dumps(row) + "\n")
        runs.extend(rows)
        print(json.dumps(rows), flush=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
          json.dump(aggregate(runs), f, indent=1)
  if runs:
    with open(os.path.join(args.out, "results.json"), "w") as f:
      json.dump(aggregate(runs), f, indent=1)
  if args.doc and runs:
    write_doc(aggregate(runs))


if __name__ == "__main__":
  main()
