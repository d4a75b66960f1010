"""``run(config, workdir)``: a class sequence, every configured method, results.

Read top to bottom: data and class sequence; the base classifier C_A (trained
here on the first group, or loaded from ``config.teacher.checkpoint``); then,
per method, each later group is learnt from the previous model as frozen
teacher; evaluation after every step; ``results.json``.

Workdir layout (every finished piece is reused, never rewritten)::

  config.json                   the config this workdir belongs to
  base/step_0/                  C_A when trained here
  <method>/step_<t>/classifier  the model after step t (cil_jax classifier)
  <method>/step_<t>/result.json its test metrics
  <method>/step_<t>/checkpoints resumable training state while training
  results.json                  everything, written last
"""

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils

from cil_jax import checkpoint
from cil_jax import config_check
from cil_jax import evaluate
from cil_jax import fit
from cil_jax import methods
from cil_jax import partition
from cil_jax import train_step as ts
from cil_jax.data import classes
from cil_jax.data import pipeline
from cil_jax.data import source as data_source
from cil_jax.data.train_data import make_train_data
from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables
from cil_jax.report import format_table


def run(config, workdir):
  """Runs the experiment of ``config`` in ``workdir``; returns the results."""
  devices = _devices(config.train.num_devices)
  config_check.validate(config, len(devices))
  method_names = methods.method_names(config.methods)

  source = data_source.Source(config.dataset)
  dataset = source.info
  base_dir = os.path.join(workdir, "base", "step_0")
  if config.teacher.checkpoint:
    base_variables, base_meta = _load_teacher(config, dataset)
    new_groups = classes.class_sequence(
        config.classes.groups, dataset.num_classes, config.classes.order_seed)
    overlap = sorted(set(base_meta["class_order"]) &
                     {c for g in new_groups for c in g})
    if overlap:
      raise ValueError(
          f"Classes {overlap} of config.classes.groups are already classes of "
          f"the teacher ({base_meta['class_order']}, from its metadata.json); "
          f"with config.teacher.checkpoint, list only the new classes.")
    groups = [base_meta["class_order"]] + new_groups
  else:
    groups = classes.class_sequence(config.classes.groups, dataset.num_classes,
                                    config.classes.order_seed)
  order = [c for group in groups for c in group]
  experiment = _Experiment(config, source, groups, order, devices)
  for name in method_names:
    experiment.check_layers(methods.get_method(name, config))
  # Only a config that passed every check claims the workdir.
  os.makedirs(workdir, exist_ok=True)
  _claim_workdir(config, workdir)
  print(f"class sequence: {groups}; methods: {method_names}; "
        f"{len(devices)} {devices[0].platform} device(s)", flush=True)

  if config.teacher.checkpoint:
    base = experiment.given_base(base_variables, base_meta["adapter_dim"])
  else:
    base = experiment.step(methods.BASE, 0, base_dir, previous=None)
  results = {"class_sequence": groups, "dataset": dataset.name,
             "teacher_checkpoint": config.teacher.checkpoint or None,
             "methods": {}}
  for name in method_names:
    method = methods.get_method(name, config)
    steps, previous = [base], base
    for t in range(1, len(groups)):
      step_dir = os.path.join(workdir, name, f"step_{t}")
      previous = experiment.step(method, t, step_dir,
                                 previous=None if method.joint else previous)
      steps.append(previous)
    results["methods"][name] = _summarise(steps)

  _write_json(os.path.join(workdir, "results.json"), results)
  print(format_table(results), flush=True)
  return results


