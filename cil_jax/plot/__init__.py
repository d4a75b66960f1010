"""Plots of a finished run or a sweep, read from their JSON files only.

  python -m cil_jax.plot WORKDIR

writes PNGs into ``WORKDIR/plots/`` (nothing is rerun):

- a run's workdir (``results.json``): ``accuracy_matrix.png`` (a heatmap
  per method), ``accuracy_per_step.png`` (old, new and all classes' test
  accuracy after each step, a line per method) and ``confusion.png`` (the
  final model's confusion matrix per method);
- a sweep's workdir (``sweep.json``): ``eps_by_preset.png``, final accuracy
  on all classes against eps, a panel per layer preset, mean over seeds
  with every seed's point.

From Python: ``write_plots(workdir)``, or the figure functions of
``cil_jax.plot.run_figures`` and ``cil_jax.plot.sweep_figures``.
"""

from cil_jax.plot.files import write_plots
from cil_jax.plot.files import write_run_plots
from cil_jax.plot.files import write_sweep_plots

__all__ = ["write_plots", "write_run_plots", "write_sweep_plots"]
