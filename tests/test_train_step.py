"""The pmapped train step: device-count invariance, one compile per shape, the
teacher outside the state, the eps mix, and frozen layers under data
parallelism.

Runs on the 8 fake CPU devices that ``conftest.py`` asks XLA for.
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from flax import traverse_util

from cil_jax.step import fit
from cil_jax import parallel
from cil_jax import partition
from cil_jax.step import train_step as ts
from cil_jax.bench.setup import random_variables
from cil_jax.data import pipeline
from cil_jax.data import train_data
from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables
from cil_jax import config_files
from tests.helpers import objective_for

default = config_files.from_checkout("default")

NUM_OLD = 5
NUM_CLASSES = 10
GLOBAL_BATCH = 32
IMAGE_SHAPE = (8, 8, 1)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


class Models:
  """A teacher for 5 classes and its 10-class student (old head copied)."""

  def __init__(self, name, dtype="float32", **model_overrides):
    config = default.get_config()
    config.model.name = name
    for key, value in model_overrides.items():
      config.model[key] = value
    self.teacher = build_model(config.model, NUM_OLD, dtype=dtype)
    self.student = build_model(config.model, NUM_CLASSES, dtype=dtype)
    self.teacher_variables = random_variables(self.teacher, IMAGE_SHAPE,
                                              seed=1)
    fresh = random_variables(self.student, IMAGE_SHAPE, seed=2)
    self.variables = expand_variables(self.teacher_variables, fresh, NUM_OLD)


class Training:
  """SGD with momentum masked by a layer preset, and the step built on it."""

  def __init__(self, models, preset="all"):
    self.models = models
    params = models.variables["params"]
    self.rules = partition.preset_rules(preset, params)
    self.tx = partition.masked_optimizer(
        optax.sgd(0.1, momentum=0.9),
        partition.trainable_labels(params, self.rules))

  def per_device_step(self, kd_form="full"):
    return ts.make_train_step(
        self.models.student.apply, self.models.teacher.apply, self.tx,
        objective_for(kd_form=kd_form), partition.rule_labeler(self.rules))

  def host_state(self, eps=0.5):
    return ts.create_state(self.models.variables, self.tx, eps,
                           kd_temperature=2.0)


def make_batches(count, seed=0, size=GLOBAL_BATCH):
  """Random images; labels are the new classes 5..9, as in a class step."""
  rng = np.random.default_rng(seed)
  return [{"image": rng.normal(size=(size, *IMAGE_SHAPE)).astype(np.float32),
           "label": rng.integers(NUM_OLD, NUM_CLASSES, size).astype(np.int32)}
          for _ in range(count)]


def shard(batch, num_devices):
  return jax.tree.map(
      lambda x: x.reshape(num_devices, -1, *x.shape[1:]), batch)


def replicate_state(host_state, devices):
  return parallel.replicate(host_state, devices)


def first_replica(tree):
  return parallel.unreplicate(tree)


def fed_batch(resident, feed):
  """The data's ``batch_fn`` for batches fed whole (no augmentation)."""
  del resident
  return feed


def run_steps(step_fn, host_state, teacher_variables, batches, devices):
  """Runs the pmapped step; returns the replicated state and host metrics."""
  state = replicate_state(host_state, devices)
  teacher = parallel.replicate(teacher_variables, devices)
  metrics = []
  for batch in batches:
    state, step_metrics = step_fn(state, teacher, {},
                                  shard(batch, len(devices)),
                                  jax.random.PRNGKey(0))
    metrics.append(jax.device_get(step_metrics))
  return state, metrics


