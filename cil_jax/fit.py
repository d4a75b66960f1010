"""Training one class step: the epoch loop around the pmapped train step.

``fit`` trains one or more *members*: runs of the same step that differ only
in their starting variables, loss weights (``eps``, ``kd_temperature``) and
teacher. They share the data, the optimizer and one compiled step. With
``vmap=True`` their states are stacked and trained side by side in one
program (``cil_jax.members``); otherwise one after another, reusing the
compiled step. Each member checkpoints to its own directory in the format of
a run alone, so a member can resume in a group or alone.
"""

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cil_jax import checkpoint
from cil_jax import members as members_lib
from cil_jax import optim
from cil_jax import partition
from cil_jax import timer
from cil_jax import train_step as ts


class NonFiniteLossError(FloatingPointError):
  pass


@dataclasses.dataclass
class Member:
  """One run of a step: where it starts and what it distils from."""
  variables: Any
  eps: float
  kd_temperature: float
  teacher_variables: Any  # None without a teacher
  checkpoint_dir: str
  name: str


def fit(*, student, teacher, method, members, num_old, train_data, config,
        devices, rng, data_seed, vmap=False):
  """Trains every member of ``members``; returns their host variables.

  ``teacher`` is a flax module (or ``None``) run in inference mode on each
  member's ``teacher_variables``; it is an input of every step, never
  trained, never saved with the student. ``method`` gives the layer preset
  and KD form (shared); ``train_data`` is a ``data.train_data`` object.
  Resumes from the members' newest common checkpoint; the batches of an
  epoch depend only on ``(data_seed, epoch)``, so a resumed run matches an
  uninterrupted one.
  """
  batch_size = config.train.batch_size
  steps_per_epoch = train_data.steps_per_epoch
  if steps_per_epoch == 0:
    raise ValueError(f"{members[0].name}: {train_data.global_examples} "
                     f"training examples make no full batch of {batch_size}; "
                     f"lower config.train.batch_size.")
  epochs = config.train.epochs
  rules = partition.preset_rules(method.layers, members[0].variables["params"],
                                 method.last_k, method.trainable_regex)
  labels = partition.trainable_labels(members[0].variables["params"], rules)
  tx = partition.masked_optimizer(
      optim.make_optimizer(config.optim, epochs * steps_per_epoch), labels,
      num_old if method.layers == "new_rows" else None)
  per_device_step = ts.make_train_step(
      student.apply, teacher.apply if teacher is not None else None, tx,
      method.kd_form, method.kd_t2_scaling, partition.rule_labeler(rules))
  host_states = [ts.create_state(m.variables, tx, m.eps, m.kd_temperature)
                 for m in members]
  loop = _EpochLoop(config, train_data, devices, data_seed)

  if vmap and len(members) > 1:
    shared = all(m.teacher_variables is members[0].teacher_variables
                 for m in members)
    step_fn = train_data.make_step(members_lib.make_members_step(
        per_device_step, shared_teacher=shared))
    teachers = (members[0].teacher_variables if shared else
                members_lib.stack_states([m.teacher_variables
                                          for m in members]))
    finals = loop.run(step_fn, members, host_states, teachers,
                      jnp.stack([rng] * len(members)), stacked=True)
  else:
    step_fn = train_data.make_step(per_device_step)
    finals = []
    for member, host_state in zip(members, host_states):
      finals += loop.run(step_fn, [member], [host_state],
                         member.teacher_variables, rng, stacked=False)
  return [_variables(final) for final in finals]


