"""One class step of one or many runs: train (or reuse), save, evaluate.

A *job* is one run's model after step ``t`` of one method, in its own step
directory. ``Steps.run(t, jobs)`` finishes a list of jobs of the same step:

- a job whose ``result.json`` exists is reused;
- jobs with the same method and the same previous model are trained once
  and the finished step directory copied to the others;
- the rest are trained in batches of the same method structure (layers, KD
  form, ...: all but ``eps`` and ``kd_temperature``), each batch one call of
  ``fit.fit`` sharing the data and one compiled step, vmapped or in turn.

Every job's step directory ends as a run alone would leave it::

  classifier/    the model after step t (cil_jax classifier)
  result.json    its test metrics
  checkpoints/   resumable training state, only while training
"""

import dataclasses
import json
import os
import shutil
import time
import uuid
from typing import Any

import jax
import jax.numpy as jnp
from flax import jax_utils

from cil_jax import checkpoint
from cil_jax import evaluate
from cil_jax import fit
from cil_jax import methods
from cil_jax import partition
from cil_jax import timer
from cil_jax import train_step as ts
from cil_jax.data import classes
from cil_jax.data import pipeline
from cil_jax.data.train_data import make_train_data
from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables

RESULT_FILE = "result.json"


@dataclasses.dataclass
class Job:
  method: methods.Method
  step_dir: str
  previous: Any  # the model after step t-1 (a result dict), or None: scratch
  run_name: str = ""  # names the run in logs when several train together


