"""Benchmarks of the eps-KD train step (a 5-class teacher, its 10-class
student, Adam, global batch 128): compile time, steady-state throughput,
sweep members in one program against one run after another, input pipeline
overhead, and one against all local devices.

  python -m cil_jax.bench --out bench.json [--quick]

For the device comparison on a CPU, fake devices must be asked for before
JAX starts: XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import json
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from cil_jax import members
from cil_jax import optim
from cil_jax import partition
from cil_jax import train_step as ts
from cil_jax.data import train_data
from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables
from configs import default

_OUT = flags.DEFINE_string("out", None, "Where to write the results (JSON).")
_QUICK = flags.DEFINE_bool(
    "quick", False, "A smoke run of about a minute on a small CPU: 5 timed "
    "steps, no ResNet, 4 members of the MLP only.")
flags.mark_flag_as_required("out")

GLOBAL_BATCH = 128
NUM_OLD = 5
NUM_CLASSES = 10
RNG = jax.random.PRNGKey(0)
# name -> (config.model overrides, image shape); CIFAR-shaped inputs are
# augmented in the input pipelines, as the CIFAR configs do.
MODELS = {
    "mlp": ({"name": "mlp", "hidden_sizes": (400, 400)}, (28, 28, 1)),
    "cnn": ({"name": "cnn"}, (32, 32, 3)),
    "resnet20": ({"name": "resnet", "resnet_depth": 20, "resnet_width": 16},
                 (32, 32, 3)),
}


class Settings(NamedTuple):
  warmup: int
  steps: int
  members: int
  models: tuple
  member_models: tuple


FULL = Settings(warmup=2, steps=20, members=16,
                models=("mlp", "cnn", "resnet20"),
                member_models=("mlp", "cnn"))
QUICK = Settings(warmup=2, steps=5, members=4, models=("mlp", "cnn"),
                 member_models=("mlp",))


class Setup:
  """A model's teacher, expanded student, masked optimizer and step."""

  def __init__(self, name):
    overrides, self.image_shape = MODELS[name]
    config = default.get_config()
    config.model.update(overrides)
    self.student = build_model(config.model, NUM_CLASSES)
    self.teacher = build_model(config.model, NUM_OLD)
    self.teacher_variables = random_variables(self.teacher, self.image_shape,
                                              seed=1)
    self.variables = expand_variables(
        self.teacher_variables,
        random_variables(self.student, self.image_shape, seed=2), NUM_OLD)
    params = self.variables["params"]
    self.num_params = sum(x.size for x in jax.tree.leaves(params))
    self.rules = partition.preset_rules("all", params)
    self.tx = partition.masked_optimizer(
        optim.make_optimizer(config.optim, total_steps=10_000),
        partition.trainable_labels(params, self.rules))
    self.step = self.make_step(self.tx)

  def make_step(self, tx):
    """A new per-device step, so a pmap of it compiles afresh."""
    return ts.make_train_step(self.student.apply, self.teacher.apply, tx,
                              "full", False, partition.rule_labeler(self.rules))

  def state(self, devices, eps=0.5):
    return ts.replicate(ts.create_state(self.variables, self.tx, eps, 2.0),
                        devices)


def random_variables(model, image_shape, seed):
  """Variables of ``model``'s shapes drawn in numpy: ``init`` of the ResNet
  alone takes XLA half a minute to compile on a CPU."""
  shapes = jax.eval_shape(model.init, RNG, jnp.zeros((1, *image_shape)))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    noise = rng.normal(size=leaf.shape)
    if name == "kernel":
      value = noise / np.sqrt(np.prod(leaf.shape[:-1]))
    elif name in ("scale", "var"):
      value = 1.0 + 0.1 * np.abs(noise)
    else:  # bias, mean
      value = 0.1 * noise
    return value.astype(leaf.dtype)
  return jax.tree.map_with_path(draw, shapes)


def random_data(image_shape, num_examples):
  rng = np.random.default_rng(0)
  return {"image": rng.normal(size=(num_examples, *image_shape))
                      .astype(np.float32),
          "label": rng.integers(NUM_OLD, NUM_CLASSES, num_examples)
                      .astype(np.int32)}


