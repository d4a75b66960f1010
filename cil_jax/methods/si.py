"""si: Synaptic Intelligence (Zenke et al. 2017). Fine-tuning of all layers
plus weight * sum(Omega * (theta - theta_previous)^2), Omega the path
integral of the step's own training, omega_i = -sum_k g_i(k) * delta
theta_i(k) (g the gradient of the task loss, without the penalty),
divided by (theta_end - theta_start)^2 + damping (c and xi of the paper:
``weight`` and ``damping``). The path integral is the train state's
running state, updated by every step (``Spec.running``). Stores no data."""

import jax
import jax.numpy as jnp

from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd
from cil_jax.methods.shared import penalties


def path_integral_step(path_integral, task_grads, old_params, new_params):
  """SI's running sum after one update: omega - g * (theta_new - theta_old)."""
  return jax.tree.map(lambda w, g, old, new: w - g * (new - old),
                      path_integral, task_grads, old_params, new_params)


def si_importance(path_integral, start_params, end_params, damping):
  """omega / ((theta_end - theta_start)^2 + damping)."""
  return jax.tree.map(lambda w, s, e: w / (jnp.square(e - s) + damping),
                      path_integral, start_params, end_params)


def defaults():
  return penalties.weight_section(1.0, damping=0.1)


def check(config, need, names, num_devices):
  del num_devices
  penalties.check_section(config, need, "si", names)
  need(config.si.damping > 0,
       f"config.si.damping={config.si.damping} must be > 0: SI divides by "
       f"(parameter change)^2 + damping; use e.g. 0.1.")


def importance(ctx, t, previous, apply_fn, start_params, variables, running,
               scratch):
  del t, apply_fn, scratch
  params = variables["params"]
  return penalties.combine(
      previous, si_importance(running, start_params, params,
                              ctx.config.si.damping), params)


METHOD = spec_lib.Spec(
    name="si", index=7, family="regularisation",
    summary="fine-tuning + path-integral penalty towards the previous model",
    from_config=penalties.from_config, objective=kd.objective,
    sections={"si": defaults}, check=check,
    step_input=penalties.step_input, importance=importance,
    running=path_integral_step)
