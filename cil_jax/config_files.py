"""Config files, loaded by path.

Configs are files that ``--config path.py`` names: the repository's
experiments in its top-level ``configs/``, which is not an installed
package (one named ``configs`` would collide with anything of that name on
a user's path). The defaults they build on are packaged, in
``cil_jax/configs/``, so an installed wheel has them. A config that builds
on another file loads it relative to itself, so it works from any working
directory without editing ``sys.path``::

  from cil_jax import config_files

  default = config_files.sibling(__file__, "default")
"""

import importlib.util
import os
import re

# The configs/ directory of the source checkout this package runs from; an
# installed wheel has none (its defaults are the package's cil_jax.configs).
CHECKOUT_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load(path):
  """The module of the Python config file at ``path``."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Config file {path} does not exist; give the path of a .py file "
        f"that defines get_config(), e.g. configs/default.py.")
  stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
  # Not registered in sys.modules: two files of one name never shadow each
  # other, and every load sees the file as it is now.
  spec = importlib.util.spec_from_file_location(f"cil_jax_config_{stem}",
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(file, name):
  """The config ``<name>.py`` next to ``file`` (a config's ``__file__``)."""
  return load(os.path.join(os.path.dirname(os.path.abspath(file)),
                           f"{name}.py"))


def from_checkout(name):
  """``configs/<name>.py`` of the source checkout: for tests, benchmarks
  and notebooks, which run from a clone. The package itself reads only
  ``cil_jax.configs``, so it works from an installed wheel."""
  path = os.path.join(CHECKOUT_CONFIGS, f"{name}.py")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} does not exist: configs/ ships with the repository, not "
        f"with an installed wheel; run from a clone (pip install -e .).")
  return load(path)