def stage(data, devices):
  """Global batches on the devices, ``[devices, per_device, ...]``, laid out
  like the step's other inputs so no transfer is left for the step."""
  sharding = NamedSharding(Mesh(np.asarray(devices), (ts.BATCH_AXIS,)),
                           PartitionSpec(ts.BATCH_AXIS))
  num_batches = len(data["label"]) // GLOBAL_BATCH
  return [jax.device_put(jax.tree.map(
      lambda x: x[i * GLOBAL_BATCH:(i + 1) * GLOBAL_BATCH].reshape(
          len(devices), -1, *x.shape[1:]), data), sharding)
          for i in range(num_batches)]


def timed_steps(step_fn, state, teacher, feeds, rng, warmup):
  """One step per feed; mean seconds of the steps after ``warmup``."""
  feeds = iter(feeds)
  for _ in range(warmup):
    state, _ = step_fn(state, teacher, next(feeds), rng)
  jax.block_until_ready(state)
  start, count = time.perf_counter(), 0
  for feed in feeds:
    state, metrics = step_fn(state, teacher, feed, rng)
    count += 1
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - start) / count


def throughput(setup, devices, data, settings):
  """Compile time and steady-state speed on pre-staged device batches."""
  step_fn = ts.pmap_train_step(setup.step)
  state = setup.state(devices)
  teacher = ts.replicate(setup.teacher_variables, devices)
  staged = stage(data, devices)
  start = time.perf_counter()
  step_fn.lower(state, teacher, staged[0], RNG).compile()
  compile_s = time.perf_counter() - start
  _, step_s = timed_steps(step_fn, state, teacher, staged, RNG,
                          settings.warmup)
  return {"compile_s": compile_s, "step_ms": 1e3 * step_s,
          "steps_per_s": 1 / step_s, "examples_per_s": GLOBAL_BATCH / step_s}


def input_pipelines(setup, devices, data, augment, settings):
  """Step time fed by tf.data on the host and by on-device gathers."""
  base = tf.data.Dataset.from_tensor_slices(data)
  num_examples = len(data["label"])
  teacher = ts.replicate(setup.teacher_variables, devices)
  result = {}
  for cls in (train_data.HostTrainData, train_data.DeviceTrainData):
    feed = cls(base, num_examples, range(NUM_OLD, NUM_CLASSES), augment,
               GLOBAL_BATCH, devices, shuffle_buffer=num_examples)
    _, step_s = timed_steps(feed.make_step(setup.step), setup.state(devices),
                            teacher, feed.epoch([0], 1), RNG, settings.warmup)
    result[f"{feed.mode}_ms"] = 1e3 * step_s
  return result


def members_vs_sequential(setup, devices, data, settings):
  """H members in one vmapped program against H runs one after another,
  each trained ``warmup + steps`` steps; end to end includes compiling."""
  num = settings.members
  teacher = ts.replicate(setup.teacher_variables, devices)
  staged = stage(data, devices)
  eps = np.linspace(0.0, 1.0, num)

  start = time.perf_counter()
  tx = members.with_learning_rate_scale(setup.tx)
  step_fn = ts.pmap_train_step(members.make_members_step(setup.make_step(tx)))
  stacked = members.stack_states([
      members.create_member_state(setup.variables, tx, eps=e,
                                  kd_temperature=2.0,
                                  learning_rate_scale=0.5 ** (i % 4))
      for i, e in enumerate(eps)])
  _, vmapped_s = timed_steps(
      step_fn, ts.replicate(stacked, devices), teacher, staged,
      jnp.stack([jax.random.PRNGKey(i) for i in range(num)]), settings.warmup)
  vmapped_e2e_s = time.perf_counter() - start

  start = time.perf_counter()
  step_fn = ts.pmap_train_step(setup.make_step(setup.tx))
  sequential_s = []
  for i, e in enumerate(eps):
    _, step_s = timed_steps(step_fn, setup.state(devices, e), teacher, staged,
                            jax.random.PRNGKey(i), settings.warmup)
    sequential_s.append(step_s)
  sequential_e2e_s = time.perf_counter() - start
  return {"members": num,
          "vmapped_ms_per_member": 1e3 * vmapped_s / num,
          "sequential_ms_per_member": 1e3 * float(np.mean(sequential_s)),
          "vmapped_e2e_s": vmapped_e2e_s,
          "sequential_e2e_s": sequential_e2e_s}


