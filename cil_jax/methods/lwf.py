"""lwf: Learning without Forgetting (Li & Hoiem 2016) as a reference: LwF's
renormalised KD at T=2 with equal weight on CE and KD, all layers, no
stored data. No knobs of its own."""

from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd


def from_config(spec, config):
  del config
  return spec_lib.Method(spec, 0.5, "renormalized", 2.0, False)


METHOD = spec_lib.Spec(
    name="lwf", index=1, family="data-free",
    summary="LwF: CE + renormalised KD at T=2, equal weights",
    from_config=from_config, objective=kd.objective)
