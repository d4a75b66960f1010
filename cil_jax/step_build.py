"""Building one class step: the models, the layer mask, the optimizer, the
members.

``build_models`` is the one place a step's student and teacher modules are
made: the preset's rules are labelled once, on the student's abstract
variables, and the student is initialised once, with its frozen backbone
layers running as at test time. ``build_optimizer`` masks the configured
optimizer with those labels. ``make_members`` gives each run of the step its
starting variables (the previous model, head widened) and teacher.
"""

import dataclasses
import os
from typing import Any

import jax.numpy as jnp

from cil_jax import fit
from cil_jax import optim
from cil_jax import partition
from cil_jax import train_step as ts
from cil_jax.models.expand import expand_variables


@dataclasses.dataclass(frozen=True)
class StepModels:
  """The modules and masks of one step of one method structure."""
  student: Any  # flax module with num_seen outputs
  teacher: Any  # flax module with num_old outputs, or None
  init_variables: Any  # the student's fresh initialisation
  rules: list  # (regex, label) of the method's layer preset
  labels: Any  # trainable/frozen label per parameter
  adapter_dim: int


def adapter_dim(method, previous):
  """An adapter is added by the ``adapter`` preset and then kept."""
  return method.adapter_dim or (previous.adapter_dim if previous else 0)


def preset_labels(method, params):
  """``(rules, labels)`` of ``method``'s layer preset on ``params`` (arrays
  or shapes); raises when the preset does not fit the model."""
  rules = partition.preset_rules(method.layers, params, method.last_k,
                                 method.trainable_regex)
  return rules, partition.trainable_labels(params, rules)


def build_models(ctx, t, method, previous, init_key):
  """Student (built and initialised once), teacher and layer labels."""
  num_seen = ctx.num_seen(t)
  dim = adapter_dim(method, previous)
  params = ctx.abstract(num_seen, dim)["params"]
  rules, labels = preset_labels(method, params)
  # Frozen backbone layers train as they test (BatchNorm running averages,
  # no dropout), so the features the head learns on are the test ones.
  student = ctx.model(num_seen, dim,
                      partition.frozen_backbone_layers(params, labels))
  init_variables = student.init(
      init_key, jnp.zeros((1, *ctx.dataset.input_shape), jnp.float32))
  teacher = None
  if previous is not None and method.distills:
    teacher = ctx.model(ctx.num_old(t), previous.adapter_dim)
  return StepModels(student, teacher, init_variables, rules, labels, dim)


def build_optimizer(config, method, labels, total_steps, num_old):
  """The configured optimizer, updating only the trainable leaves (and, for
  preset ``new_rows``, only the new classes' head columns)."""
  return partition.masked_optimizer(
      optim.make_optimizer(config.optim, total_steps), labels,
      num_old if method.layers == "new_rows" else None)


def build_train_step(models, method, tx):
  """The per-device train step of this method structure."""
  return ts.make_train_step(
      models.student.apply,
      models.teacher.apply if models.teacher is not None else None, tx,
      method.kd_form, method.kd_t2_scaling,
      partition.rule_labeler(models.rules))


def make_members(ctx, t, jobs, models):
  """One ``fit.Member`` per job: the previous model widened (or the fresh
  init from scratch), its eps for this step and its teacher."""
  members = []
  for job in jobs:
    variables, eps, teacher_variables = models.init_variables, 0.0, None
    if job.previous is not None:
      variables = expand_variables(job.previous.variables,
                                   models.init_variables, ctx.num_old(t))
      if job.method.distills:
        eps = job.method.eps_for(ctx.num_old(t), len(ctx.groups[t]))
        teacher_variables = job.previous.variables
    members.append(fit.Member(
        variables=variables, eps=eps,
        kd_temperature=job.method.kd_temperature,
        teacher_variables=teacher_variables,
        checkpoint_dir=os.path.join(job.step_dir, "checkpoints"),
        name=f"{job.method.name} step {t}" + (
            f" [{job.run_name}]" if job.run_name else "")))
  return members