def assert_replicas_agree(tree):
  for leaf in jax.tree.leaves(jax.device_get(tree)):
    np.testing.assert_allclose(leaf, np.broadcast_to(leaf[:1], leaf.shape),
                               rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def mlp_models():
  return Models("mlp", hidden_sizes=(16, 16))


@pytest.fixture(scope="module")
def resnet_models():
  return Models("resnet", resnet_depth=20, resnet_width=4)


@pytest.fixture(scope="module")
def mlp(mlp_models):
  return Training(mlp_models)


@pytest.fixture(scope="module")
def mlp_step_8(mlp):
  """One pmapped mlp step (kd_form 'full'), shared so it compiles once."""
  return ts.pmap_train_step(mlp.per_device_step(), fed_batch)


def test_session_has_eight_cpu_devices():
  assert jax.local_device_count() == 8


@pytest.mark.parametrize("models_fixture", ["mlp_models", "resnet_models"])
def test_eight_devices_match_one_device(request, models_fixture):
  models = request.getfixturevalue(models_fixture)
  training = Training(models)
  batches = make_batches(3)
  results = {}
  for num_devices in (1, 8):
    step_fn = ts.pmap_train_step(training.per_device_step("full"), fed_batch)
    state, metrics = run_steps(step_fn, training.host_state(eps=0.5),
                               models.teacher_variables, batches,
                               jax.local_devices()[:num_devices])
    assert_replicas_agree((state.params, state.batch_stats, metrics))
    results[num_devices] = (first_replica(state), metrics)

  (state_1, metrics_1), (state_8, metrics_8) = results[1], results[8]
  for step in range(3):
    for key in ("loss", "ce", "kd", "accuracy"):
      np.testing.assert_allclose(metrics_8[step][key][0],
                                 metrics_1[step][key][0], **TOLERANCE,
                                 err_msg=f"step {step} metric {key}")
  # With KD at eps=0.5 both terms are live and mixed half and half.
  first = {k: float(v[0]) for k, v in metrics_1[0].items()}
  assert first["kd"] > 0.1 and first["ce"] > 0.1
  assert first["loss"] == pytest.approx(0.5 * first["ce"] + 0.5 * first["kd"],
                                        rel=1e-6)
  assert int(state_1.step) == int(state_8.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE),
               state_8.params, state_1.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE),
               state_8.batch_stats, state_1.batch_stats)
  # The steps did train, so the comparison is not between two copies of the
  # start: params moved and, for the resnet, every running statistic.
  start = models.variables
  assert not np.allclose(state_1.params["head"]["kernel"],
                         start["params"]["head"]["kernel"])
  if models_fixture == "resnet_models":
    old_stats = jax.tree.leaves(start["batch_stats"])
    assert len(old_stats) == 2 * 21  # mean and var of 21 BatchNorms
    for new, old in zip(jax.tree.leaves(state_8.batch_stats), old_stats):
      assert not np.allclose(new, old)


def test_step_compiles_once_per_shape(mlp):
  chex.clear_trace_counter()
  traces = []

  def counted_step(state, teacher, batch, rng):
    traces.append(batch["image"].shape)
    return mlp.per_device_step()(state, teacher, batch, rng)

  step_fn = ts.pmap_train_step(chex.assert_max_traces(counted_step, n=1),
                               fed_batch)
  devices = jax.local_devices()
  state = replicate_state(mlp.host_state(eps=0.5), devices)
  teacher = parallel.replicate(mlp.models.teacher_variables, devices)
  losses = []
  for i, batch in enumerate(make_batches(4, seed=3)):
    # Another eps, or another class step (classes seen, old classes,
    # schedule length), is another value, not another program.
    changes = {2: {"eps": np.float32(0.9), "kd_temperature": np.float32(4.0)},
               3: {"num_old": np.int32(3), "num_seen": np.int32(8),
                   "total_steps": np.int32(40)}}.get(i)
    if changes:
      hparams = dict(parallel.unreplicate(state.hparams), **changes)
      state = state.replace(hparams=replicate_state(hparams, devices))
    state, metrics = step_fn(state, teacher, {}, shard(batch, 8),
                             jax.random.PRNGKey(100 + i))
    losses.append(float(metrics["loss"][0]))
  assert traces == [(4, *IMAGE_SHAPE)]
  assert int(state.step[0]) == 4
  assert len(set(losses)) == 4

  # The guard is live: another per-device batch size is a second trace.
  smaller = shard(make_batches(1, seed=4, size=16)[0], 8)
  with pytest.raises(AssertionError, match="traced > 1 times"):
    step_fn(state, teacher, {}, smaller, jax.random.PRNGKey(0))
  assert traces == [(4, *IMAGE_SHAPE)]  # chex refused before the body ran
  chex.clear_trace_counter()


