"""Where a process's wall time goes: train steps, compiles, evaluation.

A process-wide tally, filled by ``fit`` (train epochs, and each loop's first
step, which holds its compile) and ``class_step`` (evaluation), read by
``main`` at exit to report the share of wall time spent outside the train
and eval steps (start-up, data preparation, compiles, checkpoints, logging).
"""

import time

_START = time.perf_counter()  # main imports this first, before JAX and TF
_TOTALS = {}


def add(bucket, seconds):
  _TOTALS[bucket] = _TOTALS.get(bucket, 0.0) + seconds


def budget():
  """``{"wall_seconds", <bucket>_seconds..., "outside_steps_fraction"}``."""
  wall = time.perf_counter() - _START
  report = {"wall_seconds": round(wall, 2)}
  report.update({f"{k}_seconds": round(v, 2) for k, v in _TOTALS.items()})
  inside = _TOTALS.get("train_steps", 0.0) + _TOTALS.get("eval", 0.0)
  report["outside_steps_fraction"] = round(1 - inside / wall, 4)
  return report


def describe(report):
  parts = ", ".join(f"{k[:-len('_seconds')].replace('_', ' ')} {v:.1f} s"
                    for k, v in report.items()
                    if k.endswith("_seconds") and k != "wall_seconds")
  return (f"time: {report['wall_seconds']:.1f} s wall; {parts}; "
          f"{100 * report['outside_steps_fraction']:.0f}% outside the train "
          f"and eval steps (start-up, data, compiles, checkpoints, logging)")
