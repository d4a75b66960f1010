"""Sweeps: grids of config overrides, run as many ``cil_jax.main`` processes.

  python -m cil_jax.sweep --config configs/x.py --workdir DIR
  python -m cil_jax.sweep.aggregate --workdir DIR

Modules, by job: ``grid`` (the grid a config's ``get_sweep()`` builds; the
only one configs import), ``runs`` (a config file's runs by name, and their
commands), ``tasks`` (runs grouped into tasks, and executing one),
``backends`` (worker environments, the local pool, Ray), ``record`` (the
sweep directory's own files), ``seeds`` (mean ± std over seeds), ``table``
(rows, tables and plots of results), ``aggregate`` and ``__main__`` (the
command lines). Importing this package defines no flags.
"""
