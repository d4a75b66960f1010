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

from cil_jax import exemplars
from cil_jax import fit
from cil_jax import generator
from cil_jax import inversion
from cil_jax import optim
from cil_jax import partition
from cil_jax import regularizers
from cil_jax import replay_grid
from cil_jax import timer
from cil_jax import train_step as ts
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
  the layer preset, the student's adapter, whether the CE is local and,
  when distilling, the KD form and the teacher's adapter; whether a
  penalty is added and SI's path integral tracked; the rehearsal.
  Method names, eps,
  T, the penalty's weight and weight aligning (after training) are not
  part of it.

  ``shared_kd`` (``shared_kd_programs``, ``StepContext.shared_kd``): a
  plain step that does not distill (C_A, fine-tuning, joint) takes the
  KD part of the run's distilling method of its other structure, and so
  runs that method's compiled step with eps 0 on zero teacher logits
  (``fit``): one compilation serves them all, and the loss, gradients and
  updates are the cross-entropy's alone."""
  base = _base_structure(method, previous)
  kd = _kd_part(method, previous)
  if kd is None and shared_kd and plain(method):
    kd = shared_kd.get(base)
  return base + (kd,) + (
      (uses_penalty(method, previous), tracks_path_integral(method))
      if method.regularizer or method.consolidate else ())


def _base_structure(method, previous):
  return (method.layers, method.last_k, method.trainable_regex,
          adapter_dim(method, previous), local_ce(method, previous),
          method.batch_stats, method.balanced_replay,
          method.rehearsal if previous is not None else "", method.lucir)


def _kd_part(method, previous):
  if previous is None or not method.distills:
    return None
  return (method.kd_form, method.kd_t2_scaling, previous.adapter_dim)


def plain(method):
  """Trains on its batches alone (no replay, memory, penalty or
  consolidation), so it can share a distilling method's compiled step."""
  return not (method.replay or method.rehearsal or method.regularizer
              or method.consolidate or method.memory or method.lucir
              or method.balanced_replay)


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
  """A regulariser needs a previous model to hold the parameters near."""
  return bool(method.regularizer) and previous is not None


def tracks_path_integral(method):
  """SI's importance needs the path integral of the step's own training."""
  return "si" in method.consolidate


def local_ce(method, previous):
  """Local CE needs old classes to leave out: a step from scratch (the
  first, or joint) has none."""
  return previous is not None and method.ce_form == "local"


def build_models(ctx, method, previous):
  """The method structure's models, optimizer and per-device step, built on
  first use and cached in ``ctx``."""
  key = structure(method, previous, ctx.shared_kd)
  if key not in ctx.train_steps:
    ctx.train_steps[key] = _build(ctx, method, previous, key[len(
        _base_structure(method, previous))])
  return ctx.train_steps[key]


def _build(ctx, method, previous, kd):
  """``kd``: the structure's KD part (``_kd_part``; the method's own, or
  the one it shares), or ``None``."""
  dim = adapter_dim(method, previous)
  params = ctx.abstract(ctx.num_outputs, dim)["params"]
  rules, labels = preset_labels(method, params, ctx.layout)
  # Frozen backbone layers train as they test (BatchNorm running averages,
  # no dropout), so the features the head learns on are the test ones.
  frozen = (tuple(params.get("backbone", {})) if method.freeze_batch_stats
            else partition.frozen_backbone_layers(params, labels))
  student = ctx.model(ctx.num_outputs, dim, frozen)
  teacher = None
  if kd is not None:
    kd_form, kd_t2_scaling, teacher_adapter_dim = kd
    teacher = ctx.model(ctx.num_outputs, teacher_adapter_dim)
  else:
    kd_form, kd_t2_scaling = method.kd_form, method.kd_t2_scaling
  tx = partition.masked_optimizer(optim.make_direction(ctx.config.optim),
                                  labels)
  train_step = ts.make_train_step(
      student.apply, teacher.apply if teacher is not None else None, tx,
      kd_form, kd_t2_scaling, partition.rule_labeler(rules),
      learning_rate_fn=functools.partial(optim.learning_rate,
                                         ctx.config.optim),
      new_rows=method.layers == "new_rows",
      local_ce=local_ce(method, previous), head_path=ctx.head_path,
      balanced_replay=method.balanced_replay,
      penalty=uses_penalty(method, previous),
      path_integral=tracks_path_integral(method),
      rehearsal=method.rehearsal if previous is not None else "",
      mixed_batch_stats=method.mixed_batch_stats,
      lucir=method.lucir,
      # Only TensorBoard reads it; the same on every process, so multi-host
      # runs keep one program.
      grad_norm=bool(ctx.config.outputs.tensorboard))
  teacher_logits_fn = None
  if teacher is not None and method.rehearsal != "lucir":  # needs features
    teacher_logits_fn = jax.jit(functools.partial(teacher.apply, train=False))
  return StepModels(student, teacher, rules, labels, dim, tx, train_step,
                    teacher_logits_fn)


