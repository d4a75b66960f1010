"""ewc: Elastic Weight Consolidation (Kirkpatrick et al. 2017). Fine-tuning
of all layers plus weight * sum(F * (theta - theta_previous)^2), F the
diagonal Fisher of the model after each step, from that step's data (the
predicted label, as in van de Ven & Tolias 2019). Our weight is the
paper's lambda / 2. ``online``: one running Fisher, decayed by ``decay``
(gamma) each step, anchored at the latest model; else a penalty per
earlier model, summed exactly (``penalties.combine``). Stores no data."""

import jax
import jax.numpy as jnp
import optax

from cil_jax import losses
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd
from cil_jax.methods.shared import penalties


def fisher_output(logits, num_seen):
  """Per example: the log-likelihood of the model's own prediction among
  the seen classes (its squared gradient, averaged, is the diagonal
  Fisher)."""
  logits = losses.mask_logits(logits, num_seen)
  predicted = jax.lax.stop_gradient(jnp.argmax(logits, axis=-1))
  return -optax.softmax_cross_entropy_with_integer_labels(logits, predicted)


EXAMPLE = (fisher_output, jnp.square)


def defaults():
  return penalties.weight_section(5000.0, online=False,
                                  decay=1.0)  # decay: online only, (0, 1]


def check(config, need, names, num_devices):
  del num_devices
  penalties.check_section(config, need, "ewc", names)
  need(0.0 < config.ewc.decay <= 1.0,
       f"config.ewc.decay={config.ewc.decay} must be in (0, 1]: online EWC "
       f"multiplies the running Fisher by it each step; use e.g. 0.9, or 1 "
       f"to keep it whole.")


def importance(ctx, t, previous, apply_fn, start_params, variables, running,
               scratch):
  del start_params, running
  online = ctx.config.ewc.online
  return penalties.combine(
      previous, penalties.step_data_importance(EXAMPLE, ctx, t, apply_fn,
                                               variables, scratch),
      variables["params"], decay=ctx.config.ewc.decay if online else 1.0,
      merge_anchors=not online)


METHOD = spec_lib.Spec(
    name="ewc", index=6, family="regularisation",
    summary="fine-tuning + Fisher-weighted penalty towards the previous model",
    from_config=penalties.from_config, objective=kd.objective,
    sections={"ewc": defaults}, check=check,
    step_input=penalties.step_input, importance=importance)