class _Experiment:
  """Data, class sequence and devices shared by every step of a run."""

  def __init__(self, config, source, groups, order, devices):
    self.config, self.source, self.groups, self.devices = (
        config, source, groups, devices)
    self.dataset = source.info
    self.order = order
    self.mapping = classes.label_map(order, self.dataset.num_classes)
    self.rng = jax.random.PRNGKey(config.seed)

  def step(self, method, t, step_dir, previous):
    """Trains (or reloads, when finished) the model after step ``t``.

    ``previous`` is the model after step t-1 (teacher and initialisation);
    ``None`` trains from scratch on all groups up to t (the joint oracle, and
    step 0).
    """
    classifier_dir = os.path.join(step_dir, "classifier")
    result_path = os.path.join(step_dir, "result.json")
    if os.path.exists(result_path):
      with open(result_path) as f:
        result = json.load(f)
      variables, _ = checkpoint.load_classifier(
          classifier_dir, self._abstract(result["adapter_dim"], t))
      print(f"{method.name} step {t}: finished earlier, reusing {step_dir}")
      return {**result, "variables": variables}

    seen = self.groups[:t + 1]
    num_seen = sum(len(g) for g in seen)
    num_old = num_seen - len(self.groups[t])
    train_groups = seen if previous is None else [self.groups[t]]
    train_data = make_train_data(
        self.source, [c for g in train_groups for c in g], self.mapping,
        self.config.dataset, self.config.train.batch_size, self.devices)
    method_index = (methods.METHODS.index(method.name)
                    if method.name in methods.METHODS else len(methods.METHODS))
    rng = jax.random.fold_in(jax.random.fold_in(self.rng, t), method_index)
    adapter_dim = method.adapter_dim or (previous or {}).get("adapter_dim", 0)
    student = build_model(self.config.model, num_seen, adapter_dim)
    variables = student.init(rng, jnp.zeros((1, *self.dataset.input_shape)))
    # Frozen backbone layers train as they test (BatchNorm running averages,
    # no dropout), so the features the head learns on are the test ones.
    student = build_model(
        self.config.model, num_seen, adapter_dim,
        partition.frozen_backbone_layers(variables["params"],
                                         partition.preset_rules(
                                             method.layers,
                                             variables["params"],
                                             method.last_k,
                                             method.trainable_regex)))
    teacher = teacher_variables = None
    eps = 0.0
    if previous is not None:
      variables = expand_variables(previous["variables"], variables, num_old)
      if method.distills:
        eps = method.eps_for(num_old, len(self.groups[t]))
        teacher = build_model(self.config.model, num_old,
                              previous["adapter_dim"])
        teacher_variables = previous["variables"]

    start = time.perf_counter()
    if os.path.exists(classifier_dir):
      # Killed after saving the model, before writing its result: the saved
      # classifier is complete (written atomically), so only evaluate it.
      trained, _ = checkpoint.load_classifier(classifier_dir, variables)
    else:
      trained = fit.fit(
          student=student, variables=variables, teacher=teacher,
          teacher_variables=teacher_variables, method=method, eps=eps,
          num_old=num_old, train_data=train_data, config=self.config,
          devices=self.devices, rng=rng,
          data_seed=[self.config.seed, t, method_index],
          checkpoint_dir=os.path.join(step_dir, "checkpoints"),
          name=f"{method.name} step {t}")
      checkpoint.save_classifier(classifier_dir, trained, {
          "model": self.config.model.to_dict(), "adapter_dim": adapter_dim,
          "num_classes": num_seen, "class_order": self.order[:num_seen],
          "input_shape": list(self.dataset.input_shape),
          "input_mean": list(self.dataset.mean),
          "input_std": list(self.dataset.std),
          "dataset": self.dataset.name})
    train_seconds = time.perf_counter() - start

    result = {
        "step": t, "method": method.name, "classes": self.groups[t],
        "num_old": num_old, "num_new": len(self.groups[t]), "eps": eps,
        "layers": method.layers, "adapter_dim": adapter_dim,
        "num_train_examples": train_data.global_examples,
        "data_placement": train_data.mode,
        "train_seconds": round(train_seconds, 2),
        **self.evaluate(student, trained, t),
    }
    _write_json(result_path, result)
    shutil.rmtree(os.path.join(step_dir, "checkpoints"), ignore_errors=True)
    print(f"{method.name} step {t}: acc_all {result['acc_all']:.4f} "
          f"acc_old {_fmt(result['acc_old'])} acc_new {result['acc_new']:.4f}",
          flush=True)
    return {**result, "variables": trained}

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

  def evaluate(self, model, variables, t):
    """Test metrics after step ``t`` over all classes seen by then."""
    seen = self.groups[:t + 1]
    base = pipeline.filtered(self.source, "test", [c for g in seen for c in g],
                             self.mapping)
    correct, total = evaluate.class_counts(
        ts.make_eval_step(model.apply),
        jax_utils.replicate(variables, self.devices), base, len(self.order),
        self.config.train.eval_batch_size, len(self.devices))
    return evaluate.step_metrics(correct, total, [len(g) for g in seen])

  def given_base(self, variables, adapter_dim):
    """The loaded C_A as step 0, evaluated on its own classes."""
    model = build_model(self.config.model, len(self.groups[0]), adapter_dim)
    return {"step": 0, "method": "given", "classes": self.groups[0],
            "num_old": 0, "num_new": len(self.groups[0]), "eps": 0.0,
            "adapter_dim": adapter_dim, "variables": variables,
            **self.evaluate(model, variables, 0)}

  def _abstract(self, adapter_dim, t):
    num_seen = sum(len(g) for g in self.groups[:t + 1])
    model = build_model(self.config.model, num_seen, adapter_dim)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, *self.dataset.input_shape)))


