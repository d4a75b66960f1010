"""Mean ± standard deviation over seeds: the one aggregator of results.

A *row* is one method of one run: the keys naming its setting (swept config
keys, a directory, the method), a ``seed``, and the final metrics of
``results.json``. Rows that agree on every key but the seed (and any other
keys the caller names) are seeds of one setting. Both ``python -m
cil_jax.sweep.aggregate`` and ``python -m cil_jax.summarize`` go through here.
"""

import collections

import numpy as np

METRICS = ("final_acc_old", "final_acc_new", "final_acc_all",
           "average_incremental_accuracy", "forgetting")
HEADERS = ("old", "new", "all", "avg. inc.", "forgetting")


def group(rows, ignore=("run", "seed")):
  """``{setting: [rows]}`` in first-seen order; a setting is the tuple of a
  row's ``(key, value)`` pairs other than its metrics and ``ignore``."""
  groups = collections.OrderedDict()
  for row in rows:
    setting = tuple((k, v) for k, v in row.items()
                    if k not in METRICS and k not in ignore)
    groups.setdefault(setting, []).append(row)
  return groups


def stats(rows):
  """``seeds`` (the row count) and ``<metric>_mean``/``<metric>_std`` of
  each metric over ``rows`` (population std; ``None`` where no row has it,
  as forgetting after a single step)."""
  out = {"seeds": len(rows)}
  for metric in METRICS:
    values = [r[metric] for r in rows if r.get(metric) is not None]
    out[f"{metric}_mean"] = float(np.mean(values)) if values else None
    out[f"{metric}_std"] = float(np.std(values)) if values else None
  return out


def summarise(rows, ignore=("run", "seed")):
  """One entry per setting: its keys, then ``stats`` of its rows."""
  return [{**dict(setting), **stats(members)}
          for setting, members in group(rows, ignore).items()]


def cells(entry):
  """The metrics of a ``summarise`` entry as ``"70.0 ± 10.0"`` (in %)."""
  return [pct(entry[f"{m}_mean"], entry[f"{m}_std"]) for m in METRICS]


def pct(mean, std):
  return "-" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"
