"""Session setup, before anything imports jax: 8 fake CPU devices, and one
persistent compilation cache for the whole session.

Many tests (and the CLI subprocesses they start, which inherit the
environment) compile the same programs: the digits default's steps, its
init, its evaluation. JAX's persistent cache, keyed by the program, the
XLA flags and the devices, serves each one compiled earlier in the session
instead of compiling it again: 351 tests took 7 min 55 s with it against
9 min 41 s without on a 2-core CPU, every result the same (an executable is
a function of its program). The cache is a fresh temporary directory,
removed at the end, so every session starts cold, as CI does; a
``JAX_COMPILATION_CACHE_DIR`` set by the caller is used as given (and
kept). Tests that check a cache of their own (``test_resume.py``) set it
in their config, which takes precedence (``cil_jax.compile_cache``).
"""

import os
import shutil
import tempfile

_FLAGS = "--xla_force_host_platform_device_count=8"
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), _FLAGS) if f)

_SESSION_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _SESSION_CACHE = tempfile.mkdtemp(prefix="cil_jax_tests_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
# Every program, however quick to compile or small: ours take well under
# JAX's default threshold of a second each on a CPU.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _SESSION_CACHE:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
