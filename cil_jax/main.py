"""Entry point: ``python -m cil_jax.main --config configs/default.py --workdir DIR``.

Flags only; everything else is ``train.run``. Override any config value with
``--config.key=value`` (e.g. ``--config.eps_kd.eps=0.3``).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cil_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints and results; rerunning the "
    "same config there resumes it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Orbax logs every save at INFO; progress lines are printed instead.
  logging.set_verbosity(logging.WARNING)
  train.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
