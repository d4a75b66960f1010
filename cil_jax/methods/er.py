"""er: experience replay (STORES OLD DATA). Fine-tuning of all layers with
cross-entropy over every seen class on each batch and as many exemplar
memory rows, in one pass."""

import jax.numpy as jnp

from cil_jax import losses
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import rows


def objective(method, build):
  del method, build

  def loss(inputs, params):
    count, _, seen_logits, labels, updates = rows.joint_forward(inputs,
                                                                params)
    total = losses.cross_entropy(seen_logits, labels)
    return total, (seen_logits[:count], updates.get("batch_stats", {}),
                   total, jnp.zeros(()))
  return spec_lib.Objective(loss)


METHOD = spec_lib.Spec(
    name="er", index=9, family="stores examples",
    summary="cross-entropy on the batch and exemplar memory rows",
    from_config=rows.from_config, objective=objective,
    sections=rows.SECTIONS, check=rows.check, check_steps=rows.check_steps,
    rows=rows.make_rows())
