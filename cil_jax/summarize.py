"""Tables over many runs: mean and spread over seeds.

  python -m cil_jax.summarize --out docs/x.md RUNS_DIR [--base_config configs/x.py]

Every ``results.json`` under RUNS_DIR is one run (of ``cil_jax.main``;
sweeps have ``python -m cil_jax.sweep.aggregate``). Runs whose paths differ
only in a ``seed_<n>`` component are seeds of one setting. Each row gives
the final old/new/all accuracy, average incremental accuracy and forgetting
as mean ± standard deviation over seeds (in %, ``cil_jax.sweep.seeds``), and
the command-line overrides that reproduce it, relative to ``--base_config``.
"""

import json
import os
import re
import shlex

import numpy as np
from absl import app
from absl import flags

from cil_jax import config_files
from cil_jax import jsonio
from cil_jax.sweep import seeds

_OUT = flags.DEFINE_string("out", None, "Markdown file to write.")
_BASE = flags.DEFINE_string("base_config", "configs/fashion_mnist.py",
                            "Config file the runs were launched from.")


def collect(runs_dir):
  """``{setting: {method: [results of each seed]}}`` and configs."""
  settings, configs = {}, {}
  for root, _, files in sorted(os.walk(runs_dir)):
    if "results.json" not in files:
      continue
    rel = os.path.relpath(root, runs_dir)
    setting = re.sub(r"(^|/)seed_\d+(?=/|$)", r"\1seed_*", rel)
    results = jsonio.read_json(os.path.join(root, "results.json"))
    configs.setdefault(setting, []).append(
        jsonio.read_json(os.path.join(root, "config.json")))
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
    seed_ids = sorted(c["seed"] for c in cfgs)
    seed_set = "{" + ",".join(map(str, seed_ids)) + "}"
    workdir = os.path.join("RUNS", setting.replace("seed_*",
                                                   f"seed_{seed_set}"))
    command = " ".join(
        ["python -m cil_jax.main --config", base_config, "--workdir", workdir]
        + overrides(cfgs[0], base) + [f"--config.seed={seed_set}"])
    if runs_dir:
      command = command.replace(os.path.abspath(runs_dir), "RUNS")
    command = re.sub(r"seed_\d+(?=/)", f"seed_{seed_set}", command)
    lines += [f"### {setting} (seeds {', '.join(map(str, seed_ids))})", "",
              "`" + command + "`", "",
              "| method | " + " | ".join(seeds.HEADERS) + " |",
              "|---|" + "---:|" * len(seeds.HEADERS)]
    for method, runs in methods.items():
      cells = seeds.cells(seeds.stats(runs))
      lines.append(f"| {method} | " + " | ".join(cells) + " |")
    num_steps = len(next(iter(methods.values()))[0]["accuracy_matrix"])
    if num_steps > 2:  # with two steps the table above says it all
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


def _literal(value):
  return value if isinstance(value, str) else repr(value).replace(" ", "")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("Give exactly one RUNS_DIR.")
  try:
    base = json.loads(config_files.load(_BASE.value).get_config().to_json())
    settings, configs = collect(argv[1])
  except (FileNotFoundError, ValueError) as e:  # no base config; damaged file
    raise app.UsageError(str(e)) from None
  if not settings:
    raise app.UsageError(
        f"No results.json under {argv[1]}: give a directory holding runs of "
        f"python -m cil_jax.main (each run's workdir gets a results.json).")
  text = markdown(settings, configs, base, _BASE.value, argv[1])
  with open(_OUT.value, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
