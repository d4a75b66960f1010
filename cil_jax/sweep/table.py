"""A sweep's results as rows, tables and plots (no flags:
``python -m cil_jax.sweep.aggregate`` is the command line)."""

import collections
import csv
import json
import os

import matplotlib
import numpy as np

from cil_jax import jsonio
from cil_jax.sweep import record
from cil_jax.sweep import seeds

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_MAX_LINES = 12  # curves per plot; more are unreadable


def load_rows(sweep_dir):
  """One row per (run, method): the run's overrides plus its metrics; and
  the names of runs without results."""
  rows, missing = [], []
  for name, overrides in sorted(record.read_runs(sweep_dir).items()):
    path = os.path.join(sweep_dir, name, "results.json")
    if not os.path.exists(path):
      missing.append(name)
      continue
    results = jsonio.read_json(
        path, fix=f"delete it to have the sweep recompute run {name} from "
        f"its checkpoints")
    for method, r in results["methods"].items():
      rows.append({"run": name, **{k: _cell(v) for k, v in overrides.items()},
                   "method": method, **{m: r[m] for m in seeds.METRICS}})
  return rows, missing


def write_csv(path, rows):
  fields = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def markdown(summary, missing):
  keys = _setting_keys(summary) + ["seeds"]
  lines = ["| " + " | ".join(keys + list(seeds.HEADERS)) + " |",
           "|" + "---|" * len(keys) + "---:|" * len(seeds.HEADERS)]
  for entry in summary:
    cells = [str(entry.get(k, "")) for k in keys] + seeds.cells(entry)
    lines.append("| " + " | ".join(cells) + " |")
  if missing:
    lines += ["", f"Unfinished runs ({len(missing)}): " + ", ".join(missing)]
  return "\n".join(lines) + "\n"


def plot(summary, plot_dir):
  """One PNG per numeric swept key; returns the paths written."""
  os.makedirs(plot_dir, exist_ok=True)
  keys = [k for k in _setting_keys(summary) if k != "method"]
  paths = []
  for x_key in keys:
    xs = {e.get(x_key) for e in summary}
    if len(xs) < 2 or not all(_is_number(x) for x in xs):
      continue
    lines = collections.OrderedDict()
    for e in summary:
      label = ", ".join(f"{k}={e[k]}" for k in ["method"] + keys
                        if k != x_key and k in e)
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


def _setting_keys(summary):
  """Keys that name a setting (swept keys and method), in first-seen order."""
  return list(dict.fromkeys(
      k for e in summary for k in e
      if not k.endswith(("_mean", "_std")) and k != "seeds"))


def _cell(value):
  return json.dumps(value) if isinstance(value, (list, dict)) else value


def _is_number(value):
  try:
    float(value)
    return not isinstance(value, bool)
  except (TypeError, ValueError):
    return False
