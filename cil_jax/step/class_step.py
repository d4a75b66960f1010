"""One class step of one or many runs: train (or reuse), save, evaluate.

A *job* is one run's model after step ``t`` of one method, in its own step
directory. ``run_step(ctx, t, jobs)`` finishes a list of jobs of the same
step and returns their ``StepResult``s:

- a job whose ``result.json`` exists is reused;
- jobs with the same method and the same previous model are trained once
  and the finished step directory copied to the others;
- the rest are trained in batches of the same method structure (layers, KD
  form, ...: all but ``eps`` and ``kd_temperature``), each batch by
  ``train_jobs``: build models, build optimizer, fit, save and evaluate.

Every job's step directory ends as a run alone would leave it
(``cil_jax.step.outputs``).
"""

import dataclasses
import functools
import glob
import shutil
import time
from typing import Optional

from cil_jax.step import compile_ahead
from cil_jax.classifier import equivalence
from cil_jax.memory import exemplars
from cil_jax.step import fit
from cil_jax import methods
from cil_jax.step import build as step_build
from cil_jax.step import outputs as step_outputs
from cil_jax import timer
from cil_jax.data import train_data as tdata
from cil_jax.methods.shared import penalties
from cil_jax.models.expand import resize_head
from cil_jax.step.outputs import StepResult


@dataclasses.dataclass(frozen=True)
class Job:
  method: methods.Method
  step_dir: str
  previous: Optional[StepResult]  # the model after step t-1; None: scratch
  run_name: str = ""  # names the run in logs when several train together


def run_step(ctx, t, jobs):
  """The ``StepResult`` of each of ``jobs``, in order."""
  results = [_reuse(ctx, t, job) for job in jobs]
  unique = {}
  for i, job in enumerate(jobs):
    if results[i] is None:
      unique.setdefault((job.method, id(job.previous)), []).append(i)
  batches = {}
  for indices in unique.values():
    batches.setdefault(_structure(ctx, jobs[indices[0]]), []).append(
        indices)
  for batch in batches.values():
    trained = train_jobs(ctx, t, [jobs[indices[0]] for indices in batch])
    for indices, result in zip(batch, trained):
      for i in indices:
        if i != indices[0]:
          step_outputs.copy_step_dir(jobs[indices[0]].step_dir,
                                     jobs[i].step_dir)
        results[i] = result
  return results


