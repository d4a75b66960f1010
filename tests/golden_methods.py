"""Golden runs of every method: what a restructuring must leave bit-identical.

Two short digits runs (two class steps each) cover the 13 methods: one run
of the 12 linear-head methods side by side, and lucir with its cosine head.
For each step directory the golden keeps the test metrics of
``result.json`` and a SHA-256 of the saved classifier's arrays (and of the
exemplar memory and penalty where a method leaves them), plus per-leaf sums
for a readable diff when a hash moves.

  python -m tests.golden_methods --write   # record (before a change)
  python -m tests.golden_methods           # compare, print differences

``tests/test_golden_methods.py`` runs the same comparison.
"""

import hashlib
import json
import os
import sys
import tempfile

import jax
import numpy as np

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "methods.json")
# Metrics of result.json that are the run's numbers (not its timings).
METRICS = ("acc_all", "acc_old", "acc_new", "eps", "logits_acc_all",
           "bic_alpha", "bic_beta", "uncorrected_acc_all", "memory_size",
           "confusion")

LINEAR = "eps_kd,lwf,finetune,joint,df_replay,ewc,si,mas,er,icarl,agem,bic"


def run_configs():
  from tests.helpers import small_config
  common = {"train.epochs": 2, "train.checkpoint_every_epochs": 1,
            "train.num_devices": 1, "outputs.plots": False,
            "memory.size": 100,
            "df_replay.samples": 128, "df_replay.inversion.steps": 5,
            "df_replay.inversion.batch_size": 64,
            "df_replay.head_finetune_steps": 10,
            "model.batch_norm": True}
  return {
      "linear": small_config(methods=LINEAR, **common),
      "lucir": small_config(**{**common, "methods": "lucir",
                               "model.batch_norm": False,
                               "model.cosine_head": True}),
  }


def _tree_digest(tree):
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  digest = hashlib.sha256()
  sums = {}
  for path, leaf in leaves:
    array = np.ascontiguousarray(np.asarray(leaf))
    name = jax.tree_util.keystr(path)
    digest.update(name.encode())
    digest.update(str(array.dtype).encode() + str(array.shape).encode())
    digest.update(array.tobytes())
    sums[name] = float(np.asarray(array, np.float64).sum())
  return digest.hexdigest(), sums


def _restore(path, composite):
  from cil_jax.classifier import checkpoint
  ocp = checkpoint.ocp()
  path = os.path.abspath(path)
  if composite:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
        path, ocp.args.Composite(
            variables=ocp.args.StandardRestore())).variables
  return ocp.Checkpointer(ocp.StandardCheckpointHandler()).restore(
      path, args=ocp.args.StandardRestore())


def step_digest(step_dir):
  with open(os.path.join(step_dir, "result.json")) as f:
    record = json.load(f)
  out = {k: record[k] for k in METRICS if k in record}
  out["params_sha"], out["param_sums"] = _tree_digest(
      _restore(os.path.join(step_dir, "classifier"), composite=True))
  penalty = os.path.join(step_dir, "penalty")
  if os.path.isdir(penalty):
    out["penalty_sha"], _ = _tree_digest(_restore(penalty, composite=False))
  memory = os.path.join(step_dir, "memory.json")
  if os.path.isfile(memory):
    with open(memory, "rb") as f:
      out["memory_sha"] = hashlib.sha256(f.read()).hexdigest()
  return out


def collect(workdir):
  digests = {}
  for root, dirs, files in os.walk(workdir):
    dirs.sort()
    if "result.json" in files and os.path.isdir(
        os.path.join(root, "classifier")):
      digests[os.path.relpath(root, workdir)] = step_digest(root)
  return digests


def machine():
  """What decides XLA's rounding besides the program: the CPU and jaxlib."""
  import jaxlib
  cpu = ""
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if
               l.startswith("model name")]
    cpu = names[0] if names else ""
  return {"cpu": cpu, "jaxlib": jaxlib.__version__}


def compute():
  from cil_jax import train
  golden = {"machine": machine()}
  for name, config in run_configs().items():
    with tempfile.TemporaryDirectory() as workdir:
      train.run(config, workdir)
      golden[name] = collect(workdir)
  return golden


def differences(expected, actual):
  """Readable lines, one per difference; empty when bit-identical."""
  lines = []
  expected = {k: v for k, v in expected.items() if k != "machine"}
  actual = {k: v for k, v in actual.items() if k != "machine"}
  for run in sorted(set(expected) | set(actual)):
    e, a = expected.get(run, {}), actual.get(run, {})
    for step in sorted(set(e) | set(a)):
      if step not in e or step not in a:
        lines.append(f"{run}/{step}: only in "
                     f"{'golden' if step in e else 'this run'}")
        continue
      for key in sorted(set(e[step]) | set(a[step])):
        if e[step].get(key) != a[step].get(key):
          if key == "param_sums":
            continue  # the hash names the difference; sums show its size
          detail = ""
          if key == "params_sha":
            moved = {k: (v, a[step]["param_sums"].get(k))
                     for k, v in e[step]["param_sums"].items()
                     if a[step]["param_sums"].get(k) != v}
            detail = f" (leaf sums moved: {moved})"
          lines.append(f"{run}/{step}: {key} {e[step].get(key)!r} -> "
                       f"{a[step].get(key)!r}{detail}"[:600])
  return lines


def close_differences(expected, actual, accuracy=0.03, relative=1e-3):
  """On another machine kind: each step's accuracies within ``accuracy``
  and each parameter leaf's sum within ``relative`` (of its size, at
  least 1e-3): rounding moves the last bits, a changed method moves
  these."""
  lines = []
  for run, steps in expected.items():
    if run == "machine":
      continue
    for step, e in steps.items():
      a = actual.get(run, {}).get(step)
      if a is None:
        lines.append(f"{run}/{step}: missing")
        continue
      for key in ("acc_all", "acc_old", "acc_new"):
        if (e.get(key) is None) != (a.get(key) is None) or (
            e.get(key) is not None and abs(e[key] - a[key]) > accuracy):
          lines.append(f"{run}/{step}: {key} {e.get(key)} -> {a.get(key)}")
      for leaf, value in e["param_sums"].items():
        other = a["param_sums"].get(leaf)
        if other is None or abs(other - value) > max(
            1e-3, relative * abs(value)):
          lines.append(f"{run}/{step}: sum of {leaf} {value} -> {other}")
  return lines


def main(argv):
  actual = compute()
  if "--write" in argv:
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:
      json.dump(actual, f, indent=1, sort_keys=True)
    print(f"wrote {GOLDEN}: {sum(len(actual[r]) for r in run_configs())} steps")
    return 0
  with open(GOLDEN) as f:
    expected = json.load(f)
  lines = differences(expected, actual)
  print("\n".join(lines) or "bit-identical")
  return 1 if lines else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
