"""``run(config, workdir)``: a class sequence, every configured method, results.

Read top to bottom: check everything that can be checked (config values,
workdir, data, class groups, teacher, layer presets, batch sizes) before
anything is written; claim the workdir; the base classifier C_A (trained
here on the first group, or given as ``config.teacher.checkpoint``); then,
per method, each later group is learnt from the previous model as frozen
teacher; evaluation after every step; ``results.json``.

``run_members(config, {workdir: overrides})`` runs a *group* of such runs in
one process: runs whose configs differ only in ``eps_kd.*``,
``df_replay.*`` and ``methods`` (``cil_jax.overrides``). They share the
data, C_A (trained once, copied into
every workdir) and compiled steps; the eps-KD members of one layer preset
train side by side in one vmapped program (``vmap=True``, the default on
accelerators) or one after another. Every workdir ends exactly as its run
alone would leave it, so a group can be resumed, or finished run by run.

Workdir layout (every finished piece is reused, never rewritten)::

  config.json                   the config this workdir belongs to
  base/step_0/                  C_A when trained here
  <method>/step_<t>/            a finished step (``cil_jax.step.outputs``)
  <method>/tensorboard/         test accuracy per step (``cil_jax.tensorboard``)
  plots/                        PNGs (``cil_jax.plot``), before results.json
  results.json                  everything, written last
  timing.json                   where the process's wall time went

A finished run (its ``results.json`` present) that is run again only
reports: nothing is loaded, trained or written.
"""

import os

import jax

from cil_jax.step import class_step
from cil_jax import compile_cache
from cil_jax import config_check
from cil_jax import evaluate
from cil_jax.classifier import input_spec
from cil_jax import jsonio
from cil_jax import methods
from cil_jax import overrides
from cil_jax.step import build as step_build
from cil_jax.step import outputs as step_outputs
from cil_jax.classifier import teacher
from cil_jax import tensorboard
from cil_jax import timer
from cil_jax import workdirs
from cil_jax.data import batches
from cil_jax.data import classes
from cil_jax.data import source as data_source
from cil_jax.report import format_table
from cil_jax.step.context import StepContext

RESULTS_FILE = "results.json"
# Errors a user's input causes (config, workdir, checkpoints, data, a
# diverging learning rate); each message names the problem and the fix.
USER_ERRORS = (ValueError, OSError, FloatingPointError, batches.LeakError)


def run(config, workdir, source=None):
  """Runs the experiment of ``config`` in ``workdir``; returns the results.
  ``source``: the data (``data.source.Source``) instead of
  ``config.dataset``'s, e.g. in-memory arrays (``cil_jax.api``)."""
  return run_members(config, {workdir: {}}, source=source)[workdir]


def run_members(config, member_overrides, vmap=None, timing_path=None,
                source=None):
  """Runs ``config`` with each ``{workdir: {key: value}}`` override set.

  Returns ``{workdir: results}``. ``vmap=None`` vmaps members on
  accelerators and trains them in turn on CPU, where a batched matmul is not
  faster than separate ones. ``timing_path`` (default: ``timing.json`` in
  the workdir of a single run) receives the time budget when anything ran.
  """
  configs = _member_configs(config, member_overrides)
  finished = {}
  for workdir, member_config in configs.items():
    workdirs.check_path(workdir)
    finished[workdir] = _finished_results(workdir, member_config)
  todo = {w: c for w, c in configs.items() if finished[w] is None}
  if todo:
    finished.update(_run(todo, vmap, source))
    if timing_path is None and len(configs) == 1:
      timing_path = os.path.join(next(iter(configs)), "timing.json")
    if timing_path:
      report = timer.budget()
      print(timer.describe(report), flush=True)
      jsonio.write_json(timing_path, report)
  for workdir in configs:
    print(format_table(finished[workdir]), flush=True)
  return finished


def _run(configs, vmap, source=None):
  """Trains and evaluates the unfinished runs ``{workdir: config}``."""
  config = next(iter(configs.values()))
  compile_cache.enable(config.runtime.compilation_cache_dir)
  devices = config_check.devices(config.train.num_devices)
  for member_config in configs.values():
    config_check.validate(member_config, len(devices))
  method_names = {w: methods.method_names(c.methods)
                  for w, c in configs.items()}
  source = source or data_source.Source(config.dataset)
  groups, given = _class_sequence(config, source.info)
  if vmap is None:
    vmap = devices[0].platform != "cpu"
  if given is not None:
    # Every model of the run gets the input the teacher expects.
    source.normalize_as(*input_spec.raw_mean_std(
        given[1]["input"], source.info.pixel_max, source.info.input_shape[-1]))
  ctx = StepContext(config, source, groups, devices, vmap,
                    *(given[1:] if given else (None, None)),
                    class_names=_class_names(config, source.info, groups,
                                             given))
  all_methods = [methods.get_method(name, configs[w])
                 for w in configs for name in method_names[w]]
  config_check.validate_steps(
      ctx, all_methods, given[1]["adapter_dim"] if given else None)
  ctx.prefetch_init()  # compiles while the data loads
  ctx.prefetch_test()  # normalised while the first step compiles
  ctx.prefetch_checkpointing()  # imported then too
  if ctx.precomputes_teacher_logits:  # one compiled step for C_A and all
    ctx.shared_kd = step_build.shared_kd_programs(all_methods)
  if given is not None:  # evaluated and checked against its copy: no write
    base = class_step.given_base(ctx, given[0], given[1]["adapter_dim"],
                                 given[2])
  # Only configs that passed every check claim their workdirs.
  for workdir, member_config in configs.items():
    workdirs.claim(workdir, member_config)
  print(f"class sequence: {groups}; {len(configs)} run(s); "
        f"{len(devices)} {devices[0].platform} device(s)"
        + (f"; members {'vmapped' if vmap else 'in turn'}"
           if len(configs) > 1 else ""), flush=True)

  if given is None:
    base = _shared_base(ctx, list(configs), methods.base_for(all_methods))
  # One chain of step results per (workdir, method), advanced a step at a
  # time over all of them so identical or vmappable steps train together.
  chains = {(workdir, name): [base] for workdir in configs
            for name in method_names[workdir]}
  for t in range(1, len(groups)):
    jobs = []
    for workdir, name in chains:
      method = methods.at_step(methods.get_method(name, configs[workdir]),
                               ctx.num_old(t), len(groups[t]))
      jobs.append(class_step.Job(
          method, os.path.join(workdir, name, f"step_{t}"),
          None if method.joint else chains[workdir, name][-1],
          run_name=os.path.basename(workdir) if len(configs) > 1 else ""))
    for key, result in zip(chains, class_step.run_step(ctx, t, jobs)):
      chains[key].append(result)

  all_results = {}
  for workdir in configs:
    results = {"class_sequence": groups, "dataset": ctx.dataset.name,
               "teacher_checkpoint": config.teacher.checkpoint or None,
               "methods": {name: _summarise(chains[workdir, name])
                           for name in method_names[workdir]}}
    tensorboard.write_run(workdir, configs[workdir], results)
    if configs[workdir].outputs.plots and jax.process_index() == 0:
      # matplotlib costs about 0.5 s to import: only runs that plot pay it.
      from cil_jax import plot  # pylint: disable=g-import-not-at-top
      with timer.section("plots"):  # before results.json: a rerun replots
        plot.write_run_plots(workdir, results)
    jsonio.write_json(os.path.join(workdir, RESULTS_FILE), results)
    all_results[workdir] = results
  return all_results


