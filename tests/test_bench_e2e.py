"""The end-to-end benchmark's runner on the digits default, 2 epochs (about
10 s): a fresh process's outside figures, its timing buckets, its accuracy."""

import importlib.util
import os

from cil_jax.bench import e2e


def _default_methods():
  spec = importlib.util.spec_from_file_location(
      "default_config", os.path.join(e2e.CONFIGS, "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return {m.strip() for m in module.get_config().methods.split(",")}


def test_run_main_reports_wall_rss_buckets_and_accuracy():
  # conftest's 8 fake devices are for in-process tests; the child runs as a
  # user's process would, on the real CPU device.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  config_file, overrides = e2e.RUNS["digits"]
  result = e2e.run_main(config_file, [*overrides, "--config.train.epochs=2"],
                        env=env)
  assert result["wall_s"] > 0
  # JAX alone takes well over 100 MB; a figure below means a wrong unit.
  assert 100 < result["peak_rss_mb"] < 100_000
  timing = result["timing"]
  for bucket in ("imports", "train_data", "setup", "compiles",
                 "train_steps", "eval"):
    assert timing[f"{bucket}_seconds"] >= 0
  # The outside view includes interpreter start and exit.
  assert timing["wall_seconds"] <= result["wall_s"]
  assert set(result["accuracy"]) == _default_methods()
  assert all(0 <= a <= 100 for a in result["accuracy"].values())