@pytest.mark.parametrize("vmap", [False, True])
def test_fit_compiles_the_step_once(mlp, tmp_path, vmap):
  # Two members (eps 0.5 and 0.2) share one compiled step, in turn or
  # vmapped: the per-device step is traced once.
  traces = []
  step = mlp.per_device_step()

  def counted_step(state, teacher, batch, rng):
    traces.append(batch["image"].shape)
    return step(state, teacher, batch, rng)

  config = default.get_config()
  config.train.batch_size = GLOBAL_BATCH
  config.train.epochs = 2
  config.train.checkpoint_every_epochs = 2
  # In turn: a checkpoint at every boundary; vmapped: under a time floor
  # the short step never reaches, none (runtime.checkpoint_min_seconds).
  config.runtime.checkpoint_min_seconds = 1e9 if vmap else 0.0
  data = make_batches(1, seed=9, size=2 * GLOBAL_BATCH)[0]
  models = mlp.models
  members = [fit.Member(
      variables=models.variables, eps=eps, kd_temperature=2.0,
      teacher_variables=models.teacher_variables,
      checkpoint_dir=str(tmp_path / f"checkpoints_{eps}"), name=f"fit {eps}")
             for eps in (0.5, 0.2)]
  trained = fit.fit(
      train_step=counted_step, tx=mlp.tx, members=members,
      train_data=train_data.HostTrainData(
          tf.data.Dataset.from_tensor_slices(data), 2 * GLOBAL_BATCH,
          allowed=range(NUM_OLD, NUM_CLASSES), augment=False,
          batch_size=GLOBAL_BATCH, devices=jax.local_devices(),
          shuffle_buffer=64),
      num_old=NUM_OLD, num_seen=NUM_CLASSES, config=config,
      devices=jax.local_devices(), dropout_key=jax.random.PRNGKey(0),
      data_seed=(0,), vmap=vmap)
  assert traces == [(4, *IMAGE_SHAPE)]
  # Two different runs came back, each with its own final checkpoint
  # (or none under the time floor).
  kernels = [t["params"]["head"]["kernel"] for t in trained]
  assert np.abs(kernels[0] - kernels[1]).max() > 1e-4
  for eps in (0.5, 0.2):
    assert os.listdir(tmp_path / f"checkpoints_{eps}") == (
        [] if vmap else ["2"])


def test_teacher_is_an_input_never_state(mlp, mlp_step_8):
  host_state = mlp.host_state(eps=0.5)
  devices = jax.local_devices()
  teacher_host = jax.tree.map(np.array, mlp.models.teacher_variables)
  teacher = parallel.replicate(mlp.models.teacher_variables, devices)
  state = replicate_state(host_state, devices)
  for batch in make_batches(3, seed=5):
    state, metrics = mlp_step_8(state, teacher, {}, shard(batch, 8),
                                jax.random.PRNGKey(0))
  assert float(metrics["kd"][0]) > 0.1  # the teacher was used

  # The state holds the student and its optimizer, nothing of the teacher.
  final = first_replica(state)
  student_params = mlp.models.variables["params"]
  assert jax.tree.structure(final.params) == jax.tree.structure(student_params)
  assert jax.tree.structure(final) == jax.tree.structure(host_state)
  # step + params + the SGD momentum of every param + the six runtime
  # scalars (eps, temperature, num_old, num_seen, total_steps,
  # replay_weight).
  num_params = len(jax.tree.leaves(student_params))
  assert len(jax.tree.leaves(final)) == 1 + 2 * num_params + 6
  teacher_head = teacher_host["params"]["head"]
  teacher_shapes = {teacher_head["kernel"].shape, teacher_head["bias"].shape}
  assert teacher_shapes == {(16, NUM_OLD), (NUM_OLD,)}
  assert not teacher_shapes & {np.shape(x) for x in jax.tree.leaves(final)}

  # The teacher's buffers were not donated and are bitwise unchanged.
  for leaf in jax.tree.leaves(teacher):
    assert not leaf.is_deleted()
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(
      a, np.broadcast_to(b, a.shape)), jax.device_get(teacher), teacher_host)
  jax.tree.map(np.testing.assert_array_equal, mlp.models.teacher_variables,
               teacher_host)


