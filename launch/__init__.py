"""Sweeps over cil_jax configs: grids, a launcher, aggregation."""