def train_jobs(ctx, t, jobs):
  """Trains ``jobs`` (same structure, distinct runs) in one ``fit``."""
  method, previous = jobs[0].method, jobs[0].previous
  spec = method.spec
  keys = ctx.keys(t, method)
  train_data = ctx.train_data(ctx.train_classes(t, scratch=previous is None))
  if spec.train_rows is not None and previous is not None:
    # Equal per job: every job of a batch shares the previous model.
    train_data = tdata.without_rows(train_data,
                                    spec.train_rows(ctx, t, previous))
  with timer.section("setup"):
    models = step_build.build_models(ctx, method, previous)
    ahead = _compile_ahead(ctx, t, method, models, train_data, keys,
                           len(jobs))
    members = step_build.make_members(ctx, t, jobs, models)
    if previous is not None:
      _check_start(ctx, t, jobs, members, models.adapter_dim)
  # Killed after saving the model, before writing its result: the saved
  # classifier is complete (written atomically), so only evaluate it.
  to_fit = [i for i, job in enumerate(jobs)
            if not step_outputs.has_classifier(job.step_dir)]
  start = time.perf_counter()
  replays = None
  if to_fit and spec.rows is not None and previous is not None:
    replays = spec.rows(ctx, t, [jobs[i] for i in to_fit], models,
                        keys.replay)
  common = dict(train_data=train_data, num_old=ctx.num_old(t),
                num_seen=ctx.num_seen(t), devices=ctx.devices,
                dropout_key=keys.dropout, data_seed=keys.data_seed,
                vmap=ctx.vmap, whole_epochs=ctx.whole_epochs,
                num_outputs=ctx.num_outputs,
                replays=replays, replay_rows=max(
                    1, method.replay_batch // len(ctx.devices)))
  fitted = dict(zip(to_fit, fit.fit(
      train_step=models.train_step, tx=models.tx,
      members=[members[i] for i in to_fit], config=ctx.config,
      teacher_logits_fn=models.teacher_logits_fn, ahead=ahead, **common)
                    if to_fit else []))
  if spec.after_fit is not None and to_fit:
    fitted = spec.after_fit(
        method, to_fit, members, fitted, common,
        functools.partial(_retrain, ctx, previous, common))
  train_seconds = (time.perf_counter() - start) / max(len(to_fit), 1)
  return [
      _save_and_evaluate(ctx, t, job, member, fitted.get(i), models, {
          "num_train_examples": train_data.global_examples,
          "data_placement": train_data.mode,
          "train_seconds": round(train_seconds, 2),
          **({"replay": replays[0]["stats"]}
             if replays and "stats" in replays[0] else {}),
          **({"memory_rows": len(job.previous.memory["label"])}
             if job.method.memory and job.previous else {})})
      for i, (job, member) in enumerate(zip(jobs, members))]


def _compile_ahead(ctx, t, method, models, train_data, keys, num_jobs):
  """Starts compiling a structure's train program on its first use, for a
  plain method trained alone (``compile_ahead``); ``None`` otherwise."""
  if (models.train_step in ctx.compiled_ahead or not step_build.plain(method)
      or (num_jobs > 1 and ctx.vmap)):
    return None
  ctx.compiled_ahead.add(models.train_step)
  return compile_ahead.start(
      models=models, variables=ctx.abstract(ctx.num_outputs,
                                            models.adapter_dim),
      train_data=train_data, num_old=ctx.num_old(t),
      num_seen=ctx.num_seen(t), config=ctx.config, devices=ctx.devices,
      data_seed=keys.data_seed, dropout_key=keys.dropout,
      whole_epochs=ctx.whole_epochs, num_outputs=ctx.num_outputs)


def _retrain(ctx, previous, common, method, members, epochs):
  """``Spec.after_fit``'s ``retrain``: ``members`` fitted for ``epochs``
  more with ``method``'s step (built and cached like the step's own), no
  teacher logits."""
  models = step_build.build_models(ctx, method, previous)
  config = ctx.config.copy_and_resolve_references()
  config.train.epochs = epochs
  config.train.checkpoint_every_epochs = epochs
  return fit.fit(train_step=models.train_step, tx=models.tx, config=config,
                 members=members, teacher_logits_fn=None, **common)


def given_base(ctx, variables, adapter_dim, given_model):
  """A loaded C_A (its own head width, run by ``given_model``, the module
  as given) as step 0, evaluated on its own classes. Its sequence-wide
  copy must reproduce its logits, and it must score about the accuracy its
  metadata records (``equivalence``)."""
  wide = resize_head(variables, ctx.num_outputs, ctx.head_path)
  num_given = len(ctx.groups[0])
  images = ctx.test_images(num_given)
  batch = ctx.config.train.eval_batch_size
  equivalence.check_old_logits(
      equivalence.old_logits(ctx.logits_fn(adapter_dim), wide, images,
                             num_given, batch),
      equivalence.old_logits(equivalence.logits_fn(given_model.apply),
                             variables, images, num_given, batch),
      "the given teacher, widened to the run's head")
  record = {"step": 0, "method": "given", "classes": ctx.groups[0],
            "num_old": 0, "num_new": len(ctx.groups[0]), "eps": 0.0,
            "adapter_dim": adapter_dim,
            **ctx.evaluate(wide, 0, adapter_dim)}
  equivalence.check_recorded_accuracy(
      record["acc_all"], ctx.teacher.get("accuracy"),
      f"the metadata of {ctx.config.teacher.checkpoint}")
  return StepResult(record, wide)


def _check_start(ctx, t, jobs, members, adapter_dim):
  """Each member's student, before training, gives its previous model's
  logits for the old classes (``equivalence``)."""
  num_old = ctx.num_old(t)
  # A wrong head copy or input shows on any few hundred images; 1,024 keep
  # the check at about 20 ms a step for an MLP (4,096: about 100 ms).
  images = ctx.test_images(num_old, limit=1024)
  batch = ctx.config.train.eval_batch_size
  student = ctx.logits_fn(adapter_dim)
  for job, member in zip(jobs, members):
    previous = ctx.logits_fn(job.previous.adapter_dim)
    equivalence.check_old_logits(
        equivalence.old_logits(student, member.variables, images, num_old,
                               batch),
        equivalence.old_logits(previous, job.previous.variables, images,
                               num_old, batch), member.name)


def _save_and_evaluate(ctx, t, job, member, variables, models, training):
  """Saves a freshly trained model (or loads the one a killed run saved),
  evaluates it, writes ``result.json`` and drops the training checkpoints."""
  num_seen = ctx.num_seen(t)
  spec = job.method.spec
  penalty = memory = None
  if variables is None:
    variables = step_outputs.load_classifier(ctx, job.step_dir, num_seen,
                                             models.adapter_dim)
    if job.method.consolidate:
      penalty = step_outputs.load_penalty(job.step_dir)
    if job.method.memory:
      memory = exemplars.load(job.step_dir, ctx.config, num_seen)
  else:
    running = variables.pop("running", None)
    if job.method.consolidate:
      # Before the classifier, whose presence ends the training.
      start = time.perf_counter()
      penalty = penalties.after_step(
          ctx, t, job.method.consolidate,
          job.previous.penalty if job.previous else None,
          models.student.apply, member.variables["params"], variables,
          running, scratch=job.previous is None)
      step_outputs.save_penalty(job.step_dir, penalty)
      training = dict(training, importance_seconds=round(
          time.perf_counter() - start, 2))
    if spec.finish is not None:
      # Before saving, so a resumed run loads the classifier it made.
      variables, training = spec.finish(ctx, t, job, member, variables,
                                        models, training)
    if job.method.memory:  # before the classifier, like the penalty
      memory = exemplars.after_step(
          ctx, t, job.previous.memory if job.previous else None,
          models.student, variables)
      exemplars.save(job.step_dir, ctx.config, memory)
    step_outputs.save_classifier(ctx, job.step_dir, variables, num_seen,
                                 models.adapter_dim)
  record = {
      "step": t, "method": job.method.name, "classes": ctx.groups[t],
      "num_old": ctx.num_old(t), "num_new": len(ctx.groups[t]),
      "eps": member.eps, "layers": job.method.layers,
      "adapter_dim": models.adapter_dim, **training,
      **ctx.evaluate(variables, t, models.adapter_dim),
  }
  if job.method.memory:
    record["memory_size"] = len(memory["label"])
  if spec.classify is not None and job.previous is not None:
    # The method's own classifier's accuracy (iCaRL's nearest mean of
    # exemplars); the head's own (argmax of the logits) is kept beside it.
    logits = {f"logits_{k}": record[k] for k in ("acc_all", "acc_old",
                                                  "acc_new")}
    record.update(spec.classify(ctx, t, variables, models, memory),
                  **logits)
  step_outputs.write_record(job.step_dir, record)
  # The step's checkpoints and those of what ran after its fit.
  for directory in [member.checkpoint_dir,
                    *glob.glob(glob.escape(member.checkpoint_dir) + "_*")]:
    shutil.rmtree(directory, ignore_errors=True)
  print(f"{member.name}: acc_all {record['acc_all']:.4f} acc_old "
        f"{_fmt(record['acc_old'])} acc_new {record['acc_new']:.4f}",
        flush=True)
  return StepResult(record, variables, penalty, memory)


def _reuse(ctx, t, job):
  record = step_outputs.read_record(job.step_dir)
  if record is None:
    return None
  variables = step_outputs.load_classifier(ctx, job.step_dir, ctx.num_seen(t),
                                           record["adapter_dim"])
  print(f"{job.method.name} step {t}: finished earlier, reusing "
        f"{job.step_dir}", flush=True)
  penalty = (step_outputs.load_penalty(job.step_dir)
             if job.method.consolidate else None)
  memory = (exemplars.load(job.step_dir, ctx.config, ctx.num_seen(t))
            if job.method.memory else None)
  return StepResult(record, variables, penalty, memory)


def _structure(ctx, job):
  """What jobs trained in one ``fit`` call must share: the compiled step,
  the training data (from scratch or not), through the method's name, the
  random keys, and the replay set and head fine-tune that follow the
  fit."""
  spec = job.method.spec
  return (job.method.name,
          step_build.structure(job.method, job.previous, ctx.shared_kd),
          # A job without a teacher in a shared distilling step (eps 0)
          # trains apart from those with one.
          job.previous is not None and job.method.distills,
          job.previous is None,
          spec.fit_key(job.method) if spec.fit_key else None)


def _fmt(value):
  return "-" if value is None else f"{value:.4f}"