def test_no_gradient_reaches_the_teacher(mlp):
  # vmap with the pmap axis name runs the per-device body off-device.
  step = mlp.per_device_step()
  state = jax.tree.map(lambda x: jnp.asarray(x)[None], mlp.host_state(0.5))
  batch = shard(make_batches(1, seed=6)[0], 1)

  @jax.jit
  def loss_and_grad(teacher_variables):
    def loss_of_teacher(teacher_variables):
      teacher = jax.tree.map(lambda x: x[None], teacher_variables)
      _, metrics = jax.vmap(step, in_axes=(0, 0, 0, None), axis_name="batch")(
          state, teacher, batch, jax.random.PRNGKey(0))
      return metrics["loss"][0], metrics["kd"][0]
    return jax.value_and_grad(loss_of_teacher, has_aux=True)(teacher_variables)

  (loss, kd), grads = loss_and_grad(mlp.models.teacher_variables)
  assert float(kd) > 0.1 and np.isfinite(float(loss))
  for leaf in jax.tree.leaves(grads):
    np.testing.assert_array_equal(leaf, np.zeros_like(leaf))


def test_grad_norm_is_the_norm_of_the_updated_parameters_gradient(
    mlp_models):
  # Preset head: the backbone's gradient is not part of the norm.
  training = Training(mlp_models, preset="head")
  step = training.per_device_step()
  state, teacher = jax.tree.map(
      lambda x: jnp.asarray(x)[None],
      (training.host_state(0.5), mlp_models.teacher_variables))
  batch = shard(make_batches(1, seed=10)[0], 1)

  @jax.jit
  def loss_grads_and_grad_norm(params):
    def loss(params):
      _, metrics = jax.vmap(step, in_axes=(0, 0, 0, None), axis_name="batch")(
          state.replace(params=params), teacher, batch, jax.random.PRNGKey(0))
      return metrics["loss"][0], metrics["grad_norm"][0]
    return jax.grad(loss, has_aux=True)(params)

  grads, grad_norm = loss_grads_and_grad_norm(state.params)

  def norm(tree):
    return np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(tree)))
  np.testing.assert_allclose(grad_norm, norm(grads["head"]), rtol=1e-5)
  assert norm(grads["backbone"]) > 0.1 * norm(grads["head"])


