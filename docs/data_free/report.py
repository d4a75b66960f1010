"""Tables, results.json and figures of docs/data_free.md from the runs of
docs/data_free/run.sh.

  python docs/data_free/report.py [RUNS_DIR]

Writes docs/data_free/results.json (one row per setting x model x method:
mean and std over seeds, fractions in [0, 1]), the table of
docs/data_free.md (between its ``<!-- table -->`` markers), the figure
accuracy_vs_old_share.png and copies of the synthetic sample grids of
seed 0 (samples_*.png).
"""

import glob
import json
import os
import re
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from cil_jax import jsonio  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = ("fashion_mnist_9+1", "fashion_mnist_8+2", "fashion_mnist_5+5",
            "fashion_mnist_5x2", "digits_5+5")
VARIANTS = {  # members of docs/data_free/run.sh: what each changes
    "recipe": "round 1 (BatchNorm statistics frozen, eps 0.5)",
    "no_head_finetune": "without the head fine-tune",
    "no_replay": "without replay (nor head fine-tune)",
    "ce_all": "CE over all classes instead of local",
    "bn_trained": "BatchNorm statistics trained",
    "no_weight_aligning": "without weight aligning",
    "bn_mixed": "BatchNorm statistics on mixed real new + synthetic old "
                "batches",
    "auto": "",  # configs/data_free.py's default
    "auto_w2": "batch_stats=auto, eps=auto, replay weight 2",
    "generator": "generator synthesiser instead of inversion",
}
# df_replay's values before round 2's and the synthesis rule became its
# defaults (docs/data_free/run.sh's ROUND1).
ROUND1 = {"df_replay.batch_stats": "frozen", "df_replay.eps": "0.5",
          "df_replay.inversion.init": "noise"}
# docs/data_free/run.sh's round 3: a BatchNorm CNN, its own settings.
CNN = "CNN conv 16-32, dense 64 + BatchNorm (2 epochs)"
CNN_FLAGS = ["--config.model.name=cnn", "--config.model.batch_norm=True",
             "'--config.model.conv_features=(16,32)'",
             "--config.model.dense_size=64", "--config.train.epochs=2",
             "--config.df_replay.samples=1024",
             "--config.df_replay.inversion.steps=100",
             "--config.df_replay.batch_stats=auto",
             "--config.df_replay.eps=auto"]
METRICS = ("final_acc_all", "final_acc_old", "final_acc_new",
           "average_incremental_accuracy", "forgetting")
OLD_SHARE = {"9+1": 0.9, "8+2": 0.8, "5+5": 0.5}


def collect(runs):
  """``{(setting, model, method label): {"seeds": {seed: metrics},
  "command": str}}`` from every results.json under ``runs``."""
  rows = {}
  for root, _, files in sorted(os.walk(runs)):
    if "results.json" not in files:
      continue
    parts = os.path.relpath(root, runs).split(os.sep)
    setting, seed_dir = parts[0], parts[1]
    plain = setting.endswith("_plain_mlp")
    cnn = setting.endswith("_cnn")
    # A run alone in its seed directory: round 1's recipe, but the CNN's
    # (round 3) ran configs/data_free.py's defaults.
    variant = parts[2] if len(parts) > 2 else "auto" if cnn else "recipe"
    seed = int(seed_dir.split("_")[1])
    setting = setting.replace("_plain_mlp", "").replace("_cnn", "")
    model = CNN if cnn else _model_name(setting, plain)
    results = jsonio.read_json(os.path.join(root, "results.json"))
    for method, r in results["methods"].items():
      label = method if method != "df_replay" or not VARIANTS.get(variant) \
          else f"df_replay {VARIANTS[variant]}"
      row = rows.setdefault((setting, model, label), {
          "seeds": {}, "command": _command(root, runs, setting, seed, plain,
                                           method, variant, cnn)})
      row["seeds"][seed] = {m: r[m] for m in METRICS}
  return rows


def _model_name(setting, plain):
  base = "MLP 784-400-400" if setting.startswith("fashion") else \
      "MLP 64-256-256"
  return base if plain else base + " + BatchNorm"


def _command(root, runs, setting, seed, plain, method, variant, cnn=False):
  """The single-run command that reproduces a row's run of ``seed``."""
  dataset, split = setting.rsplit("_", 1)
  config = ("configs/data_free.py" if dataset == "fashion_mnist" else
            "configs/default.py --config.model.batch_norm=True")
  args = [f"python -m cil_jax.main --config {config}",
          "--config.seed=SEED"]
  if dataset == "fashion_mnist":
    args.append(f"--config.classes.groups='{_groups(split)}'")
  if plain:
    args.append("--config.model.batch_norm=False")
  if cnn:
    args += CNN_FLAGS
  overrides = {}
  seed_dir = os.path.join(runs, *os.path.relpath(root, runs).split(
      os.sep)[:2])
  for members in sorted(glob.glob(os.path.join(seed_dir, "members*.json"))):
    for workdir, values in jsonio.read_json(members).items():
      if os.path.basename(workdir) == variant:
        overrides = dict(values)
  if method == "df_replay" and not cnn:
    # Runs without these values ran round 1's recipe, the default then.
    overrides = {**ROUND1, **overrides}
  overrides["methods"] = method
  args += [f"--config.{k}={json.dumps(v) if isinstance(v, bool) else v}"
           for k, v in overrides.items()]
  return " ".join(args + ["--workdir DIR"])


