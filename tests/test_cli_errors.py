"""The CLI's doors (issue 10): every bad input ends with exit != 0 and one
message naming the file or key, the problem and the fix, before anything is
written; every workdir that existed before is left byte-identical.

One table (``CASES``), one test. Each case pays seconds of imports in its
subprocess, so a module fixture runs them a few at a time; the finished and
the interrupted run that cases start from are made once and copied. Over
250 lines because the table (a third of it) and the setups it names read
best side by side.
"""

import concurrent.futures
import dataclasses
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from cil_jax.classifier import checkpoint
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
TINY = {"train.epochs": 1, "model.hidden_sizes": "(16,)",
        "methods": "eps_kd,finetune"}
RUN_FLAGS = {"finished": {}, "interrupted": {
    "train.epochs": 60, "train.checkpoint_every_epochs": 1,
    "runtime.checkpoint_min_seconds": 0}}
PARALLEL = threading.Semaphore(3)  # subprocesses at once (2 cores)


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  # What exists before: new (nothing), teacher (a classifier copied from the
  # finished run), finished / interrupted (a copy of that run), file, empty.
  start: str
  flags: dict
  words: tuple  # each a string or a tuple of alternatives; {ctx} names
  damage: Callable = None  # (teacher or workdir) -> {name: path} for words
  module: str = "cil_jax.main"
  exit_zero: bool = False
  trains: bool = False  # may create its new workdir and train in it
  after: Callable = None  # (ctx, output) -> problems
  # Files (fnmatch patterns; the first a JSON file) an exit 0 may rewrite
  # instead of failing.
  may_recompute: tuple = ()


def _env():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return {**env, "CUDA_VISIBLE_DEVICES": ""}


def _cli(workdir, flags, config="default.py", module="cil_jax.main"):
  argv = [sys.executable, "-m", module, "--workdir", str(workdir)]
  if module != "cil_jax.main":
    return argv
  return argv + ["--config", os.path.join(CONFIGS, config)] + [
      f"--config.{k}={v}" for k, v in {**TINY, **flags}.items()]


def _run(argv):
  with PARALLEL:
    done = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
  return done.returncode, done.stdout + done.stderr


def _snapshot(path):
  """{relative path: (sha256, mtime) or 'dir'} of everything under path."""
  paths = [path] if os.path.isfile(path) else [
      os.path.join(r, n) for r, ds, fs in os.walk(path) for n in ds + fs]
  out = {}
  for p in paths:
    if os.path.isdir(p):
      out[os.path.relpath(p, path)] = "dir"
    else:
      with open(p, "rb") as f:
        out[os.path.relpath(p, path)] = (hashlib.sha256(f.read()).hexdigest(),
                                         os.stat(p).st_mtime_ns)
  return out


def _changes(before, after):
  """[(what happened, relative path)] between two snapshots."""
  out = [("added", p) for p in sorted(set(after) - set(before))]
  out += [("removed", p) for p in sorted(set(before) - set(after))]
  out += [("rewrote (same bytes)" if before[p][0] == after[p][0] else
           "changed", p) for p in sorted(set(before) & set(after))
          if before[p] != after[p]]
  return out


def _truncate(pattern):
  paths = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
  assert paths, f"nothing to damage at {pattern}"
  for p in paths:
    with open(p, "r+b") as f:
      f.truncate(os.path.getsize(p) // 2)


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)


def _drop_adapter_dim(teacher):
  meta_path = os.path.join(teacher, checkpoint.METADATA_FILE)
  with open(meta_path) as f:
    meta = json.load(f)
  del meta["adapter_dim"]
  _write(meta_path, json.dumps(meta))


def _epoch_dirs(workdir):
  return [p for p in glob.glob(os.path.join(workdir, "**", "checkpoints", "*"),
                               recursive=True) if os.path.basename(p).isdigit()]


def _truncate_newest_epoch(workdir):
  newest = max(_epoch_dirs(workdir), key=lambda p: int(os.path.basename(p)))
  _truncate(os.path.join(newest, "**", "d", "*"))
  return {"epoch_dir": newest}


def _unfinished(damage):
  """A finished run killed just before its results.json, then damaged."""
  def prepare(workdir):
    os.remove(os.path.join(workdir, "results.json"))
    step = os.path.join(workdir, "eps_kd", "step_1")
    damage(step)
    return {"step": step}
  return prepare


def _earlier_checkpoint_kept(ctx, output):
  epoch = re.findall(r"diverged in epoch (\d+)|epoch (\d+)\b(?!/)", output)
  epoch = [int(a or b) for a, b in epoch]
  problems = []
  if epoch and epoch[-1] > 1 and not _epoch_dirs(ctx["workdir"]):
    problems.append(f"diverged in epoch {epoch[-1]}, no earlier checkpoint")
  if os.path.exists(os.path.join(ctx["workdir"], "results.json")):
    problems.append("results.json written for a diverged run")
  return problems


