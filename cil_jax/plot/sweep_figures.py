"""Figures of a sweep's results (rows of ``cil_jax.sweep.table.load_rows``:
one per run and method, its overrides and final metrics)."""

import collections
import json

from matplotlib import figure as mpl_figure
import numpy as np

from cil_jax.sweep import seeds

METRIC = "final_acc_all"
_NOT_SWEPT = "as configured"
_MAX_CURVES = 8  # per panel; more are unreadable
# Keys that are not a curve's setting: the x axis, the panel, the seed.
_NOT_SETTING = {"run", "seed", "method", "methods", "eps_kd.eps",
                "eps_kd.layers", *seeds.METRICS}
_REFERENCE_STYLES = ("--", ":", "-.")


def eps_rows(rows):
  """The eps-KD rows whose ``eps_kd.eps`` is a number (``auto`` is not)."""
  return [r for r in rows
          if r["method"] == "eps_kd" and _number(r.get("eps_kd.eps"))
          is not None and r.get(METRIC) is not None]


def eps_by_preset(rows):
  """A panel per layer preset: final accuracy on all classes (%) against
  eps, a curve per setting of the other swept keys (mean over seeds, a band
  of ± one std, every seed's point), and the reference methods of the same
  setting (finetune, joint, ...) as horizontal lines."""
  points = eps_rows(rows)
  presets = list(dict.fromkeys(r.get("eps_kd.layers", _NOT_SWEPT)
                               for r in points))
  references = _references(rows)
  fig = mpl_figure.Figure(figsize=(4.2 * len(presets) + 1.5, 4.2),
                          layout="constrained")
  axes = fig.subplots(1, len(presets), squeeze=False, sharey=True)[0]
  for ax, preset in zip(axes, presets):
    curves = collections.OrderedDict()
    for r in points:
      if r.get("eps_kd.layers", _NOT_SWEPT) == preset:
        curves.setdefault(_setting(r), []).append(r)
    for i, (setting, curve_rows) in enumerate(
        list(curves.items())[:_MAX_CURVES]):
      color = f"C{i}"
      by_eps = collections.defaultdict(list)
      for r in curve_rows:
        by_eps[_number(r["eps_kd.eps"])].append(100 * r[METRIC])
      eps = sorted(by_eps)
      mean = np.array([np.mean(by_eps[e]) for e in eps])
      std = np.array([np.std(by_eps[e]) for e in eps])
      ax.plot(eps, mean, marker="o", color=color,
              label=_label(setting) or "eps_kd")
      ax.fill_between(eps, mean - std, mean + std, color=color, alpha=0.2)
      for e in eps:
        ax.scatter([e] * len(by_eps[e]), by_eps[e], s=8, color=color,
                   alpha=0.5)
      for j, (method, value) in enumerate(
          sorted(references.get(_reference_setting(setting), {}).items())):
        ax.axhline(value, color=color, lw=1,
                   ls=_REFERENCE_STYLES[j % len(_REFERENCE_STYLES)],
                   label=f"{method} {_label(setting)}".strip())
    title = f"layers = {preset}"
    if len(curves) > _MAX_CURVES:
      title += f" (first {_MAX_CURVES} of {len(curves)} settings)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("eps (weight of KD)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
  axes[0].set_ylabel("final accuracy, all classes (%)")
  seeds_per_point = max(len(v) for v in seeds.group(points).values())
  fig.suptitle(f"accuracy against eps per layer preset (mean ± std over "
               f"up to {seeds_per_point} seed(s); dots: single seeds)")
  return fig


def _references(rows):
  """``{setting: {method: mean final accuracy (%) over seeds}}`` of the
  runs of methods other than eps_kd."""
  values = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in rows:
    if r["method"] != "eps_kd" and r.get(METRIC) is not None:
      values[_reference_setting(_setting(r))][r["method"]].append(
          100 * r[METRIC])
  return {s: {m: float(np.mean(v)) for m, v in by_method.items()}
          for s, by_method in values.items()}


def _setting(row):
  return tuple((k, v) for k, v in row.items() if k not in _NOT_SETTING)


def _reference_setting(setting):
  """What a reference run shares with a curve: its keys but eps_kd.*."""
  return tuple((k, v) for k, v in setting if not k.startswith("eps_kd."))


def _label(setting):
  return ", ".join(f"{_short(k)}={_value(k, v)}" for k, v in setting)


def _short(key):
  return "groups" if key == "classes.groups" else key


def _value(key, value):
  if key == "classes.groups":  # class ids per step, as group sizes
    try:
      return "+".join(str(len(g)) for g in json.loads(value))
    except (TypeError, ValueError):
      pass
  return value


def _number(value):
  try:
    return None if isinstance(value, bool) else float(value)
  except (TypeError, ValueError):
    return None
