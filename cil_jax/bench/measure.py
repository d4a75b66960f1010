"""The timed measurements of one model's ``Setup``: the train step on
pre-staged batches (with the teacher run per batch, or its logits
precomputed as runs without augmentation do) against the floor of the same
shapes, its input pipelines, and sweep members in one program against one
run after another."""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cil_jax import losses
from cil_jax.step import members
from cil_jax import parallel
from cil_jax.step import train_step as ts
from cil_jax.bench.setup import GLOBAL_BATCH
from cil_jax.bench.setup import NUM_CLASSES
from cil_jax.bench.setup import NUM_OLD
from cil_jax.bench.setup import RNG
from cil_jax.bench.setup import resident_data
from cil_jax.bench.setup import stage
from cil_jax.bench.setup import staged_batch
from cil_jax.data import pipeline
from cil_jax.data import train_data


# The floor and the whole-epoch step: the median of this many timed
# passes, each over all the timed steps, the two alternating; one pass of a
# 2 ms step moved by 15-20% between runs on a shared 2-core CPU.
ROUNDS = 3


def timed_steps(step_fn, state, teacher, resident, feeds, rng, warmup):
  """One step per feed; mean seconds of the steps after ``warmup``."""
  feeds = iter(feeds)
  for _ in range(warmup):
    state, _ = step_fn(state, teacher, resident, next(feeds), rng)
  jax.block_until_ready(state)
  start, count = time.perf_counter(), 0
  for feed in feeds:
    state, metrics = step_fn(state, teacher, resident, feed, rng)
    count += 1
  jax.block_until_ready((state, metrics))
  return (time.perf_counter() - start) / count


def throughput(setup, devices, data, settings):
  """Compile time and steady-state speed on pre-staged device batches."""
  step_fn = ts.pmap_train_step(setup.step, staged_batch)
  state = setup.state(devices)
  teacher = setup.replicated_teacher(devices)
  staged = stage(data, devices)
  start = time.perf_counter()
  step_fn.lower(state, teacher, {}, staged[0], RNG).compile()
  compile_s = time.perf_counter() - start
  step_s = timed_steps(step_fn, state, teacher, {}, staged, RNG,
                       settings.warmup)
  return {"compile_s": compile_s, "step_ms": 1e3 * step_s,
          "steps_per_s": 1 / step_s, "examples_per_s": GLOBAL_BATCH / step_s}


def _floor_round(setup, data, settings):
  """The floor of a train step: the student's forward and backward pass
  alone (the gradient of its cross-entropy), jitted on one device, on
  pre-staged batches: no teacher, optimizer, collectives or dispatch of a
  pmapped program. Returns a function that times one pass over the timed
  batches (ms a step)."""
  variables = setup.variables

  @jax.jit
  def gradients(params, batch):
    def loss(p):
      logits, _ = setup.student.apply(
          {**variables, "params": p}, batch["image"], train=True,
          rngs={"dropout": RNG}, mutable=["batch_stats"])
      return losses.cross_entropy(logits, batch["label"])
    return jax.grad(loss)(params)

  batches = [jax.device_put({k: v[0] for k, v in batch.items()})
             for batch in stage(data, jax.local_devices()[:1])]
  params = jax.device_put(variables["params"])
  for batch in batches[:settings.warmup]:
    jax.block_until_ready(gradients(params, batch))
  timed = batches[settings.warmup:]

  def one_round():
    start = time.perf_counter()
    for batch in timed:
      out = gradients(params, batch)
    jax.block_until_ready(out)
    return 1e3 * (time.perf_counter() - start) / len(timed)
  return one_round


def precomputed_teacher(setup, devices, data, settings):
  """Step ms with the teacher's logits precomputed and fed in the batch."""
  logits = jax.jit(lambda v, x: setup.teacher.apply(v, x, train=False))(
      setup.teacher_variables, data["image"])
  staged = stage(dict(data, teacher_logits=np.asarray(logits)), devices)
  step_s = timed_steps(ts.pmap_train_step(setup.step, staged_batch),
                       setup.state(devices), {}, {}, staged, RNG,
                       settings.warmup)
  return 1e3 * step_s


