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

from cil_jax import losses
from cil_jax import lucir as lucir_lib
from cil_jax import parallel
from cil_jax import partition
from cil_jax import regularizers
from cil_jax import rehearsal as rehearsal_lib
from cil_jax.models.layers import cosine
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
  ``path_integral`` is SI's running sum over the step's updates
  (``regularizers.path_integral_step``) when the step tracks it, else
  empty.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  hparams: Any
  path_integral: Any = flax.struct.field(default_factory=dict)


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
                 path_integral=False):
  """A fresh state; ``num_seen`` defaults to every output of the head and
  ``num_old`` to ``num_seen`` (nothing masked). ``path_integral`` starts
  SI's running sum at zero."""
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
      path_integral=(jax.tree.map(np.zeros_like, params) if path_integral
                     else {}))


def make_train_step(student_apply, teacher_apply, tx, kd_form, kd_t2_scaling,
                    frozen_labeler, learning_rate_fn=None, new_rows=False,
                    local_ce=False, head_path="head", balanced_replay="",
                    penalty=False, path_integral=False, rehearsal="",
                    mixed_batch_stats=False, lucir=None, grad_norm=True):
  """Builds the per-device step; wrap it with ``pmap_train_step``.

  ``student_apply``/``teacher_apply`` are flax ``Module.apply`` functions; the
  teacher runs in inference mode and may be ``None`` (no distillation). A
  batch may bring the teacher's logits precomputed (``teacher_logits``), in
  which case the teacher is not run. ``frozen_labeler`` maps a parameter's
  or BatchNorm statistic's path to a partition label, so frozen layers keep
  their running averages. The metrics are the batch's ``loss``, ``ce``,
  ``kd`` and ``accuracy``, and ``grad_norm``: the global L2 norm of the
  gradient of what the step updates (trainable parameters, head columns
  of the seen classes, ``num_old`` on with ``new_rows``), before the
  optimizer; without ``grad_norm`` it is not computed (a run computes it
  only for TensorBoard, its one reader: 0.1 ms of the Fashion-MNIST MLP's
  2.3 ms step on a 2-core CPU). With ``learning_rate_fn(count,
  total_steps)``, ``tx`` gives the update direction and the step scales
  it by ``-learning_rate_fn``;
  without, ``tx``'s updates are applied as they are. ``new_rows`` (the
  preset) updates only the head's new columns, ``num_old`` on. ``local_ce``
  takes the cross-entropy over the new classes' outputs only, ``num_old``
  to ``num_seen`` (``losses.CE_FORMS``); the accuracy metric stays over all
  seen classes. ``head_path``: the head's slash path in params.

  Batches may bring synthetic old-class rows (``replay_image`` and the
  teacher's ``replay_logits``, ``cil_jax.data.replay``). The student then
  also distils the teacher on them, weighted by ``hparams["replay_weight"]``
  (its BatchNorm statistics are not updated from them, unless
  ``mixed_batch_stats``: then real and synthetic rows go through the
  student in one pass, so BatchNorm normalises by, and its running
  averages follow, the mixture; ``mixed_forward``). With
  ``balanced_replay`` (the head fine-tune after a replay step: ``"soft"``
  or ``"hard"``; ``""`` off) the loss is instead class-balanced over all
  seen classes: cross-entropy on the real rows (new classes) and, on the
  synthetic rows, the teacher's ``full`` KD at ``kd_temperature`` (soft)
  or cross-entropy to its prediction (hard); each part weighted by its
  share of the seen classes, so every class weighs alike whatever the
  rows per part.

  With ``penalty`` (a regularisation method, which never distils) the
  second input is not a teacher but the penalty's ``{"anchor",
  "importance"}`` (the importance already weighted), and the loss adds
  ``regularizers.penalty``. With ``path_integral`` the step adds its
  update's share to ``state.path_integral`` (SI), from the gradient of
  the loss without the penalty.

  With ``rehearsal`` (``cil_jax.rehearsal``) the batch brings exemplar
  memory rows (``replay_image``, ``replay_label`` and for iCaRL the
  teacher's ``replay_logits``): ``er`` takes the cross-entropy over all
  seen classes on the batch and the memory rows together; ``icarl`` the
  sigmoid distillation loss on both (targets: the teacher's sigmoid
  outputs for old classes, one-hot for new); ``agem`` the cross-entropy
  on the batch, its gradient projected against the memory rows' (after
  both are averaged over devices); ``bic`` the eps mix of cross-entropy
  and ``kd_form`` distillation of the teacher (``teacher_logits`` and
  ``replay_logits``) on the batch and the memory rows. The batch's
  BatchNorm statistics come from the rows the loss trains on (the batch
  and, for er, icarl, bic and lucir, the memory rows). ``lucir`` (a
  cosine-head model; ``lucir.Settings``) takes the cross-entropy over all
  seen classes on the batch and the memory rows, plus the less-forget
  constraint against the teacher's features on both and the margin
  ranking loss on the memory rows (``cil_jax.lucir``; the ``kd`` metric
  is the less-forget term); its teacher is always run (its features, not
  its logits, are needed).
  """

  def train_step(state, teacher, batch, rng):
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step),
                             lax.axis_index(BATCH_AXIS))
    hparams = state.hparams
    teacher_logits = batch.get("teacher_logits")
    if (teacher_logits is None and teacher_apply is not None
        and rehearsal != "lucir"):
      teacher_logits = lax.stop_gradient(
          teacher_apply(teacher, batch["image"], train=False))

    def loss_fn(params):
      if rehearsal == "lucir":
        return _lucir_loss(params)
      if rehearsal in ("er", "icarl", "bic"):
        return _joint_rows_loss(params)
      synthetic = None
      if mixed_batch_stats and "replay_image" in batch:
        logits, synthetic, updates = mixed_forward(
            student_apply, {"params": params, "batch_stats":
                            state.batch_stats},
            batch["image"], batch["replay_image"], rng)
        synthetic = losses.mask_logits(synthetic, hparams["num_seen"])
      else:
        logits, updates = student_apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"], train=True, rngs={"dropout": rng},
            mutable=["batch_stats"])
      logits = losses.mask_logits(logits, hparams["num_seen"])
      if "replay_image" in batch and synthetic is None:
        synthetic = replay_logits(params, batch, rng)
      if balanced_replay:
        return _balanced_replay_loss(logits, synthetic, batch, updates)
      ce = losses.cross_entropy(
          losses.mask_logits(logits, hparams["num_seen"], hparams["num_old"])
          if local_ce else logits, batch["label"])
      if teacher_logits is None:
        kd = jnp.zeros(())
        loss = ce
      else:
        kd = losses.distillation(
            kd_form, losses.mask_logits(teacher_logits, hparams["num_old"]),
            logits, hparams["kd_temperature"], kd_t2_scaling,
            num_old=hparams["num_old"])
        loss = losses.eps_mix(ce, kd, hparams["eps"])
        # A step with eps 0 (a plain method in a distilling method's
        # program, ``step_build.structure``) does not distil.
        kd = jnp.where(hparams["eps"] > 0, kd, 0.0)
      if "replay_image" in batch and not rehearsal:
        loss = loss + hparams["replay_weight"] * losses.distillation(
            kd_form, losses.mask_logits(batch["replay_logits"],
                                        hparams["num_old"]),
            synthetic, hparams["kd_temperature"],
            kd_t2_scaling, num_old=hparams["num_old"])
      return loss, (logits, updates.get("batch_stats", {}), ce, kd)

    def _joint_rows_loss(params):
      """er, icarl, bic: one pass over the batch and the memory rows."""
      rows = batch["image"].shape[0]
      all_logits, updates = student_apply(
          {"params": params, "batch_stats": state.batch_stats},
          jnp.concatenate([batch["image"], batch["replay_image"]]),
          train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
      labels = jnp.concatenate([batch["label"], batch["replay_label"]])
      seen_logits = losses.mask_logits(all_logits, hparams["num_seen"])
      kd = jnp.zeros(())
      if rehearsal == "er":
        loss = losses.cross_entropy(seen_logits, labels)
      elif rehearsal == "bic":
        ce = losses.cross_entropy(seen_logits, labels)
        kd = losses.distillation(
            kd_form, losses.mask_logits(
                jnp.concatenate([teacher_logits, batch["replay_logits"]]),
                hparams["num_old"]),
            seen_logits, hparams["kd_temperature"], kd_t2_scaling,
            num_old=hparams["num_old"])
        loss = losses.eps_mix(ce, kd, hparams["eps"])
      else:
        targets = rehearsal_lib.icarl_targets(
            jnp.concatenate([teacher_logits, batch["replay_logits"]]),
            labels, hparams["num_old"], hparams["num_seen"])
        loss = rehearsal_lib.sigmoid_distillation(all_logits, targets,
                                                  hparams["num_seen"])
      return loss, (seen_logits[:rows], updates.get("batch_stats", {}),
                    loss, kd)

    def _lucir_loss(params):
      rows = batch["image"].shape[0]
      images = jnp.concatenate([batch["image"], batch["replay_image"]])
      all_logits, updates = student_apply(
          {"params": params, "batch_stats": state.batch_stats}, images,
          train=True, rngs={"dropout": rng},
          mutable=["batch_stats", "intermediates"],
          capture_intermediates=rehearsal_lib.capture_features)
      features = rehearsal_lib.captured_features(updates)
      old_features = lax.stop_gradient(
          rehearsal_lib.features(teacher_apply, teacher, images))
      labels = jnp.concatenate([batch["label"], batch["replay_label"]])
      seen_logits = losses.mask_logits(all_logits, hparams["num_seen"])
      ce = losses.cross_entropy(seen_logits, labels)
      less_forget = lucir_lib.less_forget(features, old_features)
      ranking = lucir_lib.margin_ranking(
          cosine(features[rows:], params[head_path]["kernel"]),
          batch["replay_label"], hparams["num_old"], hparams["num_seen"],
          lucir.margin, lucir.top_k)
      loss = (ce + lucir_lib.adaptive_weight(
          lucir.lambda_base, hparams["num_old"], hparams["num_seen"])
              * less_forget + lucir.mr_weight * ranking)
      return loss, (seen_logits[:rows], updates.get("batch_stats", {}), ce,
                    less_forget)

    def memory_grads(params):
      """A-GEM's reference: the cross-entropy gradient on the memory rows
      (their BatchNorm statistics discarded)."""
      def memory_loss(params):
        logits, _ = student_apply(
            {"params": params, "batch_stats": state.batch_stats},
            batch["replay_image"], train=True,
            rngs={"dropout": jax.random.fold_in(rng, 2)},
            mutable=["batch_stats"])
        return losses.cross_entropy(
            losses.mask_logits(logits, hparams["num_seen"]),
            batch["replay_label"])
      return parallel.pmean(jax.grad(memory_loss)(params))

    def replay_logits(params, batch, rng):
      """The student's logits on the synthetic rows, its BatchNorm
      statistics left as they are."""
      logits, _ = student_apply(
          {"params": params, "batch_stats": state.batch_stats},
          batch["replay_image"], train=True,
          rngs={"dropout": jax.random.fold_in(rng, 1)},
          mutable=["batch_stats"])
      return losses.mask_logits(logits, hparams["num_seen"])

    def _balanced_replay_loss(logits, synthetic, batch, updates):
      num_old, num_seen = hparams["num_old"], hparams["num_seen"]
      teacher = losses.mask_logits(batch["replay_logits"], num_old)
      if balanced_replay == "soft":
        old_part = losses.distillation(
            "full", teacher, synthetic, hparams["kd_temperature"], False,
            num_old=num_old)
      else:
        old_part = losses.cross_entropy(synthetic,
                                        jnp.argmax(teacher, axis=-1))
      new_share = (num_seen - num_old) / num_seen
      ce = (new_share * losses.cross_entropy(logits, batch["label"])
            + (1.0 - new_share) * old_part)
      return ce, (logits, updates.get("batch_stats", {}), ce, jnp.zeros(()))

    (loss, (logits, batch_stats, ce, kd)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads = task_grads = parallel.pmean(grads)
    if rehearsal == "agem":
      grads = rehearsal_lib.agem_project(grads, memory_grads(state.params))
    if penalty:  # the same on every device: added after the mean
      penalty_value, penalty_grads = jax.value_and_grad(
          regularizers.penalty)(state.params, teacher["anchor"],
                                teacher["importance"])
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
    batch_stats = partition.keep_frozen(parallel.pmean(batch_stats),
                                        state.batch_stats, frozen_labeler)
    metrics = parallel.pmean({
        "loss": loss, "ce": ce, "kd": kd,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
    })
    if grad_norm:
      metrics["grad_norm"] = norm  # of the mean gradient: one value
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    if path_integral:
      new_state = new_state.replace(
          path_integral=regularizers.path_integral_step(
              state.path_integral, task_grads, state.params, params))
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


def mixed_forward(student_apply, variables, images, replay_images, rng):
  """``(logits, replay_logits, updates)`` of one train-mode pass over the
  real rows and the synthetic rows together: BatchNorm's batch statistics,
  and so its running averages, are those of the mixture, in the rows'
  proportion."""
  logits, updates = student_apply(
      variables, jnp.concatenate([images, replay_images]), train=True,
      rngs={"dropout": rng}, mutable=["batch_stats"])
  return logits[:images.shape[0]], logits[images.shape[0]:], updates


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
  (``rehearsal.nme_predict``) to each image's penultimate features."""
  def eval_step(variables, images, class_means, num_seen):
    features = rehearsal_lib.features(apply_fn, variables, images)
    return rehearsal_lib.nme_predict(features, class_means, num_seen)
  return jax.pmap(eval_step, axis_name=BATCH_AXIS,
                  in_axes=(0, 0, None, None))
