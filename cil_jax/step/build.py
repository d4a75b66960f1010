"""Building a class step: the models, the layer mask, the optimizer and the
per-device train step (once per method structure and run), and the members.

``build_models`` is the one place student and teacher modules are made: the
preset's rules are labelled once, on the student's abstract variables, with
its frozen backbone layers running as at test time; the optimizer is masked
with those labels. ``make_members`` gives each run of a step its starting
variables (the previous model, new head columns from the run's one
initialisation) and teacher.
"""

import dataclasses
import functools
import os
import types
from typing import Any

import jax
from flax import traverse_util

from cil_jax.step import fit
from cil_jax import methods
from cil_jax import optim
from cil_jax import partition
from cil_jax.step import train_step as ts
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd
from cil_jax.models.expand import expand_variables


@dataclasses.dataclass(frozen=True)
class StepModels:
  """What one method structure trains with, built once per run and reused
  by every class step of that structure (so its step compiles once)."""
  student: Any  # flax module, head for the whole sequence
  teacher: Any  # the same architecture as the previous model, or None
  rules: list  # (regex, label) of the method's layer preset
  labels: Any  # trainable/frozen label per parameter
  adapter_dim: int
  tx: Any  # the masked update direction (optim.make_direction)
  train_step: Any  # the per-device step (train_step.make_train_step)
  teacher_logits_fn: Any  # jitted (variables, images) -> teacher logits


def adapter_dim(method, previous):
  """An adapter is added by the ``adapter`` preset and then kept."""
  return method.adapter_dim or (previous.adapter_dim if previous else 0)


def preset_labels(method, params, layout=None):
  """``(rules, labels)`` of ``method``'s layer preset on ``params`` (arrays
  or shapes); raises when the preset does not fit the model. ``layout``:
  a foreign module's (``StepContext.layout``)."""
  rules = partition.preset_rules(method.layers, params, method.last_k,
                                 method.trainable_regex, layout)
  return rules, partition.trainable_labels(params, rules)


def structure(method, previous, shared_kd=None):
  """What must be equal for two steps to share models and a compiled step:
  the layer preset, the student's adapter, whether the CE is local, the
  BatchNorm mode, the method's objective and what its module adds
  (``Spec.structure``) and, when distilling, the KD form and the teacher's
  adapter; whether a penalty is added and a running state kept. Method
  names, eps, T, the penalty's weight and what runs after training are
  not part of it.

  ``shared_kd`` (``shared_kd_programs``, ``StepContext.shared_kd``): a
  plain step that does not distill (C_A, fine-tuning, joint) takes the
  KD part of the run's distilling method of its other structure, and so
  runs that method's compiled step with eps 0 on zero teacher logits
  (``fit``): one compilation serves them all, and the loss, gradients and
  updates are the cross-entropy's alone."""
  base = _base_structure(method, previous)
  kd_part = _kd_part(method, previous)
  if kd_part is None and shared_kd and plain(method):
    kd_part = shared_kd.get(base)
  return base + (kd_part,) + (
      (uses_penalty(method, previous), running_update(method) is not None)
      if method.spec.step_input or method.consolidate else ())


def _base_structure(method, previous):
  spec = method.spec
  return (method.layers, method.last_k, method.trainable_regex,
          adapter_dim(method, previous), local_ce(method, previous),
          method.batch_stats, spec.objective,
          spec.structure(method) if spec.structure else None)


def _kd_part(method, previous):
  if previous is None or not method.distills:
    return None
  return (method.kd_form, method.kd_t2_scaling, previous.adapter_dim)


def plain(method):
  """Trains on its batches alone with CE and KD (no rows beside them, no
  penalty, nothing left for the next step), so it can share a distilling
  method's compiled step."""
  spec = method.spec
  return (spec.objective is kd.objective and spec.rows is None
          and spec.step_input is None and not method.consolidate
          and not method.memory)


def shared_kd_programs(all_methods):
  """``{base structure: KD part}`` of the plain distilling methods among
  ``all_methods`` (the first of each base structure), for
  ``structure``'s ``shared_kd``; their steps from a previous model
  without an adapter."""
  previous = types.SimpleNamespace(adapter_dim=0)  # stands for any
  shared = {}
  for method in all_methods:
    if plain(method) and method.distills and not method.adapter_dim:
      shared.setdefault(_base_structure(method, previous),
                        _kd_part(method, previous))
  return shared


def uses_penalty(method, previous):
  """A penalty holds the parameters near a previous model's."""
  return method.spec.step_input is not None and previous is not None


def running_update(method):
  """The running state's update of the regulariser among the ones the
  step leaves whose importance needs one (SI's path integral), or
  ``None``."""
  updates = [methods.get(kind).running for kind in method.consolidate
             if methods.get(kind).running is not None]
  if len(updates) > 1:
    raise ValueError(f"{method.consolidate} keep more than one running "
                     f"state; a step keeps one.")
  return updates[0] if updates else None


