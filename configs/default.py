"""Default experiment: digits 0-4, then 5-9 added without the old data.

Runs offline on scikit-learn's embedded digits (1,797 real 8x8 images).
  python -m cil_jax.main --config configs/default.py --workdir /tmp/cil

Its values live in the package (cil_jax/configs/default.py), so that an
installed wheel has them too; this file keeps the path that the configs
built on it and the tests name.
"""

from cil_jax.configs import default


def get_config():
  return default.get_config()
