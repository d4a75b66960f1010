"""Runs the benchmarks, prints their tables and writes them as JSON.

  python -m cil_jax.bench --out bench.json [--quick] [--models mlp,cnn]
      [--steps N]
"""

import json
import jax
from absl import app
from absl import flags

from cil_jax.bench import measure
from cil_jax.bench import report
from cil_jax.bench.settings import resolve_settings
from cil_jax.bench.setup import GLOBAL_BATCH
from cil_jax.bench.setup import Setup
from cil_jax.bench.setup import random_data

_OUT = flags.DEFINE_string("out", None, "Where to write the results (JSON).")
_QUICK = flags.DEFINE_bool(
    "quick", False, "A smoke run of about a minute on a small CPU: 5 timed "
    "steps, no ResNet, 4 members of the MLP only.")
_MODELS = flags.DEFINE_list(
    "models", None, "Only these models (of mlp, cnn, resnet20); default: "
    "the settings' (all three, or mlp and cnn with --quick).")
_STEPS = flags.DEFINE_integer(
    "steps", None, "Timed steps per measurement instead of the settings' "
    "(20, or 5 with --quick); a 2 ms MLP step wants a few hundred for a "
    "figure steady to a few percent on a shared CPU.")
flags.mark_flag_as_required("out")


def bench_model(name, settings, devices):
  setup = Setup(name)
  print(f"{name}: {setup.num_params:,} parameters", flush=True)
  image_shape = setup.image_shape
  # One batch per step: every measurement trains warmup + steps steps.
  data = random_data(image_shape,
                     (settings.warmup + settings.steps) * GLOBAL_BATCH)
  result = {"image_shape": list(image_shape), "num_params": setup.num_params}
  result.update(measure.throughput(setup, devices, data, settings))
  result["precomputed_teacher_ms"] = measure.precomputed_teacher(
      setup, devices, data, settings)
  # As runs do: many steps per dispatch only where XLA keeps the step's
  # speed inside a loop (not convolutions on a CPU; see step_context.py).
  epoch = devices[0].platform != "cpu" or name == "mlp"
  result["floor_ms"], whole_epoch_ms = measure.floor_and_epoch(
      setup, devices, data, settings, epoch)
  if epoch:
    result["whole_epoch_ms"] = whole_epoch_ms
  augment = image_shape == (32, 32, 3)
  result["input"] = {"augment": augment, "prestaged_ms": result["step_ms"],
                     **measure.input_pipelines(setup, devices, data, augment,
                                               settings)}
  if name in settings.member_models:
    result["members"] = measure.members_vs_sequential(setup, devices, data,
                                                      settings)
  if len(devices) > 1:
    result["devices"] = {
        "1": measure.throughput(setup, devices[:1], data, settings),
        str(len(devices)): {k: result[k] for k in
                            ("compile_s", "step_ms", "examples_per_s")}}
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    settings = resolve_settings(_QUICK.value, _MODELS.value, _STEPS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  devices = jax.local_devices()
  if GLOBAL_BATCH % len(devices):
    raise ValueError(f"The global batch {GLOBAL_BATCH} does not split over "
                     f"{len(devices)} devices; use a power of two of them.")
  results = {"backend": jax.default_backend(),
             "device_kind": devices[0].device_kind,
             "num_devices": len(devices), "global_batch": GLOBAL_BATCH,
             "jax_version": jax.__version__,
             "settings": settings._asdict(), "models": {}}
  for name in settings.models:
    results["models"][name] = bench_model(name, settings, devices)
  report.print_report(results)
  with open(_OUT.value, "w") as f:
    json.dump(results, f, indent=2)
  print(f"\nwrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