def test_a_step_without_grad_norm_trains_identically(mlp_models):
  # Runs without TensorBoard leave the norm out; nothing else changes.
  training = Training(mlp_models)
  batches = make_batches(2, seed=11)
  devices = jax.local_devices()[:1]
  results = []
  for with_norm in (True, False):
    step = ts.make_train_step(
        mlp_models.student.apply, mlp_models.teacher.apply, training.tx,
        objective_for(), partition.rule_labeler(training.rules),
        grad_norm=with_norm)
    results.append(run_steps(ts.pmap_train_step(step, fed_batch),
                             training.host_state(0.5),
                             mlp_models.teacher_variables, batches, devices))
  (with_state, with_metrics), (without_state, without_metrics) = results
  assert all("grad_norm" in m for m in with_metrics)
  assert not any("grad_norm" in m for m in without_metrics)
  for got, want in zip(jax.tree.leaves(first_replica(without_state)),
                       jax.tree.leaves(first_replica(with_state))):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(without_metrics, with_metrics):
    np.testing.assert_array_equal(got["loss"], want["loss"])


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_eps_endpoints_are_pure_ce_and_pure_kd(mlp, mlp_step_8, eps):
  state, metrics = run_steps(mlp_step_8, mlp.host_state(eps=eps),
                             mlp.models.teacher_variables,
                             make_batches(2, seed=7), jax.local_devices())
  for step_metrics in metrics:
    ce, kd = step_metrics["ce"], step_metrics["kd"]
    # At eps 0 the step does not distil, and reports no KD.
    assert np.all(kd > 0.1) if eps else np.all(kd == 0)
    assert np.all(ce > 0.1)
    assert not np.allclose(ce, kd)
    expected = ce if eps == 0.0 else kd
    np.testing.assert_array_equal(step_metrics["loss"], expected)
  assert int(state.step[0]) == 2


def test_head_preset_freezes_the_resnet_backbone_and_statistics(resnet_models):
  training = Training(resnet_models, preset="head")
  step_fn = ts.pmap_train_step(training.per_device_step(), fed_batch)
  start = jax.tree.map(np.array, resnet_models.variables)
  state, metrics = run_steps(step_fn, training.host_state(eps=0.5),
                             resnet_models.teacher_variables,
                             make_batches(3, seed=8), jax.local_devices())
  assert np.all(np.isfinite(metrics[-1]["loss"]))
  final = first_replica(state)

  new_params = traverse_util.flatten_dict(final.params, sep="/")
  old_params = traverse_util.flatten_dict(start["params"], sep="/")
  assert set(new_params) == set(old_params)
  backbone = [p for p in old_params if not p.startswith("head/")]
  assert len(backbone) == 21 + 2 * 21  # convs, BatchNorm scales and biases
  for path in backbone:
    assert np.array_equal(new_params[path], old_params[path]), path
  for path in ("head/kernel", "head/bias"):
    assert not np.allclose(new_params[path], old_params[path]), path

  new_stats = traverse_util.flatten_dict(final.batch_stats, sep="/")
  old_stats = traverse_util.flatten_dict(start["batch_stats"], sep="/")
  assert len(old_stats) == 2 * 21 and set(new_stats) == set(old_stats)
  for path, old in old_stats.items():
    assert np.array_equal(new_stats[path], old), path


# Loss of the bfloat16 step against the float32 one, same start and
# batches, 8 steps of the MLP: the largest difference measured was 5.6e-4
# (0.02% of the loss); bfloat16 keeps 8 significant bits (2^-9 = 0.2%
# relative rounding), and the tolerance leaves room for other XLA builds.
BFLOAT16_LOSS_ATOL = 5e-3


def test_bfloat16_compute_trains_as_float32_with_float32_state(mlp,
                                                               mlp_step_8):
  bf16 = Training(Models("mlp", dtype="bfloat16", hidden_sizes=(16, 16)))
  chex.assert_trees_all_equal(bf16.models.variables, mlp.models.variables)
  # Inside the model every layer computes in bfloat16; the logits come out
  # float32, so softmaxes and losses are float32.
  logits, captured = jax.eval_shape(
      lambda v, x: bf16.models.student.apply(
          v, x, capture_intermediates=True, mutable=["intermediates"]),
      bf16.models.variables, make_batches(1)[0]["image"])
  layers = captured["intermediates"]
  assert logits.dtype == jnp.float32
  for inner in (layers["head"], layers["backbone"]["layer_00"]):
    assert inner["__call__"][0].dtype == jnp.bfloat16
  batches = make_batches(8, seed=9)
  losses = {}
  for name, training, step_fn in (
      ("float32", mlp, mlp_step_8),
      ("bfloat16", bf16, ts.pmap_train_step(bf16.per_device_step(),
                                            fed_batch))):
    state, metrics = run_steps(step_fn, training.host_state(),
                               training.models.teacher_variables, batches,
                               jax.local_devices())
    losses[name] = np.array([m["loss"][0] for m in metrics])
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(
        (metrics, state.params, state.opt_state))} == {"float32"}
  assert losses["bfloat16"][-1] < losses["bfloat16"][0] - 0.05  # it trains
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0,
                             atol=BFLOAT16_LOSS_ATOL)


