"""agem: A-GEM (Chaudhry et al. 2019; STORES OLD DATA). Fine-tuning on the
batch alone, its gradient g projected when it would raise the memory
rows' loss, i.e. when its dot product with the memory rows' gradient
g_ref is negative: g - (g . g_ref) / (g_ref . g_ref) * g_ref (both
averaged over devices first)."""

import dataclasses

import jax
import jax.numpy as jnp

from cil_jax import losses
from cil_jax import parallel
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd
from cil_jax.methods.shared import rows


def agem_project(grads, ref_grads):
  """``grads`` unchanged when ``<grads, ref_grads> >= 0``, else with their
  component along ``ref_grads`` removed (pytrees, one dot product over
  all leaves)."""
  def dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a),
                                               jax.tree.leaves(b)))
  product = dot(grads, ref_grads)
  scale = jnp.where(product < 0,
                    product / jnp.maximum(dot(ref_grads, ref_grads), 1e-30),
                    0.0)
  return jax.tree.map(lambda g, r: g - scale * r, grads, ref_grads)


def project(inputs, grads, params):
  """The reference: the cross-entropy gradient on the memory rows (their
  BatchNorm statistics discarded)."""
  batch = inputs.batch

  def memory_loss(params):
    logits, _ = inputs.student(params, batch["replay_image"],
                               rng=jax.random.fold_in(inputs.rng, 2))
    return losses.cross_entropy(
        losses.mask_logits(logits, inputs.hparams["num_seen"]),
        batch["replay_label"])
  return agem_project(grads, parallel.pmean(jax.grad(memory_loss)(params)))


def objective(method, build):
  return dataclasses.replace(kd.objective(method, build), transform=project)


METHOD = spec_lib.Spec(
    name="agem", index=11, family="stores examples",
    summary="fine-tuning, gradient projected against the memory rows'",
    from_config=rows.from_config, objective=objective,
    sections=rows.SECTIONS, check=rows.check, check_steps=rows.check_steps,
    rows=rows.make_rows())