def make_members(ctx, t, jobs, models):
  """One ``fit.Member`` per job: the previous model with its new classes'
  head columns from the run's initialisation (or that initialisation from
  scratch), its eps for this step and its teacher, or for a regularisation
  method its penalty's anchor and weighted importance."""
  init_variables = ctx.init_variables(models.adapter_dim)
  members = []
  for job in jobs:
    variables, eps, teacher_variables = init_variables, 0.0, None
    if job.previous is not None:
      variables = expand_variables(job.previous.variables, init_variables,
                                   ctx.num_old(t), ctx.head_path)
      if job.method.distills:
        eps = job.method.eps_for(ctx.num_old(t), len(ctx.groups[t]))
        teacher_variables = job.previous.variables
    members.append(fit.Member(
        variables=variables, eps=eps,
        replay_weight=job.method.replay_weight if uses_replay(
            job.method, job.previous) else 0.0,
        kd_temperature=job.method.kd_temperature,
        teacher_variables=teacher_variables,
        penalty=regularizers.weighted(
            job.previous.penalty[job.method.regularizer],
            job.method.penalty_weight)
        if uses_penalty(job.method, job.previous) else None,
        path_integral=tracks_path_integral(job.method),
        checkpoint_dir=os.path.join(job.step_dir, "checkpoints"),
        name=f"{job.method.name} step {t}" + (
            f" [{job.run_name}]" if job.run_name else "")))
  return members


def uses_replay(method, previous):
  """Replay needs old classes and a model that knew them."""
  return method.replay is not None and previous is not None


def memory_sets(ctx, t, jobs, models):
  """Per job, the exemplar memory rows of its previous model
  (``exemplars.replay_set``, with the teacher's logits for iCaRL), or
  ``None`` for all when the method does not rehearse."""
  method = jobs[0].method
  if not method.rehearsal or jobs[0].previous is None:
    return None
  with timer.section("exemplars"):
    return [exemplars.replay_set(
        ctx, training_memory(ctx, t, job), ctx.num_old(t),
        models.teacher_logits_fn if method.distills else None,
        job.previous.variables) for job in jobs]


def training_memory(ctx, t, job):
  """The memory rows a step trains on: all of them, but for ``bic`` its
  held-out part (``exemplars.held_out``)."""
  if job.method.rehearsal == "bic":
    return exemplars.held_out(ctx, t, job.previous.memory)[0]
  return job.previous.memory


def replay_sets(ctx, t, jobs, key):
  """Per job, the synthetic old-class set of its previous model
  (``inversion.synthesize`` or ``generator.synthesize``), or ``None``
  for all without replay. Jobs
  with the same previous model share one set; sets are cached in ``ctx``
  for the step's head fine-tune."""
  method = jobs[0].method
  if not uses_replay(method, jobs[0].previous):
    return None
  sets = []
  for job in jobs:
    cache_key = (t, id(job.previous), method.replay)
    if cache_key not in ctx.replays:
      for old in [k for k in ctx.replays if k[0] != t]:
        del ctx.replays[old]  # an earlier step's set is not used again
      previous = job.previous
      teacher = ctx.model(ctx.num_outputs, previous.adapter_dim)
      synthesize = (generator.synthesize
                    if isinstance(method.replay, generator.Settings)
                    else inversion.synthesize)
      with timer.section("replay_synthesis"):
        replay = synthesize(
            teacher.apply, previous.variables, ctx.num_old(t),
            ctx.dataset.input_shape, key, method.replay, ctx.devices)
      print(f"{method.name} step {t}: synthesised {len(replay['image'])} "
            f"old-class inputs, teacher confidence "
            f"{replay['stats']['teacher_confidence']:.3f}, target hit "
            f"{replay['stats']['target_hit']:.3f}, BN-statistics loss "
            f"{replay['stats']['final_bn']:.3f}", flush=True)
      ctx.replays[cache_key] = replay
    if jax.process_index() == 0:
      os.makedirs(job.step_dir, exist_ok=True)
      replay_grid.write(os.path.join(job.step_dir, "replay_samples.png"),
                        ctx.replays[cache_key], ctx.order[:ctx.num_old(t)],
                        ctx.dataset.mean, ctx.dataset.std)
    sets.append(ctx.replays[cache_key])
  return sets
