"""A sweep's workdir into tables and plots.

  python -m launch.aggregate --workdir DIR

Writes ``DIR/runs.csv`` (one row per run and method), ``DIR/summary.csv``
and ``DIR/summary.md`` (mean and standard deviation over seeds of every
other setting) and ``DIR/plots/<key>.png`` (final accuracy on all classes
against each numeric swept key, one line per method and setting of the
other keys, mean ± std over seeds). Unfinished runs are listed, not guessed.
"""

import collections
import csv
import json
import os

import matplotlib
import numpy as np
from absl import app
from absl import flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.")

METRICS = ("final_acc_old", "final_acc_new", "final_acc_all",
           "average_incremental_accuracy", "forgetting")
_MAX_LINES = 12


def load_rows(sweep_dir):
  """One row per (run, method): the run's overrides plus its metrics; and
  the names of runs without results."""
  with open(os.path.join(sweep_dir, "sweep.json")) as f:
    runs = json.load(f)["runs"]
  rows, missing = [], []
  for name, overrides in sorted(runs.items()):
    path = os.path.join(sweep_dir, name, "results.json")
    if not os.path.exists(path):
      missing.append(name)
      continue
    with open(path) as f:
      results = json.load(f)
    for method, r in results["methods"].items():
      rows.append({"run": name, **{k: _cell(v) for k, v in overrides.items()},
                   "method": method, **{m: r[m] for m in METRICS}})
  return rows, missing


def summarise(rows):
  """Mean/std/count of each metric over seeds, per setting and method."""
  groups = collections.OrderedDict()
  for row in rows:
    key = tuple((k, v) for k, v in row.items()
                if k not in METRICS and k not in ("run", "seed"))
    groups.setdefault(key, []).append(row)
  summary = []
  for key, members in groups.items():
    entry = dict(key)
    entry["seeds"] = len(members)
    for m in METRICS:
      values = [r[m] for r in members if r[m] is not None]
      entry[f"{m}_mean"] = float(np.mean(values)) if values else None
      entry[f"{m}_std"] = float(np.std(values)) if values else None
    summary.append(entry)
  return summary


def write_csv(path, rows):
  fields = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def markdown(summary, missing):
  keys = [k for k in summary[0] if not k.endswith(("_mean", "_std"))]
  lines = ["| " + " | ".join(keys + ["old", "new", "all", "avg. inc.",
                                     "forgetting"]) + " |",
           "|" + "---|" * len(keys) + "---:|" * 5]
  for entry in summary:
    cells = [str(entry[k]) for k in keys] + [
        _pct(entry[f"{m}_mean"], entry[f"{m}_std"]) for m in METRICS]
    lines.append("| " + " | ".join(cells) + " |")
  if missing:
    lines += ["", f"Unfinished runs ({len(missing)}): " + ", ".join(missing)]
  return "\n".join(lines) + "\n"


def plot(summary, plot_dir):
  """One PNG per numeric swept key; returns the paths written."""
  os.makedirs(plot_dir, exist_ok=True)
  keys = [k for k in summary[0] if not k.endswith(("_mean", "_std"))
          and k not in ("method", "seeds")]
  paths = []
  for x_key in keys:
    xs = {e[x_key] for e in summary}
    if len(xs) < 2 or not all(_is_number(x) for x in xs):
      continue
    lines = collections.OrderedDict()
    for e in summary:
      label = ", ".join(f"{k}={e[k]}" for k in ["method"] + keys
                        if k != x_key)
      lines.setdefault(label, []).append(e)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, entries in list(lines.items())[:_MAX_LINES]:
      entries.sort(key=lambda e: float(e[x_key]))
      x = [float(e[x_key]) for e in entries]
      y = np.array([100 * e["final_acc_all_mean"] for e in entries])
      s = np.array([100 * e["final_acc_all_std"] for e in entries])
      ax.errorbar(x, y, yerr=s, marker="o", capsize=3, label=label)
    ax.set_xlabel(x_key)
    ax.set_ylabel("final accuracy, all classes (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    path = os.path.join(plot_dir, f"{x_key}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sweep_dir = _WORKDIR.value
  rows, missing = load_rows(sweep_dir)
  if not rows:
    raise SystemExit(f"No finished run in {sweep_dir}.")
  summary = summarise(rows)
  write_csv(os.path.join(sweep_dir, "runs.csv"), rows)
  write_csv(os.path.join(sweep_dir, "summary.csv"), summary)
  text = markdown(summary, missing)
  with open(os.path.join(sweep_dir, "summary.md"), "w") as f:
    f.write(text)
  print(text)
  for path in plot(summary, os.path.join(sweep_dir, "plots")):
    print("wrote", path)


def _cell(value):
  return json.dumps(value) if isinstance(value, (list, dict)) else value


def _is_number(value):
  try:
    float(value)
    return not isinstance(value, bool)
  except (TypeError, ValueError):
    return False


def _pct(mean, std):
  return "-" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