def _widen(variables, width, seed):
  """``variables`` with the head widened to ``width`` columns of noise."""
  rng = np.random.default_rng(seed)
  head = variables["params"]["head"]
  extra = width - head["bias"].shape[0]
  wide_head = {
      "kernel": np.concatenate([head["kernel"], rng.normal(size=(
          head["kernel"].shape[0], extra)).astype(np.float32)], axis=-1),
      "bias": np.concatenate([head["bias"],
                              rng.normal(size=extra).astype(np.float32)])}
  return {**variables, "params": {**variables["params"], "head": wide_head}}


@pytest.mark.parametrize("kd_form", ["full", "renormalized"])
def test_sequence_wide_head_trains_as_the_per_step_head(mlp_models, kd_form):
  # A head allocated for 13 classes, of which 10 are seen and 5 old, with
  # the unseen columns masked, trains exactly as the 10-wide student of the
  # 5-wide teacher: same losses, same updates; unseen columns never move.
  width = 13
  config = default.get_config()
  config.model.hidden_sizes = (16, 16)
  wide = build_model(config.model, width)
  wide_variables = _widen(mlp_models.variables, width, seed=3)
  wide_teacher = _widen(mlp_models.teacher_variables, width, seed=4)
  results = {}
  for name, student, variables, teacher, teacher_variables, counts in (
      ("narrow", mlp_models.student, mlp_models.variables, mlp_models.teacher,
       mlp_models.teacher_variables, {}),
      ("wide", wide, wide_variables, wide, wide_teacher,
       {"num_old": NUM_OLD, "num_seen": NUM_CLASSES})):
    params = variables["params"]
    rules = partition.preset_rules("all", params)
    tx = partition.masked_optimizer(
        optax.chain(optax.add_decayed_weights(0.1), optax.trace(0.9)),
        partition.trainable_labels(params, rules))
    step = ts.make_train_step(
        student.apply, teacher.apply, tx, objective_for(kd_form=kd_form),
        partition.rule_labeler(rules),
        learning_rate_fn=lambda count, total: 0.1 * (1 - count / total))
    state = ts.create_state(variables, tx, 0.5, 2.0, total_steps=10,
                            **counts)
    results[name] = run_steps(ts.pmap_train_step(step, fed_batch), state,
                              teacher_variables, make_batches(3, seed=11),
                              jax.local_devices()[:1])
  (narrow_state, narrow_metrics), (wide_state, wide_metrics) = (
      results["narrow"], results["wide"])
  for narrow_step, wide_step in zip(narrow_metrics, wide_metrics):
    for key in ("loss", "ce", "kd", "accuracy"):
      np.testing.assert_allclose(wide_step[key], narrow_step[key],
                                 rtol=1e-6, err_msg=key)
  assert float(narrow_metrics[0]["kd"][0]) > 0.1
  narrow_params = first_replica(narrow_state.params)
  wide_params = first_replica(wide_state.params)
  np.testing.assert_allclose(wide_params["head"]["kernel"][:, :NUM_CLASSES],
                             narrow_params["head"]["kernel"], rtol=1e-5,
                             atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               wide_params["backbone"], narrow_params["backbone"])
  # The unseen columns did not move, though weight decay pushes on them.
  np.testing.assert_array_equal(
      wide_params["head"]["kernel"][:, NUM_CLASSES:],
      wide_variables["params"]["head"]["kernel"][:, NUM_CLASSES:])
  assert not np.allclose(narrow_params["head"]["kernel"],
                         mlp_models.variables["params"]["head"]["kernel"])