def bench_model(name, settings, devices):
  setup = Setup(name)
  print(f"{name}: {setup.num_params:,} parameters", flush=True)
  image_shape = MODELS[name][1]
  data = random_data(image_shape,
                     (settings.warmup + settings.steps) * GLOBAL_BATCH)
  result = {"image_shape": list(image_shape), "num_params": setup.num_params}
  result.update(throughput(setup, devices, data, settings))
  augment = image_shape == (32, 32, 3)
  result["input"] = {"augment": augment, "prestaged_ms": result["step_ms"],
                     **input_pipelines(setup, devices, data, augment,
                                       settings)}
  if name in settings.member_models:
    result["members"] = members_vs_sequential(setup, devices, data, settings)
  if len(devices) > 1:
    result["devices"] = {
        "1": throughput(setup, devices[:1], data, settings),
        str(len(devices)): {k: result[k] for k in
                            ("compile_s", "step_ms", "examples_per_s")}}
  return result


def print_table(title, header, rows):
  widths = [max(len(str(r[i])) for r in [header, *rows])
            for i in range(len(header))]
  print(f"\n{title}")
  for row in [header, *rows]:
    print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))


def print_report(results):
  models = results["models"]
  print(f"\n{results['backend']} ({results['device_kind']}), "
        f"{results['num_devices']} device(s), global batch {GLOBAL_BATCH}, "
        f"{results['settings']['steps']} timed steps")
  print_table("Train step (pre-staged batches)",
              ["model", "params", "compile s", "step ms", "steps/s", "ex/s"],
              [[n, f"{r['num_params']:,}", f"{r['compile_s']:.2f}",
                f"{r['step_ms']:.2f}", f"{r['steps_per_s']:.1f}",
                f"{r['examples_per_s']:,.0f}"] for n, r in models.items()])

  def overhead(r, key):
    return (f"{r[key]:.2f} ({100 * (r[key] / r['prestaged_ms'] - 1):+.0f}%)")
  print_table("Input pipeline: step ms (overhead vs pre-staged)",
              ["model", "augment", "pre-staged", "device", "host tf.data"],
              [[n, r["input"]["augment"], f"{r['input']['prestaged_ms']:.2f}",
                overhead(r["input"], "device_ms"),
                overhead(r["input"], "host_ms")] for n, r in models.items()])
  rows = [[n, m["members"], f"{m['vmapped_ms_per_member']:.2f}",
           f"{m['sequential_ms_per_member']:.2f}",
           f"{m['sequential_ms_per_member'] / m['vmapped_ms_per_member']:.2f}x",
           f"{m['vmapped_e2e_s']:.1f}", f"{m['sequential_e2e_s']:.1f}"]
          for n, m in ((n, r["members"]) for n, r in models.items()
                       if "members" in r)]
  print_table("Members: vmapped in one program vs sequential runs",
              ["model", "H", "vmap ms/member", "seq ms/member", "speedup",
               "vmap e2e s", "seq e2e s"], rows)
  if results["num_devices"] > 1:
    all_devices = str(results["num_devices"])
    print_table(f"1 vs {all_devices} devices, same global batch",
                ["model", "1: compile s", "1: ex/s", f"{all_devices}: "
                 "compile s", f"{all_devices}: ex/s", "speedup"],
                [[n, f"{d['1']['compile_s']:.2f}",
                  f"{d['1']['examples_per_s']:,.0f}",
                  f"{d[all_devices]['compile_s']:.2f}",
                  f"{d[all_devices]['examples_per_s']:,.0f}",
                  f"{d['1']['step_ms'] / d[all_devices]['step_ms']:.2f}x"]
                 for n, d in ((n, r["devices"]) for n, r in models.items())])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = QUICK if _QUICK.value else FULL
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
  print_report(results)
  with open(_OUT.value, "w") as f:
    json.dump(results, f, indent=2)
  print(f"\nwrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
