"""TensorBoard event files of a run, through ``clu.metric_writers``.

  tensorboard --logdir WORKDIR

A TensorBoard run per method and per class step:

- ``<method>/step_<t>/tensorboard`` (``base/step_0`` for C_A): the step's
  training, a point per epoch at its last update: the epoch's means of
  ``train/loss``, ``train/ce``, ``train/kd``, ``train/accuracy`` and
  ``train/grad_norm`` (the L2 norm of the gradient of the parameters the
  step updates, before the optimizer; computed only for TensorBoard, by
  a train step built with ``grad_norm``), ``train/eps``,
  ``train/learning_rate``, ``train/examples_per_s``, and clu's
  ``ReportProgress`` ``steps_per_sec`` and ``uptime``; its hyperparameters
  (``eps``, ``kd_temperature``) once;
- ``<method>/tensorboard``: test accuracy after each class step t
  (``test/acc_all``, ``test/acc_old``, ``test/acc_new``), the run's average
  incremental accuracy and forgetting at the last step, and the run's
  config as hyperparameters, written once when the run finishes.

Both live in the workdir beside what they describe, so a finished step
copied to another run (identical steps of a group) carries its curves.
Only process 0 writes (``jax.process_index() == 0``), so a multi-host run
writes each file once; ``config.outputs.tensorboard=False`` writes none.
clu's writer imports TensorFlow (about 5 s and 0.7 GB on a 2-core CPU),
so it is imported only when a run writes.
"""

import os
import shutil

import jax

from cil_jax import optim
from cil_jax import overrides
from cil_jax import timer

SUBDIR = "tensorboard"


def enabled(config):
  """Whether this process writes the run's event files."""
  return bool(config.outputs.tensorboard) and jax.process_index() == 0


class EpochWriter:
  """Per-epoch training scalars of the members of one ``fit``, each into
  its own step directory; does nothing where ``enabled`` is false."""

  def __init__(self, config, members, steps_per_epoch, start_epoch):
    self._config, self._members = config, members
    self._steps_per_epoch = steps_per_epoch
    self._writers = []
    if not enabled(config):
      return
    with timer.section("tensorboard"):
      metric_writers, periodic_actions = _clu()
      self._writers = [
          metric_writers.SummaryWriter(os.path.join(
              os.path.dirname(m.checkpoint_dir), SUBDIR)) for m in members]
      for member, writer in zip(members, self._writers):
        writer.write_hparams({"eps": float(member.eps),
                              "kd_temperature": float(member.kd_temperature)})
      # Members of one fit share their steps: one throughput, written to
      # every member's run.
      self._progress = periodic_actions.ReportProgress(
          num_train_steps=config.train.epochs * steps_per_epoch,
          writer=metric_writers.MultiWriter(self._writers),
          on_steps=[e * steps_per_epoch
                    for e in range(1, config.train.epochs + 1)],
          every_secs=None)
      self._progress(start_epoch * steps_per_epoch)  # the clock starts

  def write(self, epoch, means, examples_per_s):
    """Writes epoch ``epoch``'s mean metrics (``{name: [one per member]}``,
    as ``fit`` computes them)."""
    if not self._writers:
      return
    with timer.section("tensorboard"):
      update = epoch * self._steps_per_epoch
      learning_rate = float(optim.learning_rate(
          self._config.optim, update - 1,
          self._config.train.epochs * self._steps_per_epoch))
      for i, (member, writer) in enumerate(zip(self._members,
                                               self._writers)):
        writer.write_scalars(update, {
            **{f"train/{k}": float(v[i]) for k, v in means.items()},
            "train/eps": float(member.eps),
            "train/learning_rate": learning_rate,
            "train/examples_per_s": float(examples_per_s),
            "train/epoch": epoch})
      self._progress(update)

  def close(self):
    with timer.section("tensorboard"):
      for writer in self._writers:
        writer.close()


def write_run(workdir, config, results):
  """A finished run's test accuracies per class step, one TensorBoard run
  per method, rewritten whole (a rerun after a crash does not repeat
  points)."""
  if not enabled(config):
    return
  with timer.section("tensorboard"):
    metric_writers, _ = _clu()
    hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
               for k, v in overrides.flatten(config.to_dict()).items()}
    for name, method in results["methods"].items():
      logdir = os.path.join(workdir, name, SUBDIR)
      shutil.rmtree(logdir, ignore_errors=True)
      writer = metric_writers.SummaryWriter(logdir)
      writer.write_hparams({**hparams, "method": name})
      for step in method["steps"]:
        writer.write_scalars(step["step"], {
            f"test/{k}": step[k] for k in ("acc_all", "acc_old", "acc_new")
            if step[k] is not None})
      last = method["steps"][-1]["step"]
      writer.write_scalars(last, {
          f"test/{k}": method[k]
          for k in ("average_incremental_accuracy", "forgetting")
          if method[k] is not None})
      writer.close()


def _clu():
  """clu's writers and actions, imported on first use (they import TF)."""
  # pylint: disable=g-import-not-at-top
  from clu import metric_writers
  from clu import periodic_actions
  import tensorflow as tf
  # TF only writes files here: it must not claim an accelerator JAX uses.
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF's devices were set up before: already done
    pass
  return metric_writers, periodic_actions
