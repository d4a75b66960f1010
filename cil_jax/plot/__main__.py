"""``python -m cil_jax.plot WORKDIR``: a run's or a sweep's PNGs."""

import sys

from absl import app

from cil_jax.plot import files


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(
        "Usage: python -m cil_jax.plot WORKDIR (a finished run's workdir, "
        "with results.json, or a sweep's, with sweep.json).")
  try:
    paths = files.write_plots(argv[1])
  except ValueError as e:
    print(f"cil_jax.plot: error: {e}", file=sys.stderr)
    sys.exit(1)
  for path in paths:
    print("wrote", path)


if __name__ == "__main__":
  app.run(main)