def _member_configs(config, member_overrides):
  if not member_overrides:
    raise ValueError("No members to run: give at least one workdir.")
  configs = {workdir: overrides.apply(config, o)
             for workdir, o in member_overrides.items()}
  differ = overrides.non_member_differences(list(configs.values()))
  if differ:
    raise ValueError(
        f"Members of one group may differ only in eps_kd.*, df_replay.* and "
        f"methods, but they differ in {differ}; run those as separate runs.")
  return configs


def _finished_results(workdir, config):
  """The results of a finished run of ``config`` in ``workdir``, else
  ``None``; a workdir of another config is refused."""
  workdirs.check_config(workdir, config)
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    return None
  try:
    results = jsonio.read_json(path)
  except jsonio.DamagedFileError as e:
    print(f"{e}; rebuilding it from the finished steps.", flush=True)
    return None
  print(f"{workdir}: finished earlier; reporting its {RESULTS_FILE}.",
        flush=True)
  return results


def _class_sequence(config, dataset):
  """``(groups, given)``: the class groups of every step, and the given
  teacher's ``(variables, metadata, model)`` or ``None``."""
  new_groups = classes.class_sequence(
      config.classes.groups, dataset.num_classes, config.classes.order_seed)
  if not config.teacher.checkpoint:
    return new_groups, None
  variables, meta, model = teacher.load(config, dataset)
  teacher.check_new_classes(config.teacher.checkpoint, meta, new_groups)
  return [meta["class_order"]] + new_groups, (variables, meta, model)


def _class_names(config, dataset, groups, given):
  """A name (or ``None``) per class of the run's order: the dataset's
  (TFDS label names), overridden by the teacher's metadata and by
  ``config.classes.names``; ``None`` when no name is known."""
  written = [c for g in config.classes.groups for c in g]
  names = {c: dataset.class_names[c] if dataset.class_names else None
           for g in groups for c in g}
  if given is not None and given[1].get("class_names"):
    names.update(zip(given[1]["class_order"], given[1]["class_names"]))
  if config.classes.names:
    new_names = [n.strip() or None for n in config.classes.names.split(",")]
    if len(new_names) != len(written):
      raise ValueError(
          f"Invalid config: config.classes.names gives {len(new_names)} "
          f"names but config.classes.groups lists {len(written)} classes "
          f"{written}; give one name per class, comma-separated, in order.")
    if config.classes.order_seed is not None:
      raise ValueError(
          "Invalid config: config.classes.names names the classes as "
          "config.classes.groups lists them, which config.classes.order_seed "
          "permutes; unset one of the two.")
    names.update(zip(written, new_names))
  if not any(names.values()):
    return None
  return list(names.values())


def _shared_base(ctx, workdir_list, base_method):
  """C_A, trained once (or found finished in one workdir) and copied into
  every workdir's ``base/step_0``: the runs differ only after step 0.
  ``base_method`` (``methods.base_for``) names the regularisers whose
  importance C_A leaves beside it."""
  base_dirs = [os.path.join(w, "base", "step_0") for w in workdir_list]
  finished = [d for d in base_dirs
              if step_outputs.read_record(d) is not None]
  source_dir = (finished or base_dirs)[0]
  base = class_step.run_step(
      ctx, 0, [class_step.Job(base_method, source_dir, None)])[0]
  for base_dir in base_dirs:
    if base_dir != source_dir:
      step_outputs.copy_finished_step(source_dir, base_dir)
  return base


def _summarise(steps):
  records = [s.record for s in steps]
  matrix = [r["accuracy_row"] for r in records]
  return {
      "steps": records,
      "accuracy_matrix": matrix,
      "average_incremental_accuracy": evaluate.average_incremental_accuracy(
          [r["acc_all"] for r in records]),
      "forgetting": evaluate.forgetting(matrix),
      "final_acc_all": records[-1]["acc_all"],
      "final_acc_old": records[-1]["acc_old"],
      "final_acc_new": records[-1]["acc_new"],
  }
