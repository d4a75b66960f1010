"""JAX's persistent compilation cache, for reruns and sweeps.

``config.runtime.compilation_cache_dir`` names a directory where every
program this process compiles is stored and looked up, so a second process
with the same shapes (a rerun, the next run of a sweep, the test suite)
loads its train step, eval and initialisation programs instead of
compiling them. JAX caches only programs that took at least a second to
compile by default; on a CPU none of ours does, so every program is cached
here. The cache is keyed by the program, the JAX/XLA versions and the
device, so it never serves a program built for something else; deleting
the directory only costs the next run its compiles.

It must be set before the process compiles anything: ``enable`` is called
by ``train.run`` before the first program; a process that has already
compiled keeps the cache it started with.
"""

import os

import jax


def enable(directory):
  """Caches every compiled program in ``directory`` (created if needed);
  ``""`` leaves JAX's own settings (e.g. ``JAX_COMPILATION_CACHE_DIR``)."""
  if not directory:
    return
  directory = os.path.abspath(os.path.expanduser(directory))
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
