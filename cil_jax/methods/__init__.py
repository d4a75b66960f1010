"""The methods, one module each, found by listing this folder.

Every module here but ``spec`` defines ``METHOD``, a ``spec.Spec``: its
config sections and their validation, how its knobs become a
``spec.Method``, its train step's objective and its hooks around a class
step (``spec.Spec`` lists them). ``shared/`` holds the terms several
methods use (tempered KD, exemplar rows, penalties). Adding a method is
adding a module here, with a new ``index``.
"""

import dataclasses
import functools
import importlib
import pkgutil

from cil_jax.methods import spec as spec_lib
from cil_jax.methods.spec import Method  # noqa: F401  (the type callers name)


@functools.lru_cache(maxsize=None)
def registry():
  """``{name: Spec}`` of every method module, in ``index`` order."""
  specs = []
  for info in pkgutil.iter_modules(__path__):
    if info.ispkg or info.name == "spec":
      continue
    module = importlib.import_module(f"{__name__}.{info.name}")
    specs.append(module.METHOD)
  specs.sort(key=lambda s: s.index)
  indices = [s.index for s in specs]
  if len(set(indices)) != len(indices):
    raise RuntimeError(f"Two method modules share an index: "
                       f"{[(s.name, s.index) for s in specs]}.")
  return {s.name: s for s in specs}


def names():
  """The methods ``config.methods`` may list, in index order."""
  return tuple(n for n, s in registry().items() if s.public)


def get(name):
  """The ``Spec`` registered as ``name``."""
  return registry()[name]


def method_names(methods_string):
  listed = [m.strip() for m in methods_string.split(",") if m.strip()]
  if not listed:
    raise ValueError(f"config.methods is empty; list some of {names()}, "
                     f"comma-separated.")
  for name in listed:
    if name not in names():
      raise ValueError(f"Unknown method {name!r} in config.methods; choose "
                       f"from {names()}.")
  if len(set(listed)) != len(listed):
    raise ValueError(f"config.methods lists a method twice: {methods_string!r}.")
  return listed


def get_method(name, config):
  """The ``Method`` of ``name`` with its knobs from ``config``."""
  if name not in names():
    raise ValueError(f"Unknown method {name!r}; choose from {names()}.")
  method_spec = get(name)
  return method_spec.from_config(method_spec, config)


def sections():
  """``{config key: defaults()}`` of every section a method owns or
  shares, in index order (``cil_jax.configs.default`` adds them)."""
  out = {}
  for method_spec in registry().values():
    for key, defaults in method_spec.sections.items():
      out.setdefault(key, defaults)
  return out


def check(config, need, num_devices):
  """Every method's validation of its sections (``config_check``)."""
  listed = method_names(config.methods)
  for name in listed:
    get_method(name, config)  # parses eps
  for method_spec in registry().values():
    if method_spec.check is not None:
      method_spec.check(config, need, listed, num_devices)


def member_sections():
  """Sections whose keys runs of one group may differ in
  (``overrides.is_member_key``)."""
  return tuple(n for n, s in registry().items() if s.member_section)


def at_step(method, num_old, num_new):
  """``method`` with its per-step choices resolved for a step adding
  ``num_new`` classes to ``num_old``."""
  return dataclasses.replace(method, batch_stats=spec_lib.batch_stats_for(
      method.batch_stats, num_old, num_new))


def base_for(all_methods):
  """C_A's method: plain cross-entropy on the first group, leaving the
  anchor and importance of every regulariser among ``all_methods``, and
  an exemplar memory if one of them keeps one."""
  kinds = sorted({kind for m in all_methods for kind in m.consolidate})
  return dataclasses.replace(get_base(), consolidate=tuple(kinds),
                             memory=any(m.memory for m in all_methods))


def get_base():
  base = get("base")
  return base.from_config(base, None)