def _epoch_round(setup, devices, data):
  """Step ms as runs train on device-resident data: the teacher's logits
  precomputed and many steps per dispatch (``pmap_train_epoch``, here the
  whole short epoch at once); the first dispatch (compile) is not timed.
  Returns a function that times one more dispatch (ms a step)."""
  feed_data = resident_data(setup, data, devices)
  step_fn = ts.pmap_train_epoch(setup.step, feed_data.batch_fn)
  chunks = list(train_data.epoch_chunks(feed_data, 0, 1,
                                        feed_data.steps_per_epoch))
  state = setup.state(devices)
  state, metrics = step_fn(state, {}, feed_data.resident, chunks[0], RNG)
  jax.block_until_ready(metrics)
  state = [state]

  def one_round():
    start = time.perf_counter()
    state[0], metrics = step_fn(state[0], {}, feed_data.resident, chunks[0],
                                RNG)
    jax.block_until_ready(metrics)
    return 1e3 * (time.perf_counter() - start) / feed_data.steps_per_epoch
  return one_round


def floor_and_epoch(setup, devices, data, settings, epoch=True):
  """``(floor_ms, whole_epoch_ms)``: the medians of ``ROUNDS`` timed passes
  of the floor (``_floor_round``) and, with ``epoch``, of the whole-epoch
  step (``_epoch_round``; else ``None``), taken alternately so that both
  see the same outside load."""
  rounds = {"floor": _floor_round(setup, data, settings)}
  if epoch:
    rounds["epoch"] = _epoch_round(setup, devices, data)
  times = {name: [] for name in rounds}
  for _ in range(ROUNDS):
    for name, one_round in rounds.items():
      times[name].append(one_round())
  return (statistics.median(times["floor"]),
          statistics.median(times["epoch"]) if epoch else None)




def input_pipelines(setup, devices, data, augment, settings):
  """Step time fed by host batches (numpy, prefetched) and by on-device
  gathers from the resident split, each through its data's own
  ``batch_fn`` (augmenting if ``augment``)."""
  examples = pipeline.Examples(image=data["image"], label=data["label"])
  allowed = range(NUM_OLD, NUM_CLASSES)
  teacher = setup.replicated_teacher(devices)
  result = {}
  for train in (
      train_data.HostTrainData(examples, len(examples), allowed, augment,
                               GLOBAL_BATCH, devices, len(examples)),
      train_data.DeviceTrainData.from_examples(examples, allowed, augment,
                                               GLOBAL_BATCH, devices)):
    step_s = timed_steps(ts.pmap_train_step(setup.step, train.batch_fn),
                         setup.state(devices), teacher, train.resident,
                         train.epoch([0], 1), RNG, settings.warmup)
    result[f"{train.mode}_ms"] = 1e3 * step_s
  return result


def members_vs_sequential(setup, devices, data, settings):
  """H members (eps from 0 to 1) in one vmapped program against H runs one
  after another, each trained ``warmup + steps`` steps; end to end includes
  compiling (once for the sequential runs, which share one program)."""
  num = settings.members
  teacher = setup.replicated_teacher(devices)
  staged = stage(data, devices)
  eps = np.linspace(0.0, 1.0, num)

  start = time.perf_counter()
  step_fn = ts.pmap_train_step(members.make_members_step(setup.step),
                               staged_batch)
  stacked = members.stack_states([setup.host_state(e) for e in eps])
  vmapped_s = timed_steps(
      step_fn, parallel.replicate(stacked, devices), teacher, {}, staged,
      jnp.stack([jax.random.PRNGKey(i) for i in range(num)]), settings.warmup)
  vmapped_e2e_s = time.perf_counter() - start

  start = time.perf_counter()
  step_fn = ts.pmap_train_step(setup.step, staged_batch)
  sequential_s = [
      timed_steps(step_fn, setup.state(devices, e), teacher, {}, staged,
                  jax.random.PRNGKey(i), settings.warmup)
      for i, e in enumerate(eps)]
  sequential_e2e_s = time.perf_counter() - start
  return {"members": num,
          "vmapped_ms_per_member": 1e3 * vmapped_s / num,
          "sequential_ms_per_member": 1e3 * float(np.mean(sequential_s)),
          "vmapped_e2e_s": vmapped_e2e_s,
          "sequential_e2e_s": sequential_e2e_s}
