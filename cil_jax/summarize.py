"""Tables over many runs: mean and spread over seeds.

  python -m cil_jax.summarize --out docs/x.md RUNS_DIR [--base_config configs/x.py]

Every ``results.json`` under RUNS_DIR is one run. Runs whose paths differ
only in a ``seed_<n>`` component are seeds of one setting. Each row gives
the final old/new/all accuracy, average incremental accuracy and forgetting
as mean ± standard deviation over seeds (in %), and the command-line
overrides that reproduce it, relative to ``--base_config``.
"""

import importlib.util
import json
import os
import re
import shlex
import sys

import numpy as np
from absl import app
from absl import flags

_OUT = flags.DEFINE_string("out", None, "Markdown file to write.")
_BASE = flags.DEFINE_string("base_config", "configs/fashion_mnist.py",
                            "Config file the runs were launched from.")

METRICS = ("final_acc_old", "final_acc_new", "final_acc_all",
           "average_incremental_accuracy", "forgetting")
HEADERS = ("old", "new", "all", "avg. inc.", "forgetting")


def collect(runs_dir):
  """``{setting: {method: [results of each seed]}}`` and configs."""
  settings, configs = {}, {}
  for root, _, files in sorted(os.walk(runs_dir)):
    if "results.json" not in files:
      continue
    rel = os.path.relpath(root, runs_dir)
    setting = re.sub(r"(^|/)seed_\d+(?=/|$)", r"\1seed_*", rel)
    with open(os.path.join(root, "results.json")) as f:
      results = json.load(f)
    with open(os.path.join(root, "config.json")) as f:
      configs.setdefault(setting, []).append(json.load(f))
    for method, r in results["methods"].items():
      settings.setdefault(setting, {}).setdefault(method, []).append(r)
  return settings, configs


def overrides(config, base):
  """``--config.key=value`` flags turning ``base`` into ``config``."""
  flags_out = []
  for key in sorted(set(config) | set(base)):
    a, b = config.get(key), base.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      flags_out += [f.replace("--config.", f"--config.{key}.", 1)
                    for f in overrides(a, b)]
    elif a != b and key != "seed":
      value = tuple(map(tuple, a)) if key == "groups" else a
      flags_out.append(shlex.quote(f"--config.{key}={_literal(value)}"))
  return flags_out


def markdown(settings, configs, base, base_config="CONFIG", runs_dir=None):
  """One section per setting: the command that reproduces each seed
  (``{a,b}`` marks the seed; paths under ``runs_dir`` become ``RUNS``), and
  a table of mean ± std per method."""
  lines = []
  for setting, methods in settings.items():
    cfgs = configs[setting]
    seeds = sorted(c["seed"] for c in cfgs)
    seed_set = "{" + ",".join(map(str, seeds)) + "}"
    workdir = os.path.join("RUNS", setting.replace("seed_*",
                                                   f"seed_{seed_set}"))
    command = " ".join(
        ["python -m cil_jax.main --config", base_config, "--workdir", workdir]
        + overrides(cfgs[0], base) + [f"--config.seed={seed_set}"])
    if runs_dir:
      command = command.replace(os.path.abspath(runs_dir), "RUNS")
    command = re.sub(r"seed_\d+(?=/)", f"seed_{seed_set}", command)
    lines += [f"### {setting} (seeds {', '.join(map(str, seeds))})", "",
              "`" + command + "`", "",
              "| method | " + " | ".join(HEADERS) + " |",
              "|---|" + "---:|" * len(HEADERS)]
    for method, runs in methods.items():
      cells = [_mean_std([r[m] for r in runs]) for m in METRICS]
      lines.append(f"| {method} | " + " | ".join(cells) + " |")
    matrices = [np.array([row + [np.nan] * (len(r["accuracy_matrix"]) -
                                            len(row))
                          for row in r["accuracy_matrix"]])
                for runs in methods.values() for r in runs]
    if matrices[0].shape[0] > 2:
      lines += ["", "Accuracy matrices (mean over seeds, %; row t = after "
                "step t, column j = group j):", ""]
      for method, runs in methods.items():
        mean = np.mean([_square(r["accuracy_matrix"]) for r in runs], axis=0)
        lines.append(f"- {method}: " + "; ".join(
            " ".join(f"{100 * v:.1f}" for v in row[:t + 1])
            for t, row in enumerate(mean)))
    lines.append("")
  return "\n".join(lines)


def _square(matrix):
  n = len(matrix)
  return [row + [np.nan] * (n - len(row)) for row in matrix]


def _mean_std(values):
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def _literal(value):
  return value if isinstance(value, str) else repr(value).replace(" ", "")


def _load_base(path):
  spec = importlib.util.spec_from_file_location("base_config", path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))
  spec.loader.exec_module(module)
  return json.loads(module.get_config().to_json())


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("Give exactly one RUNS_DIR.")
  settings, configs = collect(argv[1])
  if not settings:
    raise SystemExit(f"No results.json under {argv[1]}.")
  text = markdown(settings, configs, _load_base(_BASE.value), _BASE.value,
                  argv[1])
  with open(_OUT.value, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
