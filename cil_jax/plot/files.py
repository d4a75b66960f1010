"""Which figures a workdir gets, written as PNGs into ``WORKDIR/plots/``."""

import os

from cil_jax import jsonio
from cil_jax.plot import run_figures
from cil_jax.plot import sweep_figures
from cil_jax.sweep import record
from cil_jax.sweep import table

PLOT_DIR = "plots"
RESULTS_FILE = "results.json"  # what cil_jax.train writes last
_DPI = 110


def write_plots(workdir):
  """A run's or a sweep's plots (by the file the workdir holds); returns
  the paths written."""
  if os.path.isfile(os.path.join(workdir, RESULTS_FILE)):
    return write_run_plots(workdir)
  if os.path.isfile(os.path.join(workdir, record.SWEEP_FILE)):
    return write_sweep_plots(workdir)
  state = ("does not exist" if not os.path.exists(workdir) else
           f"has neither {RESULTS_FILE} nor {record.SWEEP_FILE}")
  raise ValueError(
      f"{workdir} {state}: give the workdir of a finished run (python -m "
      f"cil_jax.main writes {RESULTS_FILE} last; rerun its command to finish "
      f"it) or of a sweep (python -m cil_jax.sweep writes "
      f"{record.SWEEP_FILE}).")


def write_run_plots(workdir, results=None):
  """``accuracy_matrix.png``, ``accuracy_per_step.png`` and, where the run
  recorded them, ``confusion.png`` of the run in ``workdir``."""
  if results is None:
    results = jsonio.read_json(
        os.path.join(workdir, RESULTS_FILE),
        fix="delete it and rerun the run's command to rebuild it from the "
        "finished steps")
  figures = {"accuracy_matrix": run_figures.accuracy_matrices(results),
             "accuracy_per_step": run_figures.accuracy_per_step(results)}
  if run_figures.has_confusion(results):
    figures["confusion"] = run_figures.confusion_matrices(results)
  else:
    print(f"{workdir}: no confusion matrix in its {RESULTS_FILE} (written "
          f"before cil_jax recorded them); a run in a new workdir has one.",
          flush=True)
  return _save(workdir, figures)


def write_sweep_plots(sweep_dir):
  """``eps_by_preset.png`` of the sweep in ``sweep_dir``."""
  rows, missing = table.load_rows(sweep_dir)
  if not sweep_figures.eps_rows(rows):
    raise ValueError(
        f"{sweep_dir} has no finished eps_kd run with a numeric "
        f"eps_kd.eps ({len(rows)} finished run-methods, {len(missing)} "
        f"unfinished runs): accuracy against eps needs a sweep over "
        f"eps_kd.eps (as configs/taitelbaum_sweep.py's get_sweep()); finish "
        f"the sweep with python -m cil_jax.sweep first.")
  return _save(sweep_dir, {"eps_by_preset": sweep_figures.eps_by_preset(rows)})


def _save(workdir, figures):
  plot_dir = os.path.join(workdir, PLOT_DIR)
  os.makedirs(plot_dir, exist_ok=True)
  paths = []
  for name, fig in figures.items():
    path = os.path.join(plot_dir, f"{name}.png")
    fig.savefig(path, dpi=_DPI)
    paths.append(path)
  return paths
