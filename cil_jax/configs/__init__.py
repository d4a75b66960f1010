"""The packaged default configs, installed with the wheel: ``default`` and
``add_classes``, on which the experiments in the repository's top-level
``configs/`` build (``configs/default.py`` and ``configs/add_classes.py``
return these)."""