def _fit_two_epochs(mlp, feed_data, checkpoint_dir, **fit_kwargs):
  """The mlp's student trained for 2 epochs on ``feed_data`` by ``fit``
  (eps 0.5, T 2, the step's own teacher); its host variables."""
  config = default.get_config()
  config.train.batch_size = GLOBAL_BATCH
  config.train.epochs = 2
  config.train.checkpoint_every_epochs = 2
  member = fit.Member(
      variables=mlp.models.variables, eps=0.5, kd_temperature=2.0,
      teacher_variables=mlp.models.teacher_variables,
      checkpoint_dir=str(checkpoint_dir), name=os.path.basename(
          checkpoint_dir))
  return fit.fit(
      train_step=mlp.per_device_step(), tx=mlp.tx, members=[member],
      train_data=feed_data, num_old=NUM_OLD, num_seen=NUM_CLASSES,
      config=config, devices=jax.local_devices(),
      dropout_key=jax.random.PRNGKey(0), data_seed=(0,), **fit_kwargs)[0]


def _assert_trained_alike(got, want, start):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), got, want)
  # Two trained models, not two copies of the start.
  assert np.abs(got["params"]["head"]["kernel"]
                - start["params"]["head"]["kernel"]).max() > 1e-3


def _examples(seed):
  data = make_batches(1, seed=seed, size=3 * GLOBAL_BATCH)[0]
  return pipeline.Examples(image=data["image"], label=data["label"])


def test_precomputed_teacher_logits_train_as_the_teacher_forward(mlp,
                                                                  tmp_path):
  # Without augmentation the frozen teacher's logits are computed once per
  # step and gathered; training matches running the teacher on each batch.
  examples = _examples(seed=12)
  device_data = train_data.DeviceTrainData.from_examples(
      examples, range(NUM_OLD, NUM_CLASSES), False, GLOBAL_BATCH,
      jax.local_devices())
  models = mlp.models
  teacher_fn = jax.jit(lambda v, x: models.teacher.apply(v, x, train=False))
  per_batch = _fit_two_epochs(mlp, device_data, tmp_path / "per_batch")
  precomputed = _fit_two_epochs(mlp, device_data, tmp_path / "precomputed",
                                teacher_logits_fn=teacher_fn)
  _assert_trained_alike(precomputed, per_batch, models.variables)
  # The precomputed table holds the teacher's logits of every example.
  resident = device_data.with_teacher_logits(
      teacher_fn, models.teacher_variables).resident
  np.testing.assert_allclose(
      np.asarray(resident["teacher_logits"][0]),
      np.asarray(teacher_fn(models.teacher_variables, examples.image)),
      rtol=1e-5, atol=1e-6)


def test_whole_epoch_dispatch_trains_as_one_step_per_dispatch(mlp, tmp_path):
  # Device-resident data runs an epoch in chunks of lax.scan steps per
  # dispatch; host batches (the same examples in the same order) run a
  # dispatch per step.
  examples = _examples(seed=13)
  allowed = range(NUM_OLD, NUM_CLASSES)
  devices = jax.local_devices()
  device = _fit_two_epochs(
      mlp, train_data.DeviceTrainData.from_examples(
          examples, allowed, False, GLOBAL_BATCH, devices),
      tmp_path / "device", whole_epochs=True)
  host = _fit_two_epochs(
      mlp, train_data.HostTrainData(examples, len(examples), allowed, False,
                                    GLOBAL_BATCH, devices, len(examples)),
      tmp_path / "host")
  _assert_trained_alike(device, host, mlp.models.variables)
