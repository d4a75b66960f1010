"""mas: Memory Aware Synapses (Aljundi et al. 2018). Fine-tuning of all
layers plus weight * sum(Omega * (theta - theta_previous)^2), Omega the
mean absolute gradient of the squared L2 norm of the seen classes'
logits over the step's data. Stores no data."""

import jax.numpy as jnp

from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd
from cil_jax.methods.shared import penalties


def mas_output(logits, num_seen):
  """Per example: the squared L2 norm of the seen classes' logits."""
  seen = jnp.arange(logits.shape[-1]) < num_seen
  return jnp.sum(jnp.where(seen, logits, 0.0) ** 2, axis=-1)


EXAMPLE = (mas_output, jnp.abs)


def defaults():
  return penalties.weight_section(1.0)


def check(config, need, names, num_devices):
  del num_devices
  penalties.check_section(config, need, "mas", names)


def importance(ctx, t, previous, apply_fn, start_params, variables, running,
               scratch):
  del start_params, running
  return penalties.combine(
      previous, penalties.step_data_importance(EXAMPLE, ctx, t, apply_fn,
                                               variables, scratch),
      variables["params"])


METHOD = spec_lib.Spec(
    name="mas", index=8, family="regularisation",
    summary="fine-tuning + output-sensitivity penalty towards the previous "
            "model",
    from_config=penalties.from_config, objective=kd.objective,
    sections={"mas": defaults}, check=check,
    step_input=penalties.step_input, importance=importance)
