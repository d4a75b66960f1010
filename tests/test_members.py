"""Sweep members trained side by side in one pmap(vmap(step)) program match
the same runs trained alone, and the program is traced once.

Runs on the 8 fake CPU devices that ``conftest.py`` asks XLA for.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cil_jax.step import members
from cil_jax import optim
from cil_jax import parallel
from cil_jax import partition
from cil_jax.step import train_step as ts
from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables
from cil_jax import config_files
from tests.helpers import objective_for

default = config_files.from_checkout("default")

NUM_OLD = 5
NUM_CLASSES = 10
GLOBAL_BATCH = 32
IMAGE_SHAPE = (8, 8, 1)
NUM_STEPS = 3
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
LEARNING_RATE = 1e-2
# One row per member: eps, kd_temperature, init seed.
SWEEP = [(0.0, 1.0, 10), (0.3, 2.0, 11), (0.7, 4.0, 12), (1.0, 2.0, 13)]


class Sweep:
  """A 5-class teacher, one expanded 10-class student per init seed, and the
  Adam + cosine optimizer of the default config (dropout on, so the rng
  matters)."""

  def __init__(self):
    self.config = default.get_config()
    self.config.model.hidden_sizes = (16, 16)
    self.config.model.dropout = 0.2
    self.teacher = build_model(self.config.model, NUM_OLD)
    self.student = build_model(self.config.model, NUM_CLASSES)
    image = jnp.zeros((1, *IMAGE_SHAPE))
    self.teacher_variables = self.teacher.init(jax.random.PRNGKey(1), image)
    self.variables = [
        expand_variables(self.teacher_variables,
                         self.student.init(jax.random.PRNGKey(seed), image),
                         NUM_OLD)
        for *_, seed in SWEEP]
    self.rules = partition.preset_rules("all", self.variables[0]["params"])
    self.rngs = [jax.random.PRNGKey(100 + i) for i in range(len(SWEEP))]

  def tx(self):
    self.config.optim.learning_rate = LEARNING_RATE
    return partition.masked_optimizer(
        optim.make_optimizer(self.config.optim, NUM_STEPS),
        partition.trainable_labels(self.variables[0]["params"], self.rules))

  def per_device_step(self, tx):
    return ts.make_train_step(
        self.student.apply, self.teacher.apply, tx, objective_for(),
        partition.rule_labeler(self.rules))


def make_batches(seed=0):
  """Random images, labels the new classes 5..9, each ``[devices, ...]``."""
  rng = np.random.default_rng(seed)
  return [{"image": rng.normal(size=(8, GLOBAL_BATCH // 8, *IMAGE_SHAPE))
                       .astype(np.float32),
           "label": rng.integers(NUM_OLD, NUM_CLASSES, (8, GLOBAL_BATCH // 8))
                       .astype(np.int32)}
          for _ in range(NUM_STEPS)]


def fed_batch(resident, feed):
  """The data's ``batch_fn`` for batches fed whole (no augmentation)."""
  del resident
  return feed


def train(step_fn, host_state, teacher_variables, rng):
  devices = jax.local_devices()
  state = parallel.replicate(host_state, devices)
  teacher = parallel.replicate(teacher_variables, devices)
  metrics = []
  for batch in make_batches():
    state, step_metrics = step_fn(state, teacher, {}, batch, rng)
    metrics.append(jax.device_get(step_metrics))
  return parallel.unreplicate(state), metrics


@pytest.fixture(scope="module")
def sweep():
  return Sweep()


@pytest.fixture(scope="module")
def trained_members(sweep):
  """The 4 members in one program; records the per-device step's traces."""
  chex.clear_trace_counter()
  traces = []

  def counted_step(state, teacher, batch, rng):
    traces.append(batch["image"].shape)
    return step(state, teacher, batch, rng)

  tx = sweep.tx()
  step = sweep.per_device_step(tx)
  stacked = members.stack_states([
      ts.create_state(variables, tx, eps, temperature)
      for variables, (eps, temperature, _) in zip(sweep.variables, SWEEP)])
  step_fn = ts.pmap_train_step(members.make_members_step(
      chex.assert_max_traces(counted_step, n=1)), fed_batch)
  state, metrics = train(step_fn, stacked, sweep.teacher_variables,
                         jnp.stack(sweep.rngs))
  chex.clear_trace_counter()
  return state, metrics, traces


@pytest.mark.parametrize("member", range(len(SWEEP)))
def test_member_matches_its_run_alone(sweep, trained_members, member):
  eps, temperature, _ = SWEEP[member]
  tx = sweep.tx()
  alone_state, alone_metrics = train(
      ts.pmap_train_step(sweep.per_device_step(tx), fed_batch),
      ts.create_state(sweep.variables[member], tx, eps, temperature),
      sweep.teacher_variables, sweep.rngs[member])
  stacked_state, stacked_metrics, _ = trained_members
  state = members.unstack_state(stacked_state, member)

  assert int(state.step) == int(alone_state.step) == NUM_STEPS
  np.testing.assert_allclose(state.hparams["eps"], eps)
  np.testing.assert_allclose(state.hparams["kd_temperature"], temperature)
  for step in range(NUM_STEPS):
    for key, value in alone_metrics[step].items():
      assert stacked_metrics[step][key].shape == (8, len(SWEEP))
      np.testing.assert_allclose(stacked_metrics[step][key][:, member], value,
                                 **TOLERANCE,
                                 err_msg=f"step {step} metric {key}")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE),
               state.params, alone_state.params)
  # The comparison is between trained models, not two copies of the start.
  start = sweep.variables[member]["params"]["head"]["kernel"]
  assert np.abs(state.params["head"]["kernel"] - start).max() > 1e-4


def test_members_are_different_runs(trained_members):
  state, metrics, _ = trained_members
  first = {key: value[0] for key, value in metrics[0].items()}
  # eps 0 trains on CE alone (and reports no KD: it does not distil),
  # eps 1 on KD alone; both terms are live.
  np.testing.assert_array_equal(first["loss"][0], first["ce"][0])
  np.testing.assert_array_equal(first["loss"][-1], first["kd"][-1])
  assert first["kd"][0] == 0
  assert np.all(first["ce"] > 0.1) and np.all(first["kd"][1:] > 0.01)
  assert len(set(first["loss"].tolist())) == len(SWEEP)
  kernels = state.params["head"]["kernel"]
  for i in range(1, len(SWEEP)):
    assert not np.allclose(kernels[i], kernels[0])


def test_members_step_is_traced_once(trained_members):
  # One trace for all members and steps; the batch is not vmapped.
  _, _, traces = trained_members
  assert traces == [(GLOBAL_BATCH // 8, *IMAGE_SHAPE)]
