"""The seed aggregator (cil_jax.sweep.seeds) and its two tables: a sweep's
summary and plots, and cil_jax.summarize with reproducing overrides."""

import json
import os
import subprocess
import sys

import pytest

from cil_jax import summarize
from cil_jax.sweep import seeds
from cil_jax.sweep import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(path, seed, acc_all, eps="auto"):
  os.makedirs(path)
  config = {"seed": seed, "eps_kd": {"eps": eps, "layers": "all"},
            "classes": {"groups": [[0, 1], [2]]}}
  results = {"methods": {"eps_kd": {
      "final_acc_old": 0.5, "final_acc_new": 1.0, "final_acc_all": acc_all,
      "average_incremental_accuracy": acc_all, "forgetting": None,
      "accuracy_matrix": [[1.0], [0.5, 1.0]]}}}
  for name, obj in (("config.json", config), ("results.json", results)):
    with open(os.path.join(path, name), "w") as f:
      json.dump(obj, f)


def test_seeds_are_grouped_and_averaged(tmp_path):
  _write_run(tmp_path / "a" / "seed_0" / "m", 0, 0.6)
  _write_run(tmp_path / "a" / "seed_1" / "m", 1, 0.8)
  _write_run(tmp_path / "b" / "seed_0", 0, 0.7, eps=0.3)
  settings, configs = summarize.collect(str(tmp_path))
  assert sorted(settings) == ["a/seed_*/m", "b/seed_*"]
  base = {"seed": 0, "eps_kd": {"eps": "auto", "layers": "all"},
          "classes": {"groups": [[0, 1, 2, 3]]}}
  text = summarize.markdown(settings, configs, base)
  # mean 70.0, population std 10.0 over the two seeds of "a".
  assert "| eps_kd | 50.0 ± 0.0 | 100.0 ± 0.0 | 70.0 ± 10.0 |" in text
  assert "--config.classes.groups=((0,1),(2,))" in text
  assert "--config.eps_kd.eps=0.3" in text
  assert "--config.seed={0,1}" in text


def test_cli_refuses_a_directory_without_runs(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "cil_jax.summarize", "--out",
       str(tmp_path / "out.md"), str(tmp_path)], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr
  assert f"No results.json under {tmp_path}" in result.stderr
  assert not (tmp_path / "out.md").exists()


def test_summary_and_plot_of_synthetic_rows(tmp_path):
  rows = [{"run": f"r{eps}{seed}", "seed": seed, "eps_kd.eps": eps,
           "method": "eps_kd", "final_acc_old": 0.5, "final_acc_new": 0.5,
           "final_acc_all": acc, "average_incremental_accuracy": acc,
           "forgetting": None}
          for eps, seed, acc in [(0.2, 0, 0.6), (0.2, 1, 0.8), (0.8, 0, 0.5),
                                 (0.8, 1, 0.5)]]
  summary = seeds.summarise(rows)
  assert [(e["eps_kd.eps"], e["seeds"]) for e in summary] == [(0.2, 2),
                                                              (0.8, 2)]
  assert summary[0]["final_acc_all_mean"] == pytest.approx(0.7)
  assert summary[0]["final_acc_all_std"] == pytest.approx(0.1)
  assert summary[0]["forgetting_mean"] is None
  assert "| 0.2 | eps_kd | 2 | 50.0 ± 0.0 | 50.0 ± 0.0 | 70.0 ± 10.0 |" in (
      table.markdown(summary, []))
  paths = table.plot(summary, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["eps_kd.eps.png"]
  assert os.path.getsize(paths[0]) > 10_000
