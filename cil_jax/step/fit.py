"""Training one class step: the epoch loop around the pmapped train step.

``fit`` trains one or more *members*: runs of the same step that differ only
in their starting variables, loss weights (``eps``, ``kd_temperature``) and
teacher. They share the data, the optimizer and one compiled step. With
``vmap=True`` their states are stacked and trained side by side in one
program (``cil_jax.step.members``); otherwise one after another, reusing the
compiled step. Each member checkpoints to its own directory in the format of
a run alone, so a member can resume in a group or alone.

Training that diverges (a non-finite epoch loss, or one that explodes past
``EXPLODED_FACTOR`` times the first batch's) stops with ``DivergedError``
before the epoch is checkpointed, so the last good checkpoint is kept.
"""

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cil_jax.classifier import checkpoint
from cil_jax.step import compile_ahead
from cil_jax.step import members as members_lib
from cil_jax import parallel
from cil_jax import tensorboard
from cil_jax import timer
from cil_jax.step import train_step as ts
from cil_jax.data import replay as replay_lib
from cil_jax.data import train_data as train_data_lib

# An epoch's mean loss above this multiple of the first batch's loss (or of
# 1, whichever is larger) is divergence: a healthy run's loss falls.
EXPLODED_FACTOR = 1e3


class DivergedError(FloatingPointError):
  """The training loss became non-finite or exploded."""


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a step: where it starts and what it distils from, or, for
  a regularisation method, what its penalty holds it near (``penalty``:
  ``{"anchor", "importance"}``, the step's second input in place of a
  teacher); ``running``: keep the method's running state (SI's path
  integral)."""
  variables: Any
  eps: float
  kd_temperature: float
  teacher_variables: Any  # None without a teacher
  checkpoint_dir: str
  name: str
  replay_weight: float = 0.0
  penalty: Any = None
  running: bool = False

  @property
  def step_input(self):
    """The train step's second input: the penalty, or the teacher."""
    return self.penalty if self.penalty is not None else self.teacher_variables