class _EpochLoop:
  """Epochs of a compiled step over one member or a stack of them."""

  def __init__(self, config, train_data, devices, data_seed):
    self.config, self.train_data = config, train_data
    self.devices, self.data_seed = devices, data_seed

  def run(self, step_fn, members, host_states, teacher_variables, rng,
          stacked):
    epochs = self.config.train.epochs
    checkpoints = [checkpoint.TrainCheckpoints(m.checkpoint_dir)
                   for m in members]
    start_epoch, host_states = _restore(checkpoints, host_states)
    if start_epoch:
      print(f"{_names(members)}: resumed from the epoch {start_epoch} "
            f"checkpoint", flush=True)
    state = ts.replicate(members_lib.stack_states(host_states) if stacked
                         else host_states[0], self.devices)
    teacher = ts.replicate(teacher_variables or {}, self.devices)
    steps_per_epoch = self.train_data.steps_per_epoch
    batch_size = self.config.train.batch_size
    print(f"{_names(members)}: {self.train_data.global_examples} training "
          f"examples, {steps_per_epoch} steps/epoch of {batch_size} on "
          f"{len(self.devices)} device(s), data on {self.train_data.mode}, "
          + ", ".join(f"eps={float(s.hparams['eps']):.3f} "
                      f"T={float(s.hparams['kd_temperature']):g}"
                      for s in host_states), flush=True)

    for epoch in range(start_epoch + 1, epochs + 1):
      start = time.perf_counter()
      epoch_metrics = []
      for batch in self.train_data.epoch(self.data_seed, epoch):
        state, metrics = step_fn(state, teacher, batch, rng)
        epoch_metrics.append(metrics)
        if len(epoch_metrics) == 1 and epoch == start_epoch + 1:
          # The loop's first step holds the compile (when not cached).
          jax.block_until_ready(metrics)
          timer.add("first_steps", time.perf_counter() - start)
          start = time.perf_counter()
      # Per member: [H] means of each metric (H = 1 unstacked).
      host_metrics = jax.device_get(epoch_metrics)
      means = {k: np.mean([np.atleast_1d(m[k][0]) for m in host_metrics],
                          axis=0) for k in host_metrics[0]}
      seconds = time.perf_counter() - start
      timer.add("train_steps", seconds)
      for i, member in enumerate(members):
        if not math.isfinite(means["loss"][i]):
          raise NonFiniteLossError(
              f"{member.name}: loss became {means['loss'][i]} in epoch "
              f"{epoch}; the last good checkpoint is kept in "
              f"{member.checkpoint_dir}. Lower config.optim.learning_rate or "
              f"check the inputs for NaN/Inf.")
        print(f"{member.name} epoch {epoch:3d}/{epochs} loss "
              f"{means['loss'][i]:.4f} ce {means['ce'][i]:.4f} kd "
              f"{means['kd'][i]:.4f} train_acc {means['accuracy'][i]:.3f} "
              f"({steps_per_epoch * batch_size / seconds:,.0f} ex/s)",
              flush=True)
      if (epoch % self.config.train.checkpoint_every_epochs == 0
          or epoch == epochs):
        host = _first_replica(state)
        for i, manager in enumerate(checkpoints):
          manager.save(epoch, members_lib.unstack_state(host, i) if stacked
                       else host)
    for manager in checkpoints:
      manager.close()
    final = _first_replica(state)
    if stacked:
      return [members_lib.unstack_state(final, i) for i in range(len(members))]
    return [final]


def _restore(checkpoints, host_states):
  """``(epoch, states)`` at the newest epoch every member has saved.

  Members trained together save together; should a kill land between two
  members' saves of one epoch, the epoch before (kept too) is used, and
  later checkpoints are dropped so they are written afresh.
  """
  saved = [set(manager.epochs()) for manager in checkpoints]
  common = set.intersection(*saved)
  epoch = max(common) if common else 0
  for manager, epochs in zip(checkpoints, saved):
    for later in sorted(e for e in epochs if e > epoch):
      manager.delete(later)
  if not epoch:
    return 0, host_states
  return epoch, [manager.restore(epoch, state)
                 for manager, state in zip(checkpoints, host_states)]


def _names(members):
  if len(members) == 1:
    return members[0].name
  return f"{len(members)} members ({members[0].name}, ...)"


def _variables(state):
  out = {"params": state.params}
  if state.batch_stats:
    out["batch_stats"] = state.batch_stats
  return out


def _first_replica(tree):
  return jax.device_get(jax.tree.map(lambda x: x[0], tree))
