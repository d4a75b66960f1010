"""icarl: iCaRL (Rebuffi et al. 2017; STORES OLD DATA). Binary
cross-entropy per seen class (sigmoid outputs) on each batch and memory
rows, the old classes' targets the previous model's sigmoid outputs
(distillation), the new ones' the one-hot label; prediction by the
nearest mean of exemplars (NME), the head's own accuracy kept beside."""

import jax
import jax.numpy as jnp
import optax

from cil_jax.memory import exemplars
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import rows


def icarl_targets(teacher_logits, labels, num_old, num_seen):
  """``[rows, classes]`` targets: sigmoid of the previous model's logits
  for the first ``num_old`` classes, the one-hot ``labels`` for the
  classes ``num_old`` to ``num_seen``, 0 past them (masked anyway)."""
  position = jnp.arange(teacher_logits.shape[-1])
  one_hot = jax.nn.one_hot(labels, teacher_logits.shape[-1])
  targets = jnp.where(position < num_old, jax.nn.sigmoid(teacher_logits),
                      one_hot)
  return jnp.where(position < num_seen, targets, 0.0)


def sigmoid_distillation(logits, targets, num_seen):
  """Mean over rows of the binary cross-entropy summed over the first
  ``num_seen`` classes."""
  seen = jnp.arange(logits.shape[-1]) < num_seen
  per_class = optax.sigmoid_binary_cross_entropy(logits, targets)
  return jnp.mean(jnp.sum(jnp.where(seen, per_class, 0.0), axis=-1))


def objective(method, build):
  del method, build

  def loss(inputs, params):
    count, all_logits, seen_logits, labels, updates = rows.joint_forward(
        inputs, params)
    hparams = inputs.hparams
    targets = icarl_targets(
        jnp.concatenate([inputs.teacher_logits,
                         inputs.batch["replay_logits"]]),
        labels, hparams["num_old"], hparams["num_seen"])
    total = sigmoid_distillation(all_logits, targets, hparams["num_seen"])
    return total, (seen_logits[:count], updates.get("batch_stats", {}),
                   total, jnp.zeros(()))
  return spec_lib.Objective(loss)


def classify(ctx, t, variables, models, memory):
  """The nearest mean of exemplars under ``variables``: its metrics
  replace the head's, which are kept as ``logits_*``."""
  return {**ctx.evaluate(
      variables, t, models.adapter_dim,
      class_means=exemplars.class_means(ctx, memory, models.student,
                                        variables)), "classifier": "nme"}


METHOD = spec_lib.Spec(
    name="icarl", index=10, family="stores examples",
    summary="sigmoid distillation on batch and memory rows, NME classifier",
    from_config=rows.from_config, objective=objective, teacher=True,
    sections=rows.SECTIONS, check=rows.check, check_steps=rows.check_steps,
    rows=rows.make_rows(), classify=classify)
