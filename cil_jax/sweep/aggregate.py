"""A sweep's workdir into tables and plots.

  python -m cil_jax.sweep.aggregate --workdir DIR

DIR is a directory written by ``python -m cil_jax.sweep``. Writes
``DIR/runs.csv`` (one row per run and method), ``DIR/summary.csv`` and
``DIR/summary.md`` (mean and standard deviation over seeds of every other
setting) and ``DIR/plots/<key>.png`` (final accuracy on all classes against
each numeric swept key, one line per method and setting of the other keys,
mean ± std over seeds), and with an eps grid ``DIR/plots/eps_by_preset.png``
(``cil_jax.plot``). Unfinished runs are listed, not guessed.
"""

import os

from absl import app
from absl import flags

from cil_jax import plot
from cil_jax.plot import sweep_figures
from cil_jax.sweep import seeds
from cil_jax.sweep import table

_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sweep_dir = _WORKDIR.value
  try:
    rows, missing = table.load_rows(sweep_dir)
  except ValueError as e:  # not a sweep directory, or a damaged file in it
    raise app.UsageError(str(e)) from None
  if not rows:
    raise SystemExit(f"No finished run in {sweep_dir} ({len(missing)} "
                     f"listed in its sweep.json); run or finish the sweep "
                     f"with python -m cil_jax.sweep first.")
  summary = seeds.summarise(rows)
  table.write_csv(os.path.join(sweep_dir, "runs.csv"), rows)
  table.write_csv(os.path.join(sweep_dir, "summary.csv"), summary)
  text = table.markdown(summary, missing)
  with open(os.path.join(sweep_dir, "summary.md"), "w") as f:
    f.write(text)
  print(text)
  paths = table.plot(summary, os.path.join(sweep_dir, "plots"))
  if sweep_figures.eps_rows(rows):
    paths += plot.write_sweep_plots(sweep_dir)
  for path in paths:
    print("wrote", path)


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
