"""Seed aggregation and reproducing overrides of cil_jax.summarize."""

import json
import os

from cil_jax import summarize


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