def _corrected_rerun_works(ctx, output):
  rc, out = _run(_cli(ctx["workdir"], {"classes.groups": GROUPS_8_2}))
  return [] if rc == 0 else [f"corrected rerun exit {rc}: {_tail(out)}"]


def _chmod(path, mode):
  subprocess.run(["chmod", "-R", mode, path], check=True)


def _restore_write_permission(ctx, output):
  _chmod(ctx["workdir"], "u+w")
  return []


GROUPS_8_2 = "((0,1,2,3,4,5,6,7),(8,9))"
DAMAGED = ("damaged", "not valid json", "cannot be read")
RESAVE = ("rerun", "re-save", "save_classifier")
META = os.path.join("{teacher}", checkpoint.METADATA_FILE)
CASES = [
    Case("1 diverging learning rate", "new",
         {"optim.learning_rate": "1e6", "train.epochs": 3,
          "train.checkpoint_every_epochs": 1,
          "runtime.checkpoint_min_seconds": 0},
         (("base", "eps_kd", "finetune"), "step", "epoch",
          ("1e+06", "1000000", "1e6"), "learning_rate"),
         trains=True, after=_earlier_checkpoint_kept),
    Case("2 batch larger than a step's training set", "new",
         {"classes.groups": GROUPS_8_2, "train.batch_size": 512},
         ("config.train.batch_size", "512"), after=_corrected_rerun_works),
    Case("3 teacher metadata not JSON", "teacher", {},
         (META, DAMAGED, RESAVE), damage=lambda t: _write(
             os.path.join(t, checkpoint.METADATA_FILE), '{"model": {"na')),
    Case("4 teacher metadata missing adapter_dim", "teacher", {},
         (META, "adapter_dim", ("an int", "integer")),
         damage=_drop_adapter_dim),
    Case("5a teacher orbax files truncated", "teacher", {},
         ("{teacher}", DAMAGED, RESAVE), damage=lambda t: _truncate(
             os.path.join(t, "variables", "d", "*"))),
    Case("5b teacher orbax files deleted", "teacher", {},
         ("{teacher}", DAMAGED, RESAVE), damage=lambda t: os.remove(
             os.path.join(t, "variables", "manifest.ocdbt"))),
    Case("5c step checkpoint truncated, interrupted run", "interrupted", {},
         ("{epoch_dir}", DAMAGED, "delete"), damage=_truncate_newest_epoch),
    Case("5d step classifier truncated, unfinished run", "finished", {},
         ("{step}", DAMAGED, ("delete", "rerun")),
         damage=_unfinished(lambda step: _truncate(
             os.path.join(step, "classifier", "variables", "d", "*")))),
    Case("6 step result.json damaged, unfinished run", "finished", {},
         (os.path.join("{step}", "result.json"), DAMAGED, "delete"),
         damage=_unfinished(lambda step: _write(
             os.path.join(step, "result.json"), '{"step": 1, "acc_all": 0.')),
         may_recompute=("eps_kd/step_1/result.json", "results.json",
                        "timing.json", "plots/*.png", "*/tensorboard/*")),
    Case("7 workdir is a regular file", "file", {},
         ("{workdir}", ("is a file", "not a directory"), "--workdir")),
    Case("8a aggregate: missing directory", "new", {},
         ("{workdir}", ("does not exist", "not found"), "cil_jax.sweep"),
         module="cil_jax.sweep.aggregate"),
    Case("8b aggregate: empty directory", "empty", {},
         ("{workdir}", ("sweep.json", "no finished run"), "cil_jax.sweep"),
         module="cil_jax.sweep.aggregate"),
    Case("9 finished run, read-only workdir, only reports", "finished", {},
         ("eps_kd", "finetune"), exit_zero=True,
         damage=lambda w: _chmod(w, "a-w"), after=_restore_write_permission),
    Case("finished run rerun with another config", "finished",
         {"train.epochs": 2}, ("{workdir}", "train.epochs", "--workdir")),
    Case("unknown method", "new", {"methods": "eps_kd,magic"},
         ("config.methods", "magic", "finetune")),
    Case("eps outside [0, 1]", "new", {"eps_kd.eps": "1.5"},
         ("config.eps_kd.eps", "1.5", "[0, 1]")),
    Case("overlapping class groups", "new",
         {"classes.groups": "((0,1,2),(2,3))"},
         ("config.classes.groups", "2", ("twice", "overlap", "more than one"))),
    Case("empty class group", "new", {"classes.groups": "((0,1),())"},
         ("config.classes.groups", "empty")),
    Case("class id not in the dataset", "new",
         {"classes.groups": "((0,1),(12,))"},
         ("config.classes.groups", "12", ("0..9", "0-9", "10 classes"))),
]


