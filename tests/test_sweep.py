"""The sweep launcher end to end on tiny digits runs: local pool, failures,
resume, aggregation, Ray on a local instance, and bad input refused."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cil_jax.sweep import grid
from cil_jax.sweep import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP_CONFIG = textwrap.dedent("""
    from cil_jax import config_files
    from cil_jax.sweep import grid

    default = config_files.from_checkout("default")


    def get_config():
      config = default.get_config()
      config.methods = "eps_kd,finetune"
      config.model.hidden_sizes = (32,)
      config.train.epochs = 2
      config.train.num_devices = 1
      return config


    def get_sweep():
      return grid.concat(
          grid.product(grid.axis("seed", [0, 1]),
                       grid.axis("eps_kd.eps", ["0.2"])),
          grid.axis("eps_kd.eps", ["2.0"]))  # invalid: must fail alone
""")


GROUP_SWEEP_CONFIG = SWEEP_CONFIG[:SWEEP_CONFIG.index("def get_sweep")] + (
    textwrap.dedent("""
    def get_sweep():
      # Seed 1: a group of three runs. Seed 0: a group whose eps=2.0 is
      # invalid, so it fails and its runs are retried one by one.
      return grid.concat(
          grid.product(grid.axis("seed", [1]), grid.concat(
              grid.axis("eps_kd.eps", ["0.2", "0.5"]),
              grid.axis("methods", ["finetune"]))),
          grid.product(grid.axis("seed", [0]),
                       grid.axis("eps_kd.eps", ["0.2", "2.0"])))
    """))


def test_grid_product_zip_concat_and_names():
  g = grid.product(grid.axis("seed", [0, 1]),
                   grid.zip_(grid.axis("eps_kd.eps", ["0.1", "0.5"]),
                             grid.axis("eps_kd.kd_temperature", [1.0, 2.0])))
  assert len(g) == 4
  assert g[1] == {"seed": 0, "eps_kd.eps": "0.5",
                  "eps_kd.kd_temperature": 2.0}
  assert len(grid.concat(g, grid.axis("methods", ["joint"]))) == 5
  with pytest.raises(ValueError, match="equal length"):
    grid.zip_(grid.axis("a", [1, 2]), grid.axis("b", [1]))
  with pytest.raises(ValueError, match="appear in two crossed grids"):
    grid.product(grid.axis("a", [1]), grid.axis("a", [2]))
  assert grid.run_name({"seed": 1, "eps_kd.eps": "0.5"}) == "eps=0.5_seed=1"
  assert grid.run_name({"classes.groups": ((0, 1), (2,))}) == "groups=0+1,2"
  with pytest.raises(ValueError, match="twice"):
    grid.check_unique([{"seed": 1}, {"seed": 1}])


def _sweep(config_path, workdir, *extra):
  return _cli("cil_jax.sweep", "--config", str(config_path), "--workdir",
              str(workdir), *extra)


def _cli(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory):
  path = tmp_path_factory.mktemp("cfg") / "tiny_sweep.py"
  path.write_text(SWEEP_CONFIG)
  return path


def test_local_sweep_runs_lists_failures_resumes_and_aggregates(
    sweep_config, tmp_path):
  workdir = tmp_path / "sweep"
  first = _sweep(sweep_config, workdir, "--workers=2")
  assert first.returncode == 1, first.stderr[-2000:]
  with open(workdir / "failures.json") as f:
    failures = json.load(f)
  assert list(failures) == ["eps=2.0"]
  assert "eps=2.0 is outside [0, 1]" in failures["eps=2.0"]
  assert "1 of 3 runs failed" in first.stdout
  finished = sorted(p for p in os.listdir(workdir)
                    if os.path.exists(workdir / p / "results.json"))
  assert finished == ["eps=0.2_seed=0", "eps=0.2_seed=1"]
  # The runs wrote their programs (ten or so: train, eval, init, checks)
  # to the sweep's compilation cache.
  assert len(os.listdir(workdir / "xla_cache")) >= 8

  # A rerun skips the finished runs and retries only the failed one.
  mtime = os.path.getmtime(workdir / "eps=0.2_seed=0" / "results.json")
  second = _sweep(sweep_config, workdir, "--workers=2")
  assert "3 runs in" in second.stdout and "2 finished, 1 to run" in (
      second.stdout)
  assert os.path.getmtime(workdir / "eps=0.2_seed=0" / "results.json") == mtime

  aggregate = _cli("cil_jax.sweep.aggregate", "--workdir", str(workdir))
  assert aggregate.returncode == 0, aggregate.stderr[-2000:]
  summary = (workdir / "summary.md").read_text()
  # 2 methods, each over the 2 seeds; the failed run listed.
  assert summary.count("| 2 |") == 2
  assert "Unfinished runs (1): eps=2.0" in summary
  with open(workdir / "runs.csv") as f:
    assert len(f.readlines()) == 1 + 2 * 2

  # The same file with another get_config() must not mix with these runs.
  record = (workdir / "sweep.json").read_bytes()
  sweep_config.write_text(SWEEP_CONFIG.replace("epochs = 2", "epochs = 3"))
  try:
    refused = _sweep(sweep_config, workdir)
  finally:
    sweep_config.write_text(SWEEP_CONFIG)
  assert refused.returncode != 0
  assert "get_config() differs" in refused.stderr
  assert "Traceback" not in refused.stderr
  assert (workdir / "sweep.json").read_bytes() == record


def test_runs_group_by_everything_but_member_keys_and_split_for_workers():
  runs = {f"eps{i}": {"seed": 0, "eps_kd.eps": str(i / 10)} for i in range(5)}
  runs["finetune"] = {"seed": 0, "methods": "finetune"}
  runs["seed1"] = {"seed": 1, "eps_kd.eps": "0.1"}
  runs["groups"] = {"seed": 0, "classes.groups": ((0,), (1,))}
  assert tasks.group_runs(runs, 1) == [
      ["eps0", "eps1", "eps2", "eps3", "eps4", "finetune"], ["seed1"],
      ["groups"]]
  split = tasks.group_runs(runs, 5)
  assert sorted(map(len, split)) == [1, 1, 1, 2, 3]
  assert sorted(sum(split, [])) == sorted(runs)


def test_grouped_sweep_trains_each_base_once_and_isolates_failures(tmp_path):
  config_path = tmp_path / "group_sweep.py"
  config_path.write_text(GROUP_SWEEP_CONFIG)
  workdir = tmp_path / "sweep"
  result = _sweep(config_path, workdir, "--workers=1", "--grouping=serial")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "2 task(s): 2 group(s) (serial), 1 worker(s)" in result.stdout
  with open(workdir / "failures.json") as f:
    failures = json.load(f)
  assert list(failures) == ["eps=2.0_seed=0"]
  assert "its group failed first" in failures["eps=2.0_seed=0"]
  logs = {}
  for name in os.listdir(workdir / "groups"):
    if name.endswith(".log"):
      logs[name] = (workdir / "groups" / name).read_text()
  good = [log for log in logs.values() if "3 run(s)" in log]
  assert len(good) == 1 and good[0].count("base step 0 epoch   1/2") == 1
  seed1 = ["eps=0.2_seed=1", "eps=0.5_seed=1", "methods=finetune_seed=1"]
  for name in seed1:
    assert os.path.exists(workdir / name / "results.json")
    assert not os.path.exists(workdir / name / "log.txt")  # not run alone
  # The failed group's valid run was finished on its own.
  assert os.path.exists(workdir / "eps=0.2_seed=0" / "results.json")
  with open(workdir / "eps=0.2_seed=1" / "results.json") as f:
    eps_02 = json.load(f)["methods"]["eps_kd"]
  with open(workdir / "eps=0.5_seed=1" / "results.json") as f:
    eps_05 = json.load(f)["methods"]["eps_kd"]
  assert eps_02["steps"][0] == eps_05["steps"][0]  # one C_A
  assert eps_02["steps"][1]["eps"] == 0.2 and eps_05["steps"][1]["eps"] == 0.5


def test_ray_backend_on_a_local_instance(sweep_config, tmp_path):
  workdir = tmp_path / "ray_sweep"
  result = _sweep(sweep_config, workdir, "--backend=ray", "--cpus_per_run=1")
  assert result.returncode == 1, result.stderr[-3000:]
  finished = [p for p in os.listdir(workdir)
              if os.path.exists(workdir / p / "results.json")]
  assert len(finished) == 2
  with open(workdir / "failures.json") as f:
    assert list(json.load(f)) == ["eps=2.0"]


def _snapshot(path):
  """Every path under ``path`` with its bytes: to show nothing was written."""
  return {str(p): p.read_bytes() if p.is_file() else None
          for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("case, config, extra, words", [
    ("missing config", "{tmp}/nope.py", [],
     ["nope.py: no such file", "get_sweep()"]),
    ("config without get_sweep", "{tmp}/no_sweep.py", [],
     ["no_sweep.py has no get_sweep()", "cil_jax/sweep/grid.py"]),
    ("filter matching nothing", "{cfg}", ["--filter=^zzz"],
     ["--filter='^zzz' matches none of the 3 runs", "--dry_run"]),
    ("invalid filter", "{cfg}", ["--filter=eps=(0"],
     ["not a valid regular expression", "fix or quote it"]),
    ("workdir is a file", "{cfg}", [], ["sweep is a file; give a directory"]),
])
def test_sweep_refuses_bad_input_and_writes_nothing(
    case, config, extra, words, sweep_config, tmp_path):
  (tmp_path / "no_sweep.py").write_text("def get_config():\n  return None\n")
  if case == "workdir is a file":
    (tmp_path / "sweep").write_text("not a directory")
  before = _snapshot(tmp_path)
  result = _sweep(config.format(tmp=tmp_path, cfg=sweep_config),
                  tmp_path / "sweep", *extra)
  assert result.returncode != 0, case
  assert "Traceback" not in result.stderr, result.stderr
  for word in words:
    assert word in result.stderr, (case, result.stderr)
  assert _snapshot(tmp_path) == before, case


@pytest.mark.parametrize("case, words", [
    ("missing", ["not_a_sweep does not exist: expected a sweep directory",
                 "python -m cil_jax.sweep --config CONFIG"]),
    ("empty", ["not_a_sweep has no sweep.json: expected a sweep directory",
               "Run the sweep first"]),
    ("damaged", ["sweep.json is damaged (not valid JSON",
                 "delete it and rerun python -m cil_jax.sweep"]),
])
def test_aggregate_refuses_a_directory_without_a_sweep(case, words, tmp_path):
  workdir = tmp_path / "not_a_sweep"
  if case != "missing":
    workdir.mkdir()
  if case == "damaged":
    (workdir / "sweep.json").write_text('{"runs": {')
  before = _snapshot(tmp_path)
  result = _cli("cil_jax.sweep.aggregate", "--workdir", str(workdir))
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr
  for word in words:
    assert word in result.stderr, (case, result.stderr)
  assert _snapshot(tmp_path) == before


def test_dry_run_lists_commands_and_writes_nothing(sweep_config, tmp_path):
  workdir = tmp_path / "sweep"
  result = _sweep(sweep_config, workdir, "--dry_run", "--grouping=none")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "3 runs in" in result.stdout
  assert result.stdout.count("cil_jax.main --config") == 3
  assert not workdir.exists()
