"""Training one class step: the epoch loop around the pmapped train step."""

import math
import time

import jax
import numpy as np

from cil_jax import checkpoint
from cil_jax import optim
from cil_jax import partition
from cil_jax import train_step as ts


class NonFiniteLossError(FloatingPointError):
  pass


def fit(*, student, variables, teacher, teacher_variables, method, eps,
        num_old, train_data, config, devices, rng, data_seed, checkpoint_dir,
        name):
  """Trains ``student`` from ``variables`` and returns its host variables.

  ``teacher`` is a flax module (or ``None``) run in inference mode on
  ``teacher_variables``; it is an input of every step, never trained, never
  saved with the student. ``train_data`` is a ``data.train_data`` object.
  Resumes from the newest checkpoint in ``checkpoint_dir``; the batches of
  an epoch depend only on ``(data_seed, epoch)``, so a resumed run matches an
  uninterrupted one.
  """
  num_devices = len(devices)
  batch_size = config.train.batch_size
  steps_per_epoch = train_data.steps_per_epoch
  if steps_per_epoch == 0:
    raise ValueError(f"{name}: {train_data.global_examples} training examples "
                     f"make no full batch of {batch_size}; lower "
                     f"config.train.batch_size.")
  epochs = config.train.epochs
  rules = partition.preset_rules(method.layers, variables["params"],
                                 method.last_k, method.trainable_regex)
  labels = partition.trainable_labels(variables["params"], rules)
  tx = partition.masked_optimizer(
      optim.make_optimizer(config.optim, epochs * steps_per_epoch), labels,
      num_old if method.layers == "new_rows" else None)
  host_state = ts.create_state(variables, tx, eps, method.kd_temperature)
  step_fn = train_data.make_step(ts.make_train_step(
      student.apply, teacher.apply if teacher is not None else None, tx,
      method.kd_form, method.kd_t2_scaling, partition.rule_labeler(rules)))

  checkpoints = checkpoint.TrainCheckpoints(checkpoint_dir)
  start_epoch, restored = checkpoints.restore_latest(host_state)
  if restored is not None:
    host_state = restored
    print(f"{name}: resumed from the epoch {start_epoch} checkpoint",
          flush=True)
  state = ts.replicate(host_state, devices)
  teacher_replicated = ts.replicate(teacher_variables or {}, devices)
  print(f"{name}: {train_data.global_examples} training examples, "
        f"{steps_per_epoch} steps/epoch of {batch_size} on {num_devices} "
        f"device(s), data on {train_data.mode}, eps={eps:.3f}, "
        f"layers={method.layers}", flush=True)

  for epoch in range(start_epoch + 1, epochs + 1):
    start = time.perf_counter()
    epoch_metrics = []
    for batch in train_data.epoch(data_seed, epoch):
      state, metrics = step_fn(state, teacher_replicated, batch, rng)
      epoch_metrics.append(metrics)
    means = {k: float(np.mean([m[k][0] for m in jax.device_get(epoch_metrics)]))
             for k in epoch_metrics[0]}
    if not all(math.isfinite(v) for v in means.values()):
      raise NonFiniteLossError(
          f"{name}: loss became {means['loss']} in epoch {epoch}; the last "
          f"good checkpoint is kept in {checkpoint_dir}. Lower "
          f"config.optim.learning_rate or check the inputs for NaN/Inf.")
    seconds = time.perf_counter() - start
    print(f"{name} epoch {epoch:3d}/{epochs} loss {means['loss']:.4f} "
          f"ce {means['ce']:.4f} kd {means['kd']:.4f} "
          f"train_acc {means['accuracy']:.3f} "
          f"({steps_per_epoch * batch_size / seconds:,.0f} ex/s)", flush=True)
    if epoch % config.train.checkpoint_every_epochs == 0 or epoch == epochs:
      checkpoints.save(epoch, _first_replica(state))
  checkpoints.close()
  final = _first_replica(state)
  out = {"params": final.params}
  if final.batch_stats:
    out["batch_stats"] = final.batch_stats
  return out


def _first_replica(tree):
  return jax.device_get(jax.tree.map(lambda x: x[0], tree))
