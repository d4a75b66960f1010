"""Per-op profile of a train step: where its milliseconds go.

  python -m cil_jax.bench.profile --out profile.json [--model mlp]
      [--program epoch|step] [--steps N]

Runs the benchmark's train step (``cil_jax.bench.setup``: an expanded
student, the teacher's logits precomputed, the masked Adam, random data) on
one device, as a compiled program: ``epoch`` is ``pmap_train_epoch``, up to
``CHUNK`` steps per dispatch on device-resident data, as runs of MLPs train
on a CPU and every model on an accelerator; ``step`` is one step per
dispatch on pre-staged batches, as convolutional models train on a CPU.
After one untimed pass, ``--steps`` steps run under JAX's profiler; each
executed HLO instruction's time is summed (``op_times``) and printed per
step, slowest first, with the JAX operation it came from and its part of
the step (model forward and backward, loss, optimizer and the rest), beside
the step's wall time under the profiler (``python -m cil_jax.bench`` gives
the floor to compare it with: the forward and backward pass alone). Ops
may overlap (XLA runs independent ones on the CPU's threads), and time
between them (dispatch, synchronisation, idle threads) is in no op.
"""

import glob
import json
import os
import tempfile
import time

import jax
import numpy as np
from absl import app
from absl import flags

from cil_jax.step import train_step as ts
from cil_jax.bench import op_times
from cil_jax.bench.setup import GLOBAL_BATCH
from cil_jax.bench.setup import MODELS
from cil_jax.bench.setup import RNG
from cil_jax.bench.setup import Setup
from cil_jax.bench.setup import random_data
from cil_jax.bench.setup import resident_data
from cil_jax.bench.setup import stage
from cil_jax.bench.setup import staged_batch
from cil_jax.data import train_data

PROGRAMS = ("epoch", "step")


def _epoch_program(setup, devices, data):
  """``(compiled, state, run)``: ``run(compiled, state)`` trains one pass
  over ``data`` (``CHUNK`` steps a dispatch) and returns the new state."""
  feed_data = resident_data(setup, data, devices)
  chunks = list(train_data.epoch_chunks(feed_data, 0, 1, ts.CHUNK))
  state = setup.state(devices)
  compiled = ts.pmap_train_epoch(setup.step, feed_data.batch_fn).lower(
      state, {}, feed_data.resident, chunks[0], RNG).compile()

  def run(compiled, state):
    for chunk in chunks:
      state, metrics = compiled(state, {}, feed_data.resident, chunk, RNG)
    return jax.block_until_ready((state, metrics))[0]
  return compiled, state, run


def _step_program(setup, devices, data):
  """As ``_epoch_program``, one step a dispatch on pre-staged batches."""
  logits = jax.jit(lambda v, x: setup.teacher.apply(v, x, train=False))(
      setup.teacher_variables, data["image"])
  staged = stage(dict(data, teacher_logits=np.asarray(logits)), devices)
  state = setup.state(devices)
  compiled = ts.pmap_train_step(setup.step, staged_batch).lower(
      state, {}, {}, staged[0], RNG).compile()

  def run(compiled, state):
    for batch in staged:
      state, metrics = compiled(state, {}, {}, batch, RNG)
    return jax.block_until_ready((state, metrics))[0]
  return compiled, state, run


def profile(model, program, steps, devices):
  """``{"rows", "parts", "ops_ms_per_step", "wall_ms_per_step", ...}`` of
  ``steps`` steps of ``model``'s train ``program`` on ``devices``."""
  if program not in PROGRAMS:
    raise ValueError(f"--program must be one of {PROGRAMS}, not "
                     f"{program!r}.")
  if model not in MODELS:
    raise ValueError(f"--model must be one of {sorted(MODELS)}, not "
                     f"{model!r}.")
  if steps < 1:
    raise ValueError(f"--steps must be at least 1, not {steps}.")
  setup = Setup(model)
  data = random_data(setup.image_shape, steps * GLOBAL_BATCH)
  build = _epoch_program if program == "epoch" else _step_program
  compiled, state, run = build(setup, devices, data)
  state = run(compiled, state)  # untimed: first dispatches, allocations
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      run(compiled, state)
      wall = time.perf_counter() - start
    traces = glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"),
                       recursive=True)
    if not traces:
      raise RuntimeError(f"jax.profiler wrote no perfetto trace under "
                         f"{log_dir}; this JAX cannot be profiled here.")
    events = op_times.read_trace(traces[0])
  rows = op_times.per_step(events, op_times.instructions(compiled.as_text()),
                           steps)
  return {"model": model, "program": program, "steps": steps,
          "device_kind": devices[0].device_kind,
          "jax_version": jax.__version__,
          "wall_ms_per_step": 1e3 * wall / steps,
          "ops_ms_per_step": sum(r["ms_per_step"] for r in rows),
          "parts": op_times.by_part(rows), "rows": rows}


def print_profile(result, top=25):
  print(f"{result['model']} ({result['program']} program), "
        f"{result['steps']} profiled steps on {result['device_kind']}: "
        f"{result['wall_ms_per_step']:.3f} ms a step wall (under the "
        f"profiler), {result['ops_ms_per_step']:.3f} ms in its ops (XLA "
        f"runs independent ops side by side on the CPU's threads)")
  print("\nms/step  share  part")
  for name, ms in result["parts"].items():
    print(f"{ms:7.3f}  {ms / result['ops_ms_per_step']:5.1%}  {name}")
  print(f"\n{'ms/step':>7}  {'calls':>5}  {'op':<32} {'part':<18} from")
  for row in result["rows"][:top]:
    print(f"{row['ms_per_step']:7.3f}  {row['calls_per_step']:5.2g}  "
          f"{row['op'][:32]:<32} {row['part']:<18} "
          f"{op_times.short_name(row['op_name'])[-60:]}")
  if len(result["rows"]) > top:
    rest = sum(r["ms_per_step"] for r in result["rows"][top:])
    print(f"{rest:7.3f}         ({len(result['rows']) - top} more ops)")


def _define_flags():
  """The command's flags, defined only when it runs as ``__main__``: a test
  importing this module beside another command (``cil_jax.summarize``'s
  ``--out``) must not define them twice."""
  flags.DEFINE_string("out", None, "Where to write the profile (JSON).")
  flags.DEFINE_string("model", "mlp", f"One of {sorted(MODELS)}.")
  flags.DEFINE_string(
      "program", "epoch", "epoch: many steps per dispatch on device-resident "
      "data (MLP runs on a CPU, every run on an accelerator); step: one step "
      "per dispatch (convolutional runs on a CPU).")
  flags.DEFINE_integer(
      "steps", 93, "Profiled steps (93: one epoch of a Fashion-MNIST class "
      "pair at batch 128).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    result = profile(flags.FLAGS.model, flags.FLAGS.program,
                     flags.FLAGS.steps, jax.local_devices()[:1])
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print_profile(result)
  if flags.FLAGS.out:
    with open(flags.FLAGS.out, "w") as f:
      json.dump(result, f, indent=2)
    print(f"\nwrote {flags.FLAGS.out}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
