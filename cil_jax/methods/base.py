"""base: the classifier C_A of step 0, plain cross-entropy on the first
group, shared by every method of a run (``methods.base_for`` adds what
the run's methods need it to leave: importances, an exemplar memory).
Not listed in ``config.methods``. Its index, 5, is the one it had before
the regularisation methods came, so C_A's data order and noise are
unchanged."""

from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd


def from_config(spec, config):
  del config
  return spec_lib.Method(spec, 0.0)


METHOD = spec_lib.Spec(
    name="base", index=5, family="reference",
    summary="the first group's classifier, cross-entropy",
    from_config=from_config, objective=kd.objective, public=False)
