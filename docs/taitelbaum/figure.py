"""The paper's two panels from a ``configs/taitelbaum_sweep.py`` sweep.

  python docs/taitelbaum/figure.py --workdir DIR --out docs/taitelbaum

(a) final accuracy on all classes against the share of original classes
k/10, per layer preset at its best eps, with finetune and joint; (b) that
best eps against the share. Writes ``accuracy.png``, ``best_eps.png`` and
``table.md`` (a least-squares line of best eps against the share per
preset, then every cell mean ± std over seeds) into ``--out``.
"""

import json
import os

import matplotlib
import numpy as np
from absl import app
from absl import flags

from cil_jax.sweep import seeds
from cil_jax.sweep import table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")


def cells(rows):
  """``{(curve, k, eps): (mean, std)}`` of final accuracy on all classes
  over seeds; curve is the layer preset for eps_kd runs, or the method name
  for the references (eps ``None``)."""
  out = {}
  for entry in seeds.summarise(rows):
    k = len(json.loads(entry["classes.groups"])[0])
    if entry["method"] == "eps_kd":
      key = (entry["eps_kd.layers"], k, float(entry["eps_kd.eps"]))
    else:
      key = (entry["method"], k, None)
    out[key] = (entry["final_acc_all_mean"], entry["final_acc_all_std"])
  return out


def best_eps(by_cell):
  """``{(preset, k): (eps, mean, std)}`` at the eps of highest mean."""
  best = {}
  for (curve, k, eps), (mean, std) in by_cell.items():
    if eps is None:
      continue
    if (curve, k) not in best or mean > best[(curve, k)][1]:
      best[(curve, k)] = (eps, mean, std)
  return best


def linear_fits(best, presets, ks):
  """``{preset: (slope, intercept, r2)}`` of best eps against k/10."""
  fits = {}
  for preset in presets:
    share = np.array([k / 10 for k in ks if (preset, k) in best])
    eps = np.array([best[(preset, k)][0] for k in ks if (preset, k) in best])
    if len(share) < 3:
      continue
    slope, intercept = np.polyfit(share, eps, 1)
    residual = eps - (slope * share + intercept)
    total = np.sum((eps - eps.mean())**2)
    fits[preset] = (float(slope), float(intercept),
                    float(1 - np.sum(residual**2) / total) if total else 1.0)
  return fits


def plot_accuracy(by_cell, best, presets, ks, path):
  """(a): accuracy at each preset's best eps, with joint and finetune."""
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for preset in presets:
    pts = [(k / 10, 100 * best[(preset, k)][1], 100 * best[(preset, k)][2])
           for k in ks if (preset, k) in best]
    ax.errorbar(*zip(*pts), marker="o", capsize=3, label=f"eps_kd {preset}")
  for ref, style in (("joint", "k--"), ("finetune", "k:")):
    pts = [(k / 10, 100 * by_cell[(ref, k, None)][0]) for k in ks
           if (ref, k, None) in by_cell]
    if pts:
      ax.plot(*zip(*pts), style, label=ref)
  _save(fig, ax, "accuracy on all 10 classes (%), best eps", path)


def plot_best_eps(best, presets, ks, path):
  """(b): the best eps against the share, with the auto rule."""
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for i, preset in enumerate(presets):
    # Presets often share a best eps: a small horizontal offset each keeps
    # every curve visible.
    shift = (i - (len(presets) - 1) / 2) * 0.008
    pts = [(k / 10 + shift, best[(preset, k)][0]) for k in ks
           if (preset, k) in best]
    ax.plot(*zip(*pts), marker="o", label=preset)
  ax.plot([0, 1], [0, 1], color="gray", lw=0.8, label="auto eps = k/(k+m)")
  _save(fig, ax, "best eps", path)


def table_lines(by_cell, best, presets, ks):
  """The linear fits, then every cell as mean ± std over seeds."""
  lines = ["Best eps against the share of original classes s = k/10, "
           "least squares over k:", "",
           "| preset | slope | intercept | R² | mean best eps |",
           "|---|---:|---:|---:|---:|"]
  for preset, (slope, intercept, r2) in linear_fits(best, presets,
                                                    ks).items():
    mean_best = np.mean([best[(preset, k)][0] for k in ks
                         if (preset, k) in best])
    lines.append(f"| {preset} | {slope:.2f} | {intercept:.2f} | {r2:.2f} | "
                 f"{mean_best:.2f} |")
  lines += ["", "Final accuracy on all classes (%), mean ± std over seeds:",
            ""]
  eps_values = sorted({e for (_, _, e) in by_cell if e is not None})
  lines += ["| curve | k | " + " | ".join(f"eps={e}" for e in eps_values)
            + " | best eps |", "|---|---:|" + "---:|" * (len(eps_values) + 1)]
  for curve in presets:
    for k in ks:
      row = [seeds.pct(*by_cell.get((curve, k, e), (None, None)))
             for e in eps_values]
      lines.append(f"| eps_kd {curve} | {k} | " + " | ".join(row)
                   + f" | {best[(curve, k)][0]} |")
  for ref in ("finetune", "joint"):
    for k in ks:
      if (ref, k, None) in by_cell:
        lines.append(f"| {ref} | {k} | {seeds.pct(*by_cell[(ref, k, None)])}"
                     + " |" * len(eps_values))
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    rows, missing = table.load_rows(_WORKDIR.value)
  except ValueError as e:  # not a sweep directory, or a damaged file in it
    raise app.UsageError(str(e)) from None
  by_cell = cells(rows)
  best = best_eps(by_cell)
  presets = sorted({p for p, _ in best})
  ks = sorted({k for _, k in best})
  os.makedirs(_OUT.value, exist_ok=True)
  plot_accuracy(by_cell, best, presets, ks,
                os.path.join(_OUT.value, "accuracy.png"))
  plot_best_eps(best, presets, ks, os.path.join(_OUT.value, "best_eps.png"))
  lines = table_lines(by_cell, best, presets, ks)
  if missing:
    lines += ["", f"Unfinished runs: {', '.join(missing)}"]
  with open(os.path.join(_OUT.value, "table.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


def _save(fig, ax, ylabel, path):
  ax.set_xlabel("share of original classes k/10")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