def _setup(case, case_dir, runs):
  """ctx: argv, kept (paths that must stay byte-identical), new (a workdir
  that must not be created unless the case trains) and the named paths."""
  workdir = os.path.join(case_dir, "target")
  ctx, flags, config = dict(workdir=workdir, kept=[workdir], new=None), {}, {}
  if case.start in RUN_FLAGS:
    shutil.copytree(runs[case.start], workdir)
    flags = RUN_FLAGS[case.start]
  elif case.start == "teacher":
    teacher = os.path.join(case_dir, "teacher")
    shutil.copytree(os.path.join(runs["finished"], "base", "step_0",
                                 "classifier"), teacher)
    ctx.update(teacher=teacher, kept=[teacher], new=workdir)
    flags, config = {"teacher.checkpoint": teacher}, {"config":
                                                      "add_classes.py"}
  elif case.start == "file":
    _write(workdir, "not a workdir\n")
  elif case.start == "empty":
    os.makedirs(workdir)
  else:
    ctx.update(kept=[], new=workdir)
  if case.damage:
    ctx.update(case.damage(ctx.get("teacher", workdir)) or {})
  ctx["argv"] = _cli(workdir, {**flags, **case.flags}, module=case.module,
                     **config)
  return ctx


def _check(case, case_dir, runs):
  """(problems, exit code, output) of one case."""
  ctx = _setup(case, case_dir, runs)
  before = {p: _snapshot(p) for p in ctx["kept"]}
  rc, output = _run(ctx["argv"])
  problems = []
  if ctx["new"] and not case.trains:
    if os.path.exists(ctx["new"]):
      problems.append(f"created {ctx['new']}")
    if re.search(r"epoch +\d+/", output):
      problems.append("trained before refusing")
  problems += case.after(ctx, output) if case.after else []
  changes = [(what, rel, p) for p in ctx["kept"]
             for what, rel in _changes(before[p], _snapshot(p))]
  if case.may_recompute and rc == 0:
    # The other answer the issue allows: the damaged file is recomputed.
    changes = [c for c in changes if not any(
        fnmatch.fnmatch(c[1], pattern) for pattern in case.may_recompute)]
    with open(os.path.join(ctx["workdir"], case.may_recompute[0])) as f:
      json.load(f)
  else:
    problems += [f"exit {rc}"] if (rc == 0) != case.exit_zero else []
    for word in case.words:
      options = [w.format(**ctx).lower() for w in (
          word if isinstance(word, tuple) else (word,))]
      if not any(o in output.lower() for o in options):
        problems.append(f"no {' / '.join(options)!r}")
  return problems + [f"{what} {rel} in {p}" for what, rel, p in changes], \
      rc, output


def _finished_run(base_dir):
  finished = os.path.join(base_dir, "finished")
  rc, out = _run(_cli(finished, {}))
  assert rc == 0, _tail(out)
  return finished


def _interrupted_run(base_dir):
  """A run killed in step 0 once two epoch checkpoints are complete."""
  interrupted = os.path.join(base_dir, "interrupted")
  with PARALLEL:
    process = subprocess.Popen(
        _cli(interrupted, RUN_FLAGS["interrupted"]), cwd=ROOT, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and len(_epoch_dirs(interrupted)) < 2:
      time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert len(_epoch_dirs(interrupted)) >= 2, "finished before the kill"
  # A kill during a save leaves orbax's temporary directory; whether a
  # resume sweeps it up is not what these cases test.
  for tmp in glob.glob(os.path.join(interrupted, "**", "*orbax-checkpoint-tmp*"),
                       recursive=True):
    shutil.rmtree(tmp, ignore_errors=True)  # nested ones go with their parent
  return interrupted


class _Runs(dict):
  """{name: future of a run's workdir}; a case waits only for its own."""

  def __getitem__(self, name):
    return super().__getitem__(name).result()


def _tail(output, lines=8):
  noise = ("I0000", "W0000", "E0000", "WARNING: All log messages")
  return "\n".join([l for l in output.splitlines()
                    if l.strip() and not l.startswith(noise)][-lines:])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  base_dir = str(tmp_path_factory.mktemp("runs"))
  with concurrent.futures.ThreadPoolExecutor(len(CASES) + 2) as pool:
    runs = _Runs(finished=pool.submit(_finished_run, base_dir),
                 interrupted=pool.submit(_interrupted_run, base_dir))
    futures = {c.name: pool.submit(_check, c, str(tmp_path_factory.mktemp(
        "case")), runs) for c in CASES}
    concurrent.futures.wait(futures.values())
  return {name: ([f"could not set up: {f.exception()!r}"], None, "")
          if f.exception() else f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_refuses_bad_input_clearly(case, outcomes):
  problems, rc, output = outcomes[case.name]
  assert not problems, (f"{case.name}: " + "; ".join(problems)
                        + f"\n(exit {rc}) output ends:\n{_tail(output)}")
