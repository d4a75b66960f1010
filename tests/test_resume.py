"""A run killed mid-way resumes from its checkpoints to the same numbers."""

import json
import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--config.methods=eps_kd", "--config.train.epochs=12",
         "--config.train.checkpoint_every_epochs=3",
         "--config.runtime.checkpoint_min_seconds=0",
         "--config.train.num_devices=1", "--config.model.hidden_sizes=(64,)"]


def _command(workdir, cache):
  return [sys.executable, "-m", "cil_jax.main", "--config",
          os.path.join(ROOT, "configs", "default.py"), "--workdir",
          str(workdir), *FLAGS,
          f"--config.runtime.compilation_cache_dir={cache}"]


def _cache_counts(workdir):
  with open(os.path.join(workdir, "timing.json")) as f:
    timing = json.load(f)
  return (timing["compilation_cache_hits"],
          timing["compilation_cache_requests"])


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_killed_run_resumes_to_the_same_results(tmp_path):
  # All three processes share a persistent compilation cache: the first
  # fills it, the others load every program from it, and compute the same.
  cache = tmp_path / "xla_cache"
  reference = tmp_path / "reference"
  subprocess.run(_command(reference, cache), cwd=ROOT, check=True,
                 capture_output=True)
  hits, requests = _cache_counts(reference)
  # A fresh cache: every program is written, save one compiled twice in
  # one process (the jitted init of two optimizers alike), found there the
  # second time.
  assert hits <= 1 and requests > 10
  assert len(os.listdir(cache)) >= requests - hits

  interrupted = tmp_path / "interrupted"
  process = subprocess.Popen(_command(interrupted, cache), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
  for line in process.stdout:
    # Killed in step 1 after its epoch-6 checkpoint was started: the run
    # has a finished step 0 and a half-trained step 1 on disk.
    if line.startswith("eps_kd step 1 epoch   8/12"):
      process.send_signal(signal.SIGKILL)
      break
  process.wait()
  assert process.returncode == -signal.SIGKILL
  assert not os.path.exists(interrupted / "results.json")
  assert os.path.exists(interrupted / "base" / "step_0" / "result.json")
  assert os.listdir(interrupted / "eps_kd" / "step_1" / "checkpoints")

  resumed = subprocess.run(_command(interrupted, cache), cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout
  assert "base step 0: finished earlier" in resumed
  assert "eps_kd step 1: resumed from the epoch" in resumed
  assert "eps_kd step 1 epoch   1/12" not in resumed

  # Most programs came from the cache (resuming compiles a few of its own:
  # 23 of 29 loaded when written).
  hits, requests = _cache_counts(interrupted)
  assert requests * 3 // 4 <= hits <= requests
  want, got = _results(reference), _results(interrupted)
  for r in (want, got):  # wall-clock times differ, nothing else may
    for step in r["methods"]["eps_kd"]["steps"]:
      step.pop("train_seconds")
  assert got == want
