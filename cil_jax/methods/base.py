"""base: the classifier C_A of step 0, plain cross-entropy on the first
group, shared by every method of a run (``methods.base_for`` adds what
the run's methods need it to leave: importances, an exemplar memory).
Not listed in ``config.methods``. Its index, 5, is the one it had before
the regularisation methods came, so C_A's data order and noise are
unchanged."""

import dataclasses

from cil_jax.methods import finetune

METHOD = dataclasses.replace(
    finetune.METHOD, name="base", index=5,
    summary="the first group's classifier, cross-entropy", public=False)