def fit(*, train_step, tx, members, train_data, num_old, num_seen, config,
        devices, dropout_key, data_seed, vmap=False, teacher_logits_fn=None,
        whole_epochs=False, replays=None, replay_rows=0, num_outputs=None,
        ahead=None):
  """Trains every member of ``members``; returns their host variables.

  ``train_step`` is the per-device step of ``cil_jax.step.train_step`` built with
  ``tx``; each member's teacher is an input of every step, never trained,
  never saved with the student. ``train_data`` is a ``data.train_data``
  object. The head's first ``num_seen`` outputs are this step's classes,
  the first ``num_old`` the teacher's. With ``teacher_logits_fn`` (a
  jitted inference pass of the teacher) and device-resident data without
  augmentation, a teacher's logits are computed once per step and gathered
  by the step instead of running the teacher on every batch; a member
  without a teacher then gets zero logits of ``num_outputs`` (it trains
  with eps 0 in the distilling step it shares). With
  ``whole_epochs`` and device-resident data, an epoch runs ``CHUNK`` steps
  per dispatch (``train_step.pmap_train_epoch``). ``replays`` (one per
  member, or ``None``) are synthetic old-class sets (``cil_jax.synthesis.inversion``)
  whose rows, ``replay_rows`` per device, join every batch
  (``cil_jax.data.replay``); members with different replay sets train one
  after another. Resumes from the members' newest common checkpoint; the
  batches of an epoch depend only on ``(data_seed, epoch)``, so a resumed
  run matches an uninterrupted one. ``ahead`` (``compile_ahead.start``'s
  future, or ``None``) is waited for before the first step.
  """
  total_steps = config.train.epochs * train_data.steps_per_epoch
  host_states = [ts.create_state(m.variables, tx, m.eps, m.kd_temperature,
                                 num_old, num_seen, total_steps,
                                 m.replay_weight, m.running)
                 for m in members]
  replays = list(replays or [None] * len(members))
  precompute = (teacher_logits_fn is not None and train_data.mode == "device"
                and not train_data.augment)

  def data_for(teacher_variables, replay):
    """The data, and the teacher the step runs (none if precomputed). A
    member without a teacher in a distilling step (``step_build``'s
    ``shared_kd``: it trains with eps 0) gets zero teacher logits."""
    data = train_data
    if teacher_variables is not None and precompute:
      with timer.section("teacher_logits"):
        data = data.with_teacher_logits(teacher_logits_fn, teacher_variables)
      teacher_variables = None
    elif teacher_logits_fn is not None and teacher_variables is None:
      if not precompute:
        raise ValueError("A step without a teacher runs a distilling step "
                         "only where teacher logits are precomputed.")
      data = data.with_zero_teacher_logits(num_outputs)
    if replay is not None:
      data = replay_lib.attach(data, replay, replay_rows, devices)
    return data, teacher_variables

  whole_epochs = whole_epochs and train_data.mode == "device"
  pmap = ts.pmap_train_epoch if whole_epochs else ts.pmap_train_step
  compile_ahead.wait(ahead)  # never compile the program twice
  shared = all(m.step_input is members[0].step_input
               and r is replays[0] for m, r in zip(members, replays))
  if vmap and len(members) > 1 and (
      shared or all(r is None for r in replays)):
    if shared:
      data, teachers = data_for(members[0].step_input, replays[0])
    else:  # one teacher per member: each runs on every batch
      data, teachers = train_data, members_lib.stack_states(
          [m.step_input for m in members])
    step_fn = pmap(members_lib.make_members_step(
        train_step, shared_teacher=shared), data.batch_fn)
    finals = _EpochLoop(config, data, devices, data_seed,
                        whole_epochs).run(
        step_fn, members, host_states, teachers,
        jnp.stack([dropout_key] * len(members)), stacked=True)
  else:
    finals = []
    for member, host_state, replay in zip(members, host_states, replays):
      data, teacher = data_for(member.step_input, replay)
      step_fn = pmap(train_step, data.batch_fn)
      finals += _EpochLoop(config, data, devices, data_seed,
                           whole_epochs).run(
          step_fn, [member], [host_state], teacher, dropout_key,
          stacked=False)
  return [_variables(final) for final in finals]