def _groups(split):
  if split == "5x2":
    return "((0,1),(2,3),(4,5),(6,7),(8,9))"
  k = int(split.split("+")[0])
  return (f"(({','.join(map(str, range(k)))},),"
          f"({','.join(map(str, range(k, 10)))},))")


def summarise(rows):
  out = []
  for (setting, model, method), row in sorted(rows.items(), key=_order):
    values = {m: np.array([s[m] for s in row["seeds"].values()])
              for m in METRICS}
    out.append({
        "setting": setting, "model": model, "method": method,
        "seeds": sorted(row["seeds"]),
        "final_acc_all_mean": _round(values["final_acc_all"].mean()),
        "final_acc_all_std": _round(values["final_acc_all"].std()),
        "final_acc_old_mean": _round(values["final_acc_old"].mean()),
        "final_acc_new_mean": _round(values["final_acc_new"].mean()),
        "final_acc_new_std": _round(values["final_acc_new"].std()),
        "avg_incr_acc_mean": _round(
            values["average_incremental_accuracy"].mean()),
        "avg_incr_acc_std": _round(
            values["average_incremental_accuracy"].std()),
        "forgetting_mean": _round(values["forgetting"].mean()),
        "command": row["command"]})
  return out


def _order(item):
  (setting, model, method), _ = item
  rank = {"df_replay": 0, "eps_kd": 20, "finetune": 21, "joint": 22}
  variant = next((i + 1 for i, v in enumerate(VARIANTS.values())
                  if v and method.endswith(v)), 0)
  return (SETTINGS.index(setting) if setting in SETTINGS else 99,
          model == CNN, "BatchNorm" not in model, rank.get(method, variant))


def _round(x):
  return round(float(x), 4)


def table(rows):
  lines = ["| setting | model | method | seeds | all | old | new | "
           "avg. incr. | forgetting |", "|---|---|---|---:|---:|---:|---:|"
           "---:|---:|"]
  for r in rows:
    lines.append(
        f"| {r['setting']} | {r['model']} | {r['method']} | "
        f"{len(r['seeds'])} | {_pct(r['final_acc_all_mean'], r['final_acc_all_std'])} | "
        f"{100 * r['final_acc_old_mean']:.1f} | "
        f"{_pct(r['final_acc_new_mean'], r['final_acc_new_std'])} | "
        f"{_pct(r['avg_incr_acc_mean'], r['avg_incr_acc_std'])} | "
        f"{100 * r['forgetting_mean']:.1f} |")
  lines += ["", "Commands (one per row; SEED is 0, 1, 2; DIR a new "
            "directory):", ""]
  lines += [f"- {r['setting']}, {r['model']}, {r['method']}: "
            f"`{r['command']}`" for r in rows]
  return "\n".join(lines) + "\n"


def write_table(doc, text):
  """Replaces the text between the doc's table markers."""
  with open(doc) as f:
    content = f.read()
  start, end = "<!-- table -->\n", "<!-- /table -->"
  if start not in content or end not in content:
    raise ValueError(f"{doc} lacks the {start.strip()} ... {end} markers "
                     f"that hold the generated table; add them.")
  head, rest = content.split(start, 1)
  tail = rest.split(end, 1)[1]
  with open(doc, "w") as f:
    f.write(head + start + text + end + tail)


def _pct(mean, std):
  return f"{100 * mean:.1f} ± {100 * std:.1f}"


def figure(rows, path):
  """Final accuracy against the share of old classes (single-step
  Fashion-MNIST settings), one line per method."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for method in ("df_replay", f"df_replay {VARIANTS['recipe']}",
                 "df_replay without the head fine-tune", "eps_kd",
                 "finetune", "joint"):
    points = sorted(
        (OLD_SHARE[r["setting"].rsplit("_", 1)[1]], r["final_acc_all_mean"],
         r["final_acc_all_std"]) for r in rows
        if r["method"] == method and r["model"].startswith("MLP")
        and "BatchNorm" in r["model"]
        and r["setting"].rsplit("_", 1)[1] in OLD_SHARE
        and r["setting"].startswith("fashion"))
    if points:
      x, y, e = zip(*points)
      ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=method)
  ax.set_xlabel("share of old classes k / (k + m)")
  ax.set_ylabel("final accuracy, all 10 classes")
  ax.set_title("Fashion-MNIST, MLP + BatchNorm, mean ± std over seeds")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def copy_sample_grids(runs):
  grids = {
      "fashion_mnist_8+2": "fashion_mnist_8+2/seed_0/recipe/df_replay/step_1",
      "fashion_mnist_5x2_step4":
          "fashion_mnist_5x2/seed_0/recipe/df_replay/step_4",
      "plain_mlp_8+2": "fashion_mnist_8+2_plain_mlp/seed_0/df_replay/step_1",
      "digits_5+5": "digits_5+5/seed_0/recipe/df_replay/step_1"}
  for name, step_dir in grids.items():
    source = os.path.join(runs, step_dir, "replay_samples.png")
    if os.path.exists(source):
      shutil.copyfile(source, os.path.join(HERE, f"samples_{name}.png"))


def main():
  runs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "runs",
                                                            "data_free")
  rows = summarise(collect(runs))
  jsonio.write_json(os.path.join(HERE, "results.json"), {"rows": rows})
  write_table(os.path.join(os.path.dirname(HERE), "data_free.md"),
              table(rows))
  figure(rows, os.path.join(HERE, "accuracy_vs_old_share.png"))
  copy_sample_grids(runs)
  print(f"{len(rows)} rows from {runs}")


if __name__ == "__main__":
  main()
