"""Benchmarks of the eps-KD train step (a 5-class teacher, its 10-class
student, Adam, global batch 128): compile time, steady-state throughput,
sweep members in one program against one run after another, input pipeline
overhead, and one against all local devices.

  python -m cil_jax.bench --out bench.json [--quick] [--models mlp,cnn]
      [--steps N]

For the device comparison on a CPU, fake devices must be asked for before
JAX starts: XLA_FLAGS=--xla_force_host_platform_device_count=8.

Modules, by job: ``settings`` (steps, sweep size and models of a run),
``setup`` (what is trained: models, optimizer, step, random data staged on
the devices), ``measure`` (the timed measurements), ``report`` (the
printed tables) and ``__main__`` (flags, and the results JSON); ``e2e``,
on its own, times whole ``cil_jax.main`` processes from outside
(``python -m cil_jax.bench.e2e``). Importing this package defines no flags.
"""
