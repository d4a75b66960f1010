"""Add classes to a classifier someone else trained, without its data.

  python -m cil_jax.main --config configs/add_classes.py --workdir DIR \
      --config.teacher.checkpoint=PATH --config.classes.groups="((8, 9),)"

Its values and their meaning live in the package
(cil_jax/configs/add_classes.py), so that an installed wheel has them too
(``cil_jax.api.add_classes`` builds on them); this file keeps the path.
"""

from cil_jax.configs import add_classes


def get_config():
  return add_classes.get_config()