def _summarise(steps):
  matrix = [s["accuracy_row"] for s in steps]
  return {
      "steps": [{k: v for k, v in s.items() if k != "variables"}
                for s in steps],
      "accuracy_matrix": matrix,
      "average_incremental_accuracy": evaluate.average_incremental_accuracy(
          [s["acc_all"] for s in steps]),
      "forgetting": evaluate.forgetting(matrix),
      "final_acc_all": steps[-1]["acc_all"],
      "final_acc_old": steps[-1]["acc_old"],
      "final_acc_new": steps[-1]["acc_new"],
  }


def _load_teacher(config, dataset):
  """Loads C_A from ``config.teacher.checkpoint`` and checks it fits."""
  path = config.teacher.checkpoint
  meta = checkpoint.read_metadata(path)
  problems = []
  if meta["model"].get("name") != config.model.name:
    problems.append(f"the checkpoint's model is {meta['model'].get('name')!r} "
                    f"but config.model.name={config.model.name!r}")
  for key, value in meta["model"].items():
    if key != "name" and key in config.model and _as_list(
        config.model[key]) != _as_list(value):
      problems.append(f"config.model.{key}={config.model[key]!r} but the "
                      f"checkpoint has {value!r}")
  if meta.get("dataset") != dataset.name:
    problems.append(f"the checkpoint was trained on {meta.get('dataset')!r} "
                    f"but config.dataset.name={dataset.name!r}")
  elif not np.allclose(meta.get("input_mean", dataset.mean), dataset.mean,
                       rtol=1e-3) or not np.allclose(
                           meta.get("input_std", dataset.std), dataset.std,
                           rtol=1e-3):
    problems.append(f"the checkpoint's inputs were normalised with mean "
                    f"{meta.get('input_mean')} and std {meta.get('input_std')}"
                    f" but this dataset's are {list(dataset.mean)} and "
                    f"{list(dataset.std)} (another split or data_dir?)")
  if list(meta["input_shape"]) != list(dataset.input_shape):
    problems.append(f"the checkpoint takes inputs of shape "
                    f"{meta['input_shape']} but dataset {dataset.name!r} has "
                    f"{list(dataset.input_shape)}")
  if meta["num_classes"] != len(meta["class_order"]):
    problems.append(f"metadata says num_classes={meta['num_classes']} but "
                    f"lists {len(meta['class_order'])} classes")
  if problems:
    raise ValueError(f"Teacher checkpoint {path!r} does not match the config: "
                     + "; ".join(problems) + ". Set the config to the "
                     "checkpoint's model (see its metadata.json).")
  model = build_model(config.model, meta["num_classes"], meta["adapter_dim"])
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, *dataset.input_shape)))
  variables, meta = checkpoint.load_classifier(path, abstract)
  return variables, meta


def _claim_workdir(config, workdir):
  """Binds ``workdir`` to this config; a different config is refused so
  earlier results are never mixed with or overwritten by another run's."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    if stored != current:
      changed = sorted(_diff_keys(stored, current))
      raise ValueError(f"{workdir} holds a run of a different config (changed: "
                       f"{changed[:6]}). Use a new --workdir, or the same "
                       f"config to resume.")
    return
  _write_json(path, current)


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for key in set(a) | set(b):
      yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
  elif a != b:
    yield prefix.rstrip(".")


def _devices(requested):
  devices = jax.local_devices()
  if requested < 0 or requested > len(devices):
    raise ValueError(f"config.train.num_devices={requested} but "
                     f"{len(devices)} local devices exist; use 0 for all.")
  return devices[:requested] if requested else devices


def _write_json(path, obj):
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=_json_default)
  os.replace(tmp, path)


def _json_default(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  raise TypeError(f"not JSON serialisable: {type(value)}")


def _as_list(value):
  return list(value) if isinstance(value, (list, tuple)) else value


def _fmt(value):
  return "-" if value is None else f"{value:.4f}"