class _EpochLoop:
  """Epochs of a compiled step over one member or a stack of them."""

  def __init__(self, config, train_data, devices, data_seed, whole_epochs):
    self.config, self.train_data = config, train_data
    self.devices, self.data_seed = devices, data_seed
    self.whole_epochs = whole_epochs

  def run(self, step_fn, members, host_states, teacher_variables, rng,
          stacked):
    epochs = self.config.train.epochs
    with timer.section("checkpoints"):
      checkpoints = [checkpoint.TrainCheckpoints(m.checkpoint_dir)
                     for m in members]
      start_epoch, host_states = _restore(checkpoints, host_states)
    if start_epoch:
      print(f"{_names(members)}: resumed from the epoch {start_epoch} "
            f"checkpoint", flush=True)
    state = parallel.replicate(members_lib.stack_states(host_states)
                               if stacked else host_states[0], self.devices)
    teacher = parallel.replicate(teacher_variables or {}, self.devices)
    resident = self.train_data.resident
    self._log_start(members, host_states)
    board = tensorboard.EpochWriter(self.config, members,
                                    self.train_data.steps_per_epoch,
                                    start_epoch)
    whole_epochs = self.whole_epochs
    first_loss = None
    last_save = time.perf_counter()
    for epoch in range(start_epoch + 1, epochs + 1):
      start, compiles = time.perf_counter(), timer.total("compiles")
      feeds = (train_data_lib.epoch_chunks(self.train_data, self.data_seed,
                                           epoch, ts.CHUNK) if whole_epochs
               else self.train_data.epoch(self.data_seed, epoch))
      epoch_metrics, valid = [], []
      for feed in feeds:
        state, metrics = step_fn(state, teacher, resident, feed, rng)
        epoch_metrics.append(metrics)
        valid.append(feed["valid"][0] if whole_epochs else [True])
      # Per step, per member: rows [steps, H] of each metric (H = 1 when
      # not stacked); a chunk's dispatch returns its steps at once, padded
      # ones dropped here.
      keep = np.concatenate(valid)
      rows = {k: np.concatenate([
          np.reshape(m[k][0], (-1 if whole_epochs else 1, len(members)))
          for m in jax.device_get(epoch_metrics)])[keep]
              for k in epoch_metrics[0]}
      means = {k: v.mean(axis=0) for k, v in rows.items()}
      if first_loss is None:
        first_loss = rows["loss"][0]
      seconds = time.perf_counter() - start
      timer.add("train_steps", seconds - (timer.total("compiles")
                                          - compiles))
      examples_per_s = (self.train_data.steps_per_epoch *
                        self.config.train.batch_size / seconds)
      # The method's named terms (``Objective.metric_names``).
      terms = sorted(set(means) - {"loss", "accuracy", "grad_norm"})
      for i, member in enumerate(members):
        self._check_diverged(member, epoch, means["loss"][i], first_loss[i])
        print(f"{member.name} epoch {epoch:3d}/{epochs} loss "
              f"{means['loss'][i]:.4f} "
              + "".join(f"{k} {means[k][i]:.4f} " for k in terms)
              + f"train_acc {means['accuracy'][i]:.3f} "
              f"({examples_per_s:,.0f} ex/s)", flush=True)
      board.write(epoch, means, examples_per_s)
      if self._checkpoint_due(epoch, last_save):
        last_save = time.perf_counter()
        with timer.section("checkpoints"):
          host = parallel.unreplicate(state)
          for i, manager in enumerate(checkpoints):
            manager.save(epoch, members_lib.unstack_state(host, i) if stacked
                         else host)
    with timer.section("checkpoints"):
      for manager in checkpoints:
        manager.close()
    board.close()
    final = parallel.unreplicate(state)
    if stacked:
      return [members_lib.unstack_state(final, i) for i in range(len(members))]
    return [final]

  def _checkpoint_due(self, epoch, last_save):
    """At a ``train.checkpoint_every_epochs`` boundary (or the last
    epoch), once ``runtime.checkpoint_min_seconds`` have passed since the
    loop began or the last save."""
    every = self.config.train.checkpoint_every_epochs
    if epoch % every and epoch != self.config.train.epochs:
      return False
    return (time.perf_counter() - last_save
            >= self.config.runtime.checkpoint_min_seconds)

  def _log_start(self, members, host_states):
    print(f"{_names(members)}: {self.train_data.global_examples} training "
          f"examples, {self.train_data.steps_per_epoch} steps/epoch of "
          f"{self.config.train.batch_size} on {len(self.devices)} device(s), "
          f"data on {self.train_data.mode}, "
          + ", ".join(f"eps={float(s.hparams['eps']):.3f} "
                      f"T={float(s.hparams['kd_temperature']):g}"
                      for s in host_states), flush=True)

  def _check_diverged(self, member, epoch, loss, first_loss):
    if math.isfinite(loss) and loss <= EXPLODED_FACTOR * max(first_loss, 1.0):
      return
    what = ("became non-finite" if not math.isfinite(loss) else
            f"exploded from {first_loss:.4g} to {loss:.4g}")
    raise DivergedError(
        f"{member.name}: training diverged in epoch {epoch}: the loss {what} "
        f"at config.optim.learning_rate={self.config.optim.learning_rate:g} "
        f"({self.config.optim.name}, {self.config.optim.schedule} schedule). "
        f"Lower config.optim.learning_rate (or check the inputs for "
        f"NaN/Inf). Checkpoints of earlier epochs, if any, are kept in "
        f"{member.checkpoint_dir}; a rerun with the same config resumes "
        f"from them, and a changed learning rate needs a new --workdir.")


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
  """The trained variables, and the running state when kept."""
  out = {"params": state.params}
  if state.batch_stats:
    out["batch_stats"] = state.batch_stats
  if state.running:
    out["running"] = state.running
  return out