class Steps:
  """Data, class sequence and devices shared by every step of a run (or of
  a group of runs that differ only in their eps-KD knobs)."""

  def __init__(self, config, source, groups, devices, vmap):
    self.config, self.source, self.groups, self.devices = (
        config, source, groups, devices)
    self.vmap = vmap
    self.dataset = source.info
    self.order = [c for group in groups for c in group]
    self.mapping = classes.label_map(self.order, self.dataset.num_classes)
    self.rng = jax.random.PRNGKey(config.seed)
    self._train_data = (None, None)  # (class ids, data) of the last batch
    self._eval_steps = {}
    self._test_data = {}

  def run(self, t, jobs):
    """The result dicts (with ``variables``) of ``jobs``, in order."""
    results = [self._reuse(job, t) for job in jobs]
    unique = {}
    for i, job in enumerate(jobs):
      if results[i] is None:
        unique.setdefault((job.method, id(job.previous)), []).append(i)
    batches = {}
    for indices in unique.values():
      batches.setdefault(self._structure(jobs[indices[0]]), []).append(
          indices)
    for batch in batches.values():
      trained = self._train([jobs[indices[0]] for indices in batch], t)
      for indices, result in zip(batch, trained):
        for i in indices:
          if i != indices[0]:
            _copy_step_dir(jobs[indices[0]].step_dir, jobs[i].step_dir)
          results[i] = result
    return results

  def _reuse(self, job, t):
    result_path = os.path.join(job.step_dir, RESULT_FILE)
    if not os.path.exists(result_path):
      return None
    with open(result_path) as f:
      result = json.load(f)
    variables, _ = checkpoint.load_classifier(
        os.path.join(job.step_dir, "classifier"),
        self._abstract(result["adapter_dim"], t))
    print(f"{job.method.name} step {t}: finished earlier, reusing "
          f"{job.step_dir}", flush=True)
    return {**result, "variables": variables}

  def _structure(self, job):
    """What jobs trained in one ``fit`` call must share."""
    return (dataclasses.replace(job.method, eps=0.0, kd_temperature=0.0),
            job.method.distills, job.previous is None, self._adapter_dim(job))

  def _adapter_dim(self, job):
    return job.method.adapter_dim or (job.previous or {}).get(
        "adapter_dim", 0)

  def _train(self, jobs, t):
    """Trains ``jobs`` (same structure, distinct runs) in one ``fit``."""
    method = jobs[0].method
    seen = self.groups[:t + 1]
    num_seen = sum(len(g) for g in seen)
    num_old = num_seen - len(self.groups[t])
    scratch = jobs[0].previous is None
    train_classes = [c for g in (seen if scratch else [self.groups[t]])
                     for c in g]
    train_data = self._data(train_classes)
    method_index = (methods.METHODS.index(method.name)
                    if method.name in methods.METHODS else len(methods.METHODS))
    rng = jax.random.fold_in(jax.random.fold_in(self.rng, t), method_index)
    adapter_dim = self._adapter_dim(jobs[0])
    student = build_model(self.config.model, num_seen, adapter_dim)
    init = student.init(rng, jnp.zeros((1, *self.dataset.input_shape)))
    # Frozen backbone layers train as they test (BatchNorm running averages,
    # no dropout), so the features the head learns on are the test ones.
    student = build_model(
        self.config.model, num_seen, adapter_dim,
        partition.frozen_backbone_layers(init["params"], partition.preset_rules(
            method.layers, init["params"], method.last_k,
            method.trainable_regex)))
    teacher = None
    if not scratch and method.distills:
      teacher = build_model(self.config.model, num_old,
                            jobs[0].previous["adapter_dim"])

    members, to_fit = [], []
    for job in jobs:
      variables, eps, teacher_variables = init, 0.0, None
      if not scratch:
        variables = expand_variables(job.previous["variables"], init, num_old)
        if method.distills:
          eps = job.method.eps_for(num_old, len(self.groups[t]))
          teacher_variables = job.previous["variables"]
      members.append(fit.Member(
          variables=variables, eps=eps,
          kd_temperature=job.method.kd_temperature,
          teacher_variables=teacher_variables,
          checkpoint_dir=os.path.join(job.step_dir, "checkpoints"),
          name=f"{method.name} step {t}" + (
              f" [{job.run_name}]" if job.run_name else "")))
      # Killed after saving the model, before writing its result: the saved
      # classifier is complete (written atomically), so only evaluate it.
      if not os.path.exists(os.path.join(job.step_dir, "classifier")):
        to_fit.append(len(members) - 1)

    start = time.perf_counter()
    trained = [None] * len(jobs)
    if to_fit:
      fitted = fit.fit(
          student=student, teacher=teacher, method=method,
          members=[members[i] for i in to_fit], num_old=num_old,
          train_data=train_data, config=self.config, devices=self.devices,
          rng=rng, data_seed=[self.config.seed, t, method_index],
          vmap=self.vmap)
      for i, variables in zip(to_fit, fitted):
        trained[i] = variables
    train_seconds = (time.perf_counter() - start) / max(len(to_fit), 1)

    results = []
    for i, (job, member) in enumerate(zip(jobs, members)):
      classifier_dir = os.path.join(job.step_dir, "classifier")
      if trained[i] is None:
        trained[i], _ = checkpoint.load_classifier(classifier_dir,
                                                   member.variables)
      else:
        checkpoint.save_classifier(classifier_dir, trained[i], {
            "model": self.config.model.to_dict(), "adapter_dim": adapter_dim,
            "num_classes": num_seen, "class_order": self.order[:num_seen],
            "input_shape": list(self.dataset.input_shape),
            "input_mean": list(self.dataset.mean),
            "input_std": list(self.dataset.std),
            "dataset": self.dataset.name})
      result = {
          "step": t, "method": method.name, "classes": self.groups[t],
          "num_old": num_old, "num_new": len(self.groups[t]),
          "eps": member.eps, "layers": method.layers,
          "adapter_dim": adapter_dim,
          "num_train_examples": train_data.global_examples,
          "data_placement": train_data.mode,
          "train_seconds": round(train_seconds, 2),
          **self.evaluate(trained[i], t, adapter_dim),
      }
      write_json(os.path.join(job.step_dir, RESULT_FILE), result)
      shutil.rmtree(member.checkpoint_dir, ignore_errors=True)
      print(f"{member.name}: acc_all {result['acc_all']:.4f} acc_old "
            f"{_fmt(result['acc_old'])} acc_new {result['acc_new']:.4f}",
            flush=True)
      results.append({**result, "variables": trained[i]})
    return results

  def _data(self, class_ids):
    """The training data of ``class_ids``, kept while batches reuse it."""
    key, data = self._train_data
    if key != class_ids:
      start = time.perf_counter()
      data = make_train_data(self.source, class_ids, self.mapping,
                             self.config.dataset, self.config.train.batch_size,
                             self.devices)
      timer.add("train_data", time.perf_counter() - start)
      self._train_data = (class_ids, data)
    return data

  def check_layers(self, method):
    """Fails before any training if ``method``'s layer preset does not fit
    the student of step 1."""
    num_seen = sum(len(g) for g in self.groups[:2])
    abstract = jax.eval_shape(
        build_model(self.config.model, num_seen, method.adapter_dim).init,
        jax.random.PRNGKey(0), jnp.zeros((1, *self.dataset.input_shape)))
    partition.trainable_labels(abstract["params"], partition.preset_rules(
        method.layers, abstract["params"], method.last_k,
        method.trainable_regex))

  def evaluate(self, variables, t, adapter_dim):
    """Test metrics after step ``t`` over all classes seen by then."""
    seen = self.groups[:t + 1]
    num_seen = sum(len(g) for g in seen)
    key = (num_seen, adapter_dim)
    if key not in self._eval_steps:  # one compile per model shape
      self._eval_steps[key] = ts.make_eval_step(
          build_model(self.config.model, num_seen, adapter_dim).apply)
    start = time.perf_counter()
    test_classes = tuple(c for g in seen for c in g)
    if test_classes not in self._test_data:  # decoded once, cached in memory
      self._test_data[test_classes] = pipeline.filtered(
          self.source, "test", test_classes, self.mapping)
    correct, total = evaluate.class_counts(
        self._eval_steps[key], jax_utils.replicate(variables, self.devices),
        self._test_data[test_classes], len(self.order),
        self.config.train.eval_batch_size, len(self.devices))
    timer.add("eval", time.perf_counter() - start)
    return evaluate.step_metrics(correct, total, [len(g) for g in seen])

  def given_base(self, variables, adapter_dim):
    """The loaded C_A as step 0, evaluated on its own classes."""
    return {"step": 0, "method": "given", "classes": self.groups[0],
            "num_old": 0, "num_new": len(self.groups[0]), "eps": 0.0,
            "adapter_dim": adapter_dim, "variables": variables,
            **self.evaluate(variables, 0, adapter_dim)}

  def _abstract(self, adapter_dim, t):
    num_seen = sum(len(g) for g in self.groups[:t + 1])
    model = build_model(self.config.model, num_seen, adapter_dim)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, *self.dataset.input_shape)))


def copy_finished_step(source_dir, step_dir):
  """Gives ``step_dir`` the finished step of ``source_dir`` (an identical
  run's), unless it has its own result already."""
  if not os.path.exists(os.path.join(step_dir, RESULT_FILE)):
    _copy_step_dir(source_dir, step_dir)


def _copy_step_dir(source_dir, step_dir):
  """Copies a finished step directory whole, then renames it into place; an
  unfinished one there (checkpoints of a killed run) is replaced."""
  tmp = f"{step_dir}.tmp-{uuid.uuid4().hex[:8]}"
  shutil.copytree(source_dir, tmp,
                  ignore=shutil.ignore_patterns("checkpoints"))
  shutil.rmtree(step_dir, ignore_errors=True)
  os.rename(tmp, step_dir)


def write_json(path, obj):
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=_json_default)
  os.replace(tmp, path)


def _json_default(value):
  if hasattr(value, "item"):  # numpy scalars
    return value.item()
  raise TypeError(f"not JSON serialisable: {type(value)}")


def _fmt(value):
  return "-" if value is None else f"{value:.4f}"