def local_ce(method, previous):
  """Local CE needs old classes to leave out: a step from scratch (the
  first, or joint) has none."""
  return previous is not None and method.ce_form == "local"


def foreign_inference(ctx, method, rules, dim):
  """Whether a foreign model with BatchNorm trains in its inference mode:
  when the method freezes BatchNorm statistics, or when the preset trains
  no layer that has them. Trained in train mode on new-class batches
  alone, its BatchNorm layers would normalise by those batches'
  statistics (and move their running ones towards them), away from what
  the old classes need; cil_jax's own models freeze them layer by layer
  instead (``frozen`` above)."""
  if ctx.foreign is None:
    return False
  stats = ctx.abstract(ctx.num_outputs, dim).get("batch_stats", {})
  if not stats:
    return False  # nothing to freeze: dropout stays as trained
  labeler = partition.rule_labeler(rules)
  paths = traverse_util.flatten_dict(stats, sep="/")
  return method.freeze_batch_stats or all(
      labeler(path) == partition.FROZEN for path in paths)


def build_models(ctx, method, previous):
  """The method structure's models, optimizer and per-device step, built on
  first use and cached in ``ctx``."""
  key = structure(method, previous, ctx.shared_kd)
  if key not in ctx.train_steps:
    ctx.train_steps[key] = _build(ctx, method, previous, key[len(
        _base_structure(method, previous))])
  return ctx.train_steps[key]


def _build(ctx, method, previous, kd_part):
  """``kd_part``: the structure's KD part (``_kd_part``; the method's own,
  or the one it shares), or ``None``."""
  dim = adapter_dim(method, previous)
  params = ctx.abstract(ctx.num_outputs, dim)["params"]
  rules, labels = preset_labels(method, params, ctx.layout)
  # Frozen backbone layers train as they test (BatchNorm running averages,
  # no dropout), so the features the head learns on are the test ones.
  frozen = (tuple(params.get("backbone", {})) if method.freeze_batch_stats
            else partition.frozen_backbone_layers(params, labels))
  student = ctx.model(ctx.num_outputs, dim, frozen,
                      inference=foreign_inference(ctx, method, rules, dim))
  teacher = None
  if kd_part is not None:
    kd_form, kd_t2_scaling, teacher_adapter_dim = kd_part
    teacher = ctx.model(ctx.num_outputs, teacher_adapter_dim)
  else:
    kd_form, kd_t2_scaling = method.kd_form, method.kd_t2_scaling
  objective = dataclasses.replace(
      method.spec.objective(method, spec_lib.BuildInfo(
          kd_form, kd_t2_scaling, local_ce(method, previous), ctx.head_path)),
      penalty=uses_penalty(method, previous), running=running_update(method))
  tx = partition.masked_optimizer(optim.make_direction(ctx.config.optim),
                                  labels)
  train_step = ts.make_train_step(
      student.apply, teacher.apply if teacher is not None else None, tx,
      objective, partition.rule_labeler(rules),
      learning_rate_fn=functools.partial(optim.learning_rate,
                                         ctx.config.optim),
      new_rows=method.layers == "new_rows", head_path=ctx.head_path,
      # Only TensorBoard reads it; the same on every process, so multi-host
      # runs keep one program.
      grad_norm=bool(ctx.config.outputs.tensorboard))
  teacher_logits_fn = None
  if teacher is not None and objective.teacher_logits:
    teacher_logits_fn = jax.jit(functools.partial(teacher.apply, train=False))
  return StepModels(student, teacher, rules, labels, dim, tx, train_step,
                    teacher_logits_fn)


def make_members(ctx, t, jobs, models):
  """One ``fit.Member`` per job: the previous model with its new classes'
  head columns from the run's initialisation (or that initialisation from
  scratch), its eps for this step and its teacher, or the step input its
  method gives in the teacher's place (a penalty's anchor and weighted
  importance)."""
  init_variables = ctx.init_variables(models.adapter_dim)
  members = []
  for job in jobs:
    variables, eps, teacher_variables = init_variables, 0.0, None
    method, previous = job.method, job.previous
    if previous is not None:
      variables = expand_variables(previous.variables, init_variables,
                                   ctx.num_old(t), ctx.head_path)
      if method.distills:
        eps = method.eps_for(ctx.num_old(t), len(ctx.groups[t]))
        teacher_variables = previous.variables
    members.append(fit.Member(
        variables=variables, eps=eps,
        replay_weight=method.replay_weight if previous is not None else 0.0,
        kd_temperature=method.kd_temperature,
        teacher_variables=teacher_variables,
        penalty=method.spec.step_input(method, previous)
        if uses_penalty(method, previous) else None,
        running=running_update(method) is not None,
        checkpoint_dir=os.path.join(job.step_dir, "checkpoints"),
        name=f"{method.name} step {t}" + (
            f" [{job.run_name}]" if job.run_name else "")))
  return members
