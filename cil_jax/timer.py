"""Where a process's wall time goes: imports, data, compiles, steps, eval,
checkpoints.

A process-wide tally of named buckets (``add`` or ``with section(...)``):
``imports`` (``main``, before the run starts), ``train_data``, ``setup``
(models, optimizer, members), ``compiles`` (every program JAX traces,
lowers and compiles, from its own monitoring events), ``train_steps``
(without the compiles they triggered), ``eval``, ``teacher_logits``,
``checkpoints`` (training state), ``classifier_saves`` (and the
regularisation methods' saved importance), ``importance`` (computing it),
``plots`` and ``tensorboard`` (writing event files). ``budget`` reports
them with the share of wall time spent outside the train and eval steps,
and, with a persistent compilation cache, how many programs it served.
Buckets may overlap where one section holds another's work (a compile
inside ``setup`` counts in both).
"""

import contextlib
import time

_START = time.perf_counter()  # main imports this first, before JAX and TF
_TOTALS = {}
# JAX's monitoring events of making a program: tracing, lowering, compiling.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


# JAX's events of its persistent compilation cache (``compile_cache``):
# a program looked up there, and found.
_CACHE_EVENTS = {"/jax/compilation_cache/compile_requests_use_cache":
                 "compilation_cache_requests",
                 "/jax/compilation_cache/cache_hits": "compilation_cache_hits"}
_COUNTS = {}


def _on_event(event, duration, **kwargs):
  del kwargs
  if event in _COMPILE_EVENTS:
    add("compiles", duration)


def _on_count(event, **kwargs):
  del kwargs
  if event in _CACHE_EVENTS:
    _COUNTS[_CACHE_EVENTS[event]] = _COUNTS.get(_CACHE_EVENTS[event], 0) + 1


def track_compiles():
  """Counts JAX's compile events into ``compiles`` from now on (``main``
  calls it once; JAX is imported here, after the clock started)."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.monitoring.register_event_duration_secs_listener(_on_event)
  jax.monitoring.register_event_listener(_on_count)


def add(bucket, seconds):
  _TOTALS[bucket] = _TOTALS.get(bucket, 0.0) + seconds


@contextlib.contextmanager
def section(bucket):
  """Adds the wall time of the ``with`` body to ``bucket``."""
  start = time.perf_counter()
  try:
    yield
  finally:
    add(bucket, time.perf_counter() - start)


def total(bucket):
  return _TOTALS.get(bucket, 0.0)


def since_start():
  """Seconds since this module was imported (``main`` imports it first)."""
  return time.perf_counter() - _START


def budget():
  """``{"wall_seconds", <bucket>_seconds..., "outside_steps_fraction"}``."""
  wall = time.perf_counter() - _START
  report = {"wall_seconds": round(wall, 2)}
  report.update({f"{k}_seconds": round(v, 2) for k, v in _TOTALS.items()})
  inside = _TOTALS.get("train_steps", 0.0) + _TOTALS.get("eval", 0.0)
  report["outside_steps_fraction"] = round(1 - inside / wall, 4)
  if _COUNTS and _cache_dir():  # JAX counts requests without a cache too
    report["compilation_cache_requests"] = _COUNTS.get(
        "compilation_cache_requests", 0)
    report["compilation_cache_hits"] = _COUNTS.get("compilation_cache_hits",
                                                   0)
  return report


def _cache_dir():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.config.jax_compilation_cache_dir


def describe(report):
  parts = ", ".join(f"{k[:-len('_seconds')].replace('_', ' ')} {v:.1f} s"
                    for k, v in report.items()
                    if k.endswith("_seconds") and k != "wall_seconds")
  cache = (f"; compilation cache: {report['compilation_cache_hits']} of "
           f"{report['compilation_cache_requests']} programs loaded"
           if "compilation_cache_requests" in report else "")
  return (f"time: {report['wall_seconds']:.1f} s wall; {parts}; "
          f"{100 * report['outside_steps_fraction']:.0f}% outside the train "
          f"and eval steps (start-up, data, compiles, checkpoints, logging)"
          f"{cache}")
