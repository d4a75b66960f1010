"""Figures of one run's ``results.json`` (``train.run``'s return value).

Each function takes the results and returns a matplotlib ``Figure``; a
figure with a panel per method has its panels in the order of
``results["methods"]``.
"""

from matplotlib import figure as mpl_figure
import numpy as np

_PANEL_INCHES = 3.6
_MAX_TICK_LABELS = 20  # class ids on a confusion matrix's axes, up to this
_MARKERS = ("o", "s", "^", "D", "v", "P")
_LINES = ("-", "--", ":", "-.")
_ACCURACIES = (("acc_old", "old classes"), ("acc_new", "new classes"),
               ("acc_all", "all seen classes"))


def accuracy_matrices(results):
  """A heatmap per method: test accuracy (%) on each class group (columns)
  after each step (rows); groups not yet seen are blank."""
  names = list(results["methods"])
  fig, axes = _panels(len(names))
  for ax, name in zip(axes, names):
    matrix = results["methods"][name]["accuracy_matrix"]
    steps = len(matrix)
    grid = np.full((steps, steps), np.nan)
    for t, row in enumerate(matrix):
      grid[t, :len(row)] = 100 * np.asarray(row, float)
    image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis")
    for (t, j), value in np.ndenumerate(grid):
      if not np.isnan(value):
        ax.text(j, t, f"{value:.0f}", ha="center", va="center", fontsize=8,
                color="white" if value < 60 else "black")
    ax.set_xticks(range(steps), [_group_label(g)
                                 for g in results["class_sequence"]],
                  fontsize=7)
    ax.set_yticks(range(steps), [f"step {t}" for t in range(steps)])
    ax.set_xlabel("class group")
    ax.set_title(name)
  fig.colorbar(image, ax=list(axes), label="test accuracy (%)", shrink=0.8)
  fig.suptitle("accuracy matrix: after each step (rows), per group")
  return fig


def accuracy_per_step(results):
  """Three panels (old, new, all seen classes), a line per method: test
  accuracy (%) after each step."""
  fig, axes = _panels(len(_ACCURACIES), width=4.2)
  for ax, (key, title) in zip(axes, _ACCURACIES):
    for i, (name, method) in enumerate(results["methods"].items()):
      values = [np.nan if s[key] is None else 100 * s[key]
                for s in method["steps"]]
      # Methods often coincide (LwF and finetune in class-IL): markers and
      # dashes of different sizes keep each visible.
      ax.plot(range(len(values)), values, label=name,
              marker=_MARKERS[i % len(_MARKERS)], markersize=9 - 1.5 * (i % 4),
              linestyle=_LINES[i % len(_LINES)])
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_xticks(range(len(results["class_sequence"])))
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("test accuracy (%)")
  axes[-1].legend(fontsize=8)
  return fig


def has_confusion(results):
  """Whether every method's final step recorded its confusion matrix (runs
  before cil_jax recorded it did not)."""
  return all("confusion" in m["steps"][-1]
             for m in results["methods"].values())


def confusion_matrices(results):
  """A heatmap per method of its final model: the share (%) of each true
  class's test examples (rows) predicted as each class (columns), classes
  in the run's class order."""
  names = list(results["methods"])
  order = [c for group in results["class_sequence"] for c in group]
  fig, axes = _panels(len(names))
  for ax, name in zip(axes, names):
    counts = np.asarray(results["methods"][name]["steps"][-1]["confusion"],
                        float)
    rows = counts.sum(axis=1, keepdims=True)
    share = 100 * counts / np.maximum(rows, 1)
    image = ax.imshow(share, vmin=0, vmax=100, cmap="Blues")
    n = len(share)
    if n <= _MAX_TICK_LABELS:
      labels = [str(c) for c in order[:n]]
      ax.set_xticks(range(n), labels, fontsize=7)
      ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{name}: all {100 * results['methods'][name]['final_acc_all']:.1f}%")
  fig.colorbar(image, ax=list(axes), label="share of the true class (%)",
               shrink=0.8)
  fig.suptitle("confusion matrix of the final model")
  return fig


def _panels(count, width=_PANEL_INCHES):
  # A Figure outside pyplot: no backend chosen, nothing to close.
  fig = mpl_figure.Figure(figsize=(width * count + 1.2, _PANEL_INCHES + 0.6),
                          layout="constrained")
  axes = fig.subplots(1, count, squeeze=False)[0]
  return fig, list(axes)


def _group_label(group):
  if len(group) <= 3:
    return ",".join(str(c) for c in group)
  if list(group) == list(range(group[0], group[0] + len(group))):
    return f"{group[0]}-{group[-1]}"
  return f"{len(group)} classes"
