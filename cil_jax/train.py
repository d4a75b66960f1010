"""``run(config, workdir)``: a class sequence, every configured method, results.

Read top to bottom: data and class sequence; the base classifier C_A (trained
here on the first group, or loaded from ``config.teacher.checkpoint``); then,
per method, each later group is learnt from the previous model as frozen
teacher; evaluation after every step; ``results.json``.

``run_members(config, {workdir: overrides})`` runs a *group* of such runs in
one process: runs whose configs differ only in ``eps_kd.*`` and ``methods``
(``cil_jax.overrides``). They share the data, C_A (trained once, copied into
every workdir) and compiled steps; the eps-KD members of one layer preset
train side by side in one vmapped program (``vmap=True``, the default on
accelerators) or one after another. Every workdir ends exactly as its run
alone would leave it, so a group can be resumed, or finished run by run.

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

import jax
import jax.numpy as jnp
import numpy as np

from cil_jax import checkpoint
from cil_jax import class_step
from cil_jax import config_check
from cil_jax import evaluate
from cil_jax import methods
from cil_jax import overrides
from cil_jax.data import classes
from cil_jax.data import source as data_source
from cil_jax.models import build_model
from cil_jax.report import format_table


def run(config, workdir):
  """Runs the experiment of ``config`` in ``workdir``; returns the results."""
  return run_members(config, {workdir: {}})[workdir]


def run_members(config, member_overrides, vmap=None):
  """Runs ``config`` with each ``{workdir: {key: value}}`` override set.

  Returns ``{workdir: results}``. ``vmap=None`` vmaps members on
  accelerators and trains them in turn on CPU, where a batched matmul is not
  faster than separate ones.
  """
  if not member_overrides:
    raise ValueError("No members to run: give at least one workdir.")
  configs = {workdir: overrides.apply(config, o)
             for workdir, o in member_overrides.items()}
  differ = overrides.non_member_differences(list(configs.values()))
  if differ:
    raise ValueError(
        f"Members of one group may differ only in eps_kd.* and methods, but "
        f"they differ in {differ}; run those as separate runs.")
  config = next(iter(configs.values()))
  devices = _devices(config.train.num_devices)
  for member_config in configs.values():
    config_check.validate(member_config, len(devices))
  method_names = {workdir: methods.method_names(c.methods)
                  for workdir, c in configs.items()}

  source = data_source.Source(config.dataset)
  dataset = source.info
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
  if vmap is None:
    vmap = devices[0].platform != "cpu"
  steps = class_step.Steps(config, source, groups, devices, vmap)
  for workdir, member_config in configs.items():
    for name in method_names[workdir]:
      steps.check_layers(methods.get_method(name, member_config))
  # Only configs that passed every check claim their workdirs.
  for workdir, member_config in configs.items():
    os.makedirs(workdir, exist_ok=True)
    _claim_workdir(member_config, workdir)
  print(f"class sequence: {groups}; {len(configs)} run(s); "
        f"{len(devices)} {devices[0].platform} device(s)"
        + (f"; members {'vmapped' if vmap else 'in turn'}"
           if len(configs) > 1 else ""), flush=True)

  if config.teacher.checkpoint:
    base = steps.given_base(base_variables, base_meta["adapter_dim"])
  else:
    base = _shared_base(steps, list(configs))
  # One chain of step results per (workdir, method), advanced a step at a
  # time over all of them so identical or vmappable steps train together.
  chains = {(workdir, name): [base] for workdir in configs
            for name in method_names[workdir]}
  for t in range(1, len(groups)):
    jobs = []
    for workdir, name in chains:
      method = methods.get_method(name, configs[workdir])
      jobs.append(class_step.Job(
          method, os.path.join(workdir, name, f"step_{t}"),
          None if method.joint else chains[workdir, name][-1],
          run_name=os.path.basename(workdir) if len(configs) > 1 else ""))
    for key, result in zip(chains, steps.run(t, jobs)):
      chains[key].append(result)

  all_results = {}
  for workdir in configs:
    results = {"class_sequence": groups, "dataset": dataset.name,
               "teacher_checkpoint": config.teacher.checkpoint or None,
               "methods": {name: _summarise(chains[workdir, name])
                           for name in method_names[workdir]}}
    class_step.write_json(os.path.join(workdir, "results.json"), results)
    print(format_table(results), flush=True)
    all_results[workdir] = results
  return all_results


def _shared_base(steps, workdirs):
  """C_A, trained once (or found finished in one workdir) and copied into
  every workdir's ``base/step_0``: the runs differ only after step 0."""
  base_dirs = [os.path.join(w, "base", "step_0") for w in workdirs]
  finished = [d for d in base_dirs
              if os.path.exists(os.path.join(d, class_step.RESULT_FILE))]
  source_dir = (finished or base_dirs)[0]
  base = steps.run(0, [class_step.Job(methods.BASE, source_dir, None)])[0]
  for base_dir in base_dirs:
    if base_dir != source_dir:
      class_step.copy_finished_step(source_dir, base_dir)
  return base


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
  class_step.write_json(path, current)


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


def _as_list(value):
  return list(value) if isinstance(value, (list, tuple)) else value
