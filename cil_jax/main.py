"""Entry point: ``python -m cil_jax.main --config configs/default.py --workdir DIR``.

Flags only; everything else is ``train.run``. Override any config value with
``--config.key=value`` (e.g. ``--config.eps_kd.eps=0.3``). Without
``--config`` it runs the packaged default, ``cil_jax/configs/default.py``,
so an installed wheel runs with no checkout.

A group of runs that differ only in member keys (``methods`` and the
sections methods mark as theirs alone, e.g. ``eps_kd.*``, ``df_replay.*``;
``overrides.is_member_key``) runs in one process with ``--members FILE`` instead of
``--workdir``: FILE is JSON
``{workdir: {"eps_kd.eps": "0.3", ...}}``, each workdir getting the config
with its overrides (``python -m cil_jax.sweep`` writes these files).
"""

# Imported first: its clock starts before JAX and TensorFlow load.
from cil_jax import timer  # pylint: disable=g-bad-import-order

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import cil_jax.configs
from cil_jax import jsonio
from cil_jax import train

# The packaged default's file, so --config may be left out (an installed
# wheel has no configs/) and --config.key=value overrides it as any file.
DEFAULT_CONFIG = os.path.join(os.path.dirname(cil_jax.configs.__file__),
                              "default.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Experiment config file (configs/*.py); "
    "omitted: the packaged default.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints and results; rerunning the "
    "same config there resumes it.")
_MEMBERS = flags.DEFINE_string(
    "members", None, "JSON file {workdir: overrides} of a group of runs "
    "differing only in member keys (methods, eps_kd.*, df_replay.*); "
    "replaces "
    "--workdir.")
_MEMBER_MODE = flags.DEFINE_enum(
    "member_mode", "auto", ["auto", "vmap", "serial"],
    "--members: vmap members in one program, train them in turn (serial), "
    "or auto (vmap on accelerators, serial on CPU).")
flags.register_multi_flags_validator(
    ["workdir", "members"], lambda f: (f["workdir"] is None) != (
        f["members"] is None), "Give exactly one of --workdir and --members.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Orbax logs every save at INFO; progress lines are printed instead.
  logging.set_verbosity(logging.WARNING)
  timer.add("imports", timer.since_start())
  timer.track_compiles()
  try:
    if _WORKDIR.value is not None:
      train.run(_CONFIG.value, _WORKDIR.value)
    else:
      members = jsonio.read_json(_MEMBERS.value, fix="it is written by "
                                 "python -m cil_jax.sweep; write it again")
      vmap = {"auto": None, "vmap": True, "serial": False}[_MEMBER_MODE.value]
      train.run_members(
          _CONFIG.value, members, vmap=vmap,
          timing_path=os.path.splitext(_MEMBERS.value)[0] + ".timing.json")
  except train.USER_ERRORS as e:
    # A mistake in the input, named by its message: no traceback.
    print(f"cil_jax: error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  # Everything is written and closed (results, classifiers, checkpoint
  # managers, TensorBoard files): skip the interpreter's teardown of JAX's
  # backend and loaded modules, about 0.3 s of a 10 s run on a CPU.
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
  app.run(main)
