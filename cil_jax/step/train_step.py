"""The pure, data-parallel train and eval steps.

``train_step(state, teacher, batch, rng) -> (state, metrics)`` runs under
``jax.pmap`` with axis ``parallel.BATCH_AXIS``: every device holds a replica
of ``state`` and the teacher, and a ``[devices, per_device, ...]`` slice of
the global batch; gradients, BatchNorm statistics and metrics are averaged
over the axis. The body uses only ``lax`` collectives by axis name, so the
same code runs under ``jax.shard_map``. ``pmap_train_step`` is the one place
the step is pmapped; the data's ``batch_fn`` makes each device's batch
inside it.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from cil_jax import features as feature_lib
from cil_jax import losses
from cil_jax import parallel
from cil_jax import partition
from cil_jax.methods.shared import penalties
from cil_jax.methods.spec import StepInputs
from cil_jax.parallel import BATCH_AXIS


@flax.struct.dataclass
class TrainState:
  """Everything the student's training changes, and nothing else.

  ``hparams`` holds the step's runtime scalars as arrays, so one compiled
  step serves every class step and a stack of states can sweep them:
  ``eps`` and ``kd_temperature`` (the loss), ``num_old`` and ``num_seen``
  (the head is allocated for the whole class sequence; outputs from
  ``num_seen`` on are masked out of every softmax and never updated, and
  the teacher's first ``num_old`` outputs are distilled) and
  ``total_steps`` (the learning-rate schedule's length) and
  ``replay_weight`` (of the distillation on synthetic old-class rows,
  when batches bring them). The teacher is never part of the state.
  ``running`` is a method's per-parameter running state over the step's
  updates (``Objective.running``, e.g. SI's path integral) when it keeps
  one, else empty.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  hparams: Any
  running: Any = flax.struct.field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def _jitted_init(tx):
  """``tx.init`` as one program: eagerly, each ``zeros_like`` of a new
  parameter shape compiles its own (Adam on the Fashion-MNIST MLP: five,
  0.04-0.13 s each on a 2-core CPU, at a run's first step). A run builds
  each optimizer once (``StepContext.train_steps``), so each compiles
  once; two optimizers alike compile the same program twice, which a
  persistent compilation cache serves the second time."""
  return jax.jit(tx.init)


def create_state(variables, tx, eps, kd_temperature, num_old=None,
                 num_seen=None, total_steps=1, replay_weight=0.0,
                 running=False):
  """A fresh state; ``num_seen`` defaults to every output of the head and
  ``num_old`` to ``num_seen`` (nothing masked). ``running`` starts the
  method's running state at zero."""
  params = variables["params"]
  if num_seen is None:
    num_seen = params["head"]["kernel"].shape[-1]
  # Host scalars: eager jnp constructors would compile a small program per
  # dtype.
  return TrainState(
      step=np.zeros((), np.int32), params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=_jitted_init(tx)(params),
      hparams={"eps": np.array(eps, np.float32),
               "kd_temperature": np.array(kd_temperature, np.float32),
               "num_old": np.array(num_seen if num_old is None else num_old,
                                   np.int32),
               "num_seen": np.array(num_seen, np.int32),
               "total_steps": np.array(total_steps, np.int32),
               "replay_weight": np.array(replay_weight, np.float32)},
      running=(jax.tree.map(np.zeros_like, params) if running else {}))


def make_train_step(student_apply, teacher_apply, tx, objective,
                    frozen_labeler, learning_rate_fn=None, new_rows=False,
                    head_path="head", grad_norm=True):
  """Builds the per-device step; wrap it with ``pmap_train_step``.

  ``student_apply``/``teacher_apply`` are flax ``Module.apply`` functions; the
  teacher runs in inference mode and may be ``None`` (no distillation). A
  batch may bring the teacher's logits precomputed (``teacher_logits``), in
  which case the teacher is not run. ``objective`` (``methods.spec.
  Objective``) is the method's part: its loss on the step's inputs
  (``methods.spec.StepInputs``), its gradient transform, whether the
  penalty of the step's second input is added, its running state's update.
  ``frozen_labeler`` maps a parameter's or BatchNorm statistic's path to a
  partition label, so frozen layers keep their running averages.

  The step: the loss and its gradient, their mean over devices, the
  method's transform, the penalty (the same on every device: added after
  the mean), the masked optax update (``new_rows``, the preset: only the
  head's new columns, ``num_old`` on), the BatchNorm statistics' mean, the
  running state's update, the metrics. The metrics are the batch's
  ``loss``, the objective's two named terms (``ce`` and ``kd`` unless it
  names them), ``accuracy``, and ``grad_norm``: the global L2 norm of the
  gradient of what the step updates (trainable parameters, head columns
  of the seen classes), before the optimizer; without ``grad_norm`` it is
  not computed (a run computes it only for TensorBoard, its one reader:
  0.1 ms of the Fashion-MNIST MLP's 2.3 ms step on a 2-core CPU). With
  ``learning_rate_fn(count, total_steps)``, ``tx`` gives the update
  direction and the step scales it by ``-learning_rate_fn``; without,
  ``tx``'s updates are applied as they are. ``head_path``: the head's
  slash path in params.
  """
  first_name, second_name = objective.metric_names

  def train_step(state, teacher, batch, rng):
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step),
                             lax.axis_index(BATCH_AXIS))
    hparams = state.hparams
    teacher_logits = batch.get("teacher_logits")
    if (teacher_logits is None and teacher_apply is not None
        and objective.teacher_logits):
      teacher_logits = lax.stop_gradient(
          teacher_apply(teacher, batch["image"], train=False))
    inputs = StepInputs(batch, hparams, rng, state.batch_stats, teacher,
                        teacher_logits, student_apply, teacher_apply,
                        head_path)

    (loss, (logits, batch_stats, first, second)), grads = (
        jax.value_and_grad(functools.partial(objective.loss, inputs),
                           has_aux=True)(state.params))
    grads = task_grads = parallel.pmean(grads)
    if objective.transform is not None:
      grads = objective.transform(inputs, grads, state.params)
    if objective.penalty:  # the same on every device: added after the mean
      penalty_value, penalty_grads = jax.value_and_grad(penalties.penalty)(
          state.params, teacher["anchor"], teacher["importance"])
      loss = loss + penalty_value
      grads = jax.tree.map(jnp.add, grads, penalty_grads)
    first_updated = hparams["num_old"] if new_rows else 0
    if grad_norm:
      norm = updated_norm(grads, frozen_labeler, first_updated,
                          hparams["num_seen"], head_path)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if learning_rate_fn is not None:
      learning_rate = learning_rate_fn(state.step, hparams["total_steps"])
      updates = jax.tree.map(lambda u: -learning_rate * u, updates)
    updates = partition.keep_head_columns(
        updates, first_updated, hparams["num_seen"], head_path)
    params = optax.apply_updates(state.params, updates)
    if objective.constrain is not None:
      params = objective.constrain(params, head_path)
    batch_stats = partition.keep_frozen(parallel.pmean(batch_stats),
                                        state.batch_stats, frozen_labeler)
    metrics = parallel.pmean({
        "loss": loss, first_name: first, second_name: second,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
    })
    if grad_norm:
      metrics["grad_norm"] = norm  # of the mean gradient: one value
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    if objective.running is not None:
      new_state = new_state.replace(running=objective.running(
          state.running, task_grads, state.params, params))
    return new_state, metrics

  return train_step


def updated_norm(grads, labeler, first, end, head_path="head"):
  """The global L2 norm of ``grads`` over what a step updates: the leaves
  ``labeler`` (path -> label) marks trainable, of the head only columns
  ``[first, end)`` (``partition.keep_head_columns``)."""
  trainable = partition.keep_frozen(
      grads, jax.tree.map(jnp.zeros_like, grads), labeler)
  return optax.tree.norm(partition.keep_head_columns(trainable, first, end,
                                                     head_path))


@functools.lru_cache(maxsize=None)
def pmap_train_step(train_step, batch_fn):
  """The pmapped step ``(state, teacher, resident, feed, rng)``.

  ``batch_fn(resident, feed)`` (from ``cil_jax.data.train_data``) makes the
  device's batch: a gather from device-resident data, or the fed batch,
  augmented. State, teacher, resident data and feed are per device; the rng
  is shared (the step folds in the device index). The state buffers are
  donated: the old state is dead after the step. Cached, so every class
  step of a run with the same step and data layout runs one compiled
  program.
  """
  def step(state, teacher, resident, feed, rng):
    return train_step(state, teacher, batch_fn(resident, feed), rng)
  return jax.pmap(step, axis_name=BATCH_AXIS, in_axes=(0, 0, 0, 0, None),
                  donate_argnums=(0,))


# Steps per dispatch of ``pmap_train_epoch``: one program serves epochs of
# any length, the last chunk padded with skipped steps.
CHUNK = 32


@functools.lru_cache(maxsize=None)
def pmap_train_epoch(train_step, batch_fn):
  """The pmapped ``(state, teacher, resident, feeds, rng)`` running up to
  ``CHUNK`` steps in one dispatch, for device-resident data whose feeds are
  small index arrays: ``feeds`` leaves are ``[CHUNK, ...]`` per device, and
  ``feeds["valid"]``, a prefix of ``True``, marks the real steps; the
  padded ones are not run (the state unchanged, zero metrics). Metrics
  come back per step. Cached like ``pmap_train_step``.

  A loop over the valid steps alone (``lax.fori_loop`` to their count)
  updates the state in place; a ``lax.scan`` over all ``CHUNK`` with a
  ``lax.cond`` skipping the padded steps copied the whole state (parameters
  and optimizer moments) out of the conditional at every step (0.16 ms of
  the Fashion-MNIST MLP's 2.5 ms step on a CPU).
  """
  # Jitted, so tracing it for the metrics' shapes and for the loop body
  # share one trace (a nested jit is inlined when compiled).
  @jax.jit
  def step(state, teacher, resident, feed, rng):
    return train_step(state, teacher, batch_fn(resident, feed), rng)

  def chunk(state, teacher, resident, feeds, rng):
    def feed_at(i):
      return jax.tree.map(
          lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False), feeds)

    shapes = jax.eval_shape(step, state, teacher, resident, feed_at(0),
                            rng)[1]
    length = feeds["valid"].shape[0]
    metrics = jax.tree.map(
        lambda m: jnp.zeros((length, *m.shape), m.dtype), shapes)

    def one_step(i, carry):
      state, metrics = carry
      state, step_metrics = step(state, teacher, resident, feed_at(i), rng)
      return state, jax.tree.map(
          lambda all_, m: lax.dynamic_update_index_in_dim(all_, m, i, 0),
          metrics, step_metrics)
    return lax.fori_loop(0, jnp.sum(feeds["valid"].astype(jnp.int32)),
                         one_step, (state, metrics))
  return jax.pmap(chunk, axis_name=BATCH_AXIS, in_axes=(0, 0, 0, 0, None),
                  donate_argnums=(0,))


def make_eval_step(apply_fn):
  """pmapped ``(variables, images, num_seen) -> predicted positions`` among
  the first ``num_seen`` outputs (``num_seen`` is shared, not per device)."""
  def eval_step(variables, images, num_seen):
    logits = apply_fn(variables, images, train=False)
    return jnp.argmax(losses.mask_logits(logits, num_seen), axis=-1)
  return jax.pmap(eval_step, axis_name=BATCH_AXIS, in_axes=(0, 0, None))


def make_nme_eval_step(apply_fn):
  """pmapped ``(variables, images, class_means, num_seen) -> predicted
  positions``: the nearest of the first ``num_seen`` class means
  (``features.nme_predict``) to each image's penultimate features."""
  def eval_step(variables, images, class_means, num_seen):
    features = feature_lib.features(apply_fn, variables, images)
    return feature_lib.nme_predict(features, class_means, num_seen)
  return jax.pmap(eval_step, axis_name=BATCH_AXIS,
                  in_axes=(0, 0, None, None))
