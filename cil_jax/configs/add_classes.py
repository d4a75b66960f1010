"""Add classes to a classifier someone else trained, without its data.

  python -m cil_jax.main --config configs/add_classes.py --workdir DIR \
      --config.teacher.checkpoint=PATH --config.classes.groups="((8, 9),)"

PATH is a cil_jax classifier (one orbax checkpoint: ``variables/`` and
``metadata/metadata``);
every finished step of a run writes one, e.g.
``<workdir>/base/step_0/classifier``. The teacher's classes come from its
metadata; ``classes.groups`` lists only the new groups. ``config.model``
must describe the teacher's architecture. ``configs/add_classes.py`` of the
repository returns this config.

The method is ``df_replay``, the data-free recipe (docs/data_free.md): it
picks its knobs from the classifier and the step and logs them (BatchNorm
statistics frozen or trained by the share of new classes, a foreign
module run in its inference mode when they are frozen, eps = k/(k+m),
synthesis started from the new classes' images, with the BatchNorm prior
where the teacher has one).
"""

from cil_jax.configs import default


def get_config():
  config = default.get_config()
  config.teacher.checkpoint = ""  # required: --config.teacher.checkpoint=PATH
  config.classes.groups = ((5, 6, 7, 8, 9),)
  config.methods = "df_replay"
  return config
