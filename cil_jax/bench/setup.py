"""What the benchmarks train: a model's teacher and expanded student, the
masked optimizer and per-device step, and random data staged on the
devices."""

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from cil_jax import optim
from cil_jax import parallel
from cil_jax import partition
from cil_jax.step import train_step as ts
from cil_jax.configs import default
from cil_jax.data import device_split
from cil_jax.data import train_data
from cil_jax.methods import spec
from cil_jax.methods.shared import kd
from cil_jax.models import abstract_variables
from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables

GLOBAL_BATCH = 128
NUM_OLD = 5
NUM_CLASSES = 10
KD_TEMPERATURE = 2.0
RNG = jax.random.PRNGKey(0)
# ``resident_data``'s pixels: random_data's unit normal images, scaled.
PIXEL_MEAN, PIXEL_STD = 127.5, 50.0
# name -> (config.model overrides, image shape); CIFAR-shaped inputs are
# augmented in the input pipelines, as the CIFAR configs do.
MODELS = {
    "mlp": ({"name": "mlp", "hidden_sizes": (400, 400)}, (28, 28, 1)),
    "cnn": ({"name": "cnn"}, (32, 32, 3)),
    "resnet20": ({"name": "resnet", "resnet_depth": 20, "resnet_width": 16},
                 (32, 32, 3)),
}


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
    rules = partition.preset_rules("all", params)
    self.tx = partition.masked_optimizer(
        optim.make_optimizer(config.optim, total_steps=10_000),
        partition.trainable_labels(params, rules))
    self.step = ts.make_train_step(
        self.student.apply, self.teacher.apply, self.tx,
        kd.objective(None, spec.BuildInfo("full", False, False, "head")),
        partition.rule_labeler(rules))

  def host_state(self, eps):
    return ts.create_state(self.variables, self.tx, eps, KD_TEMPERATURE)

  def state(self, devices, eps=0.5):
    return parallel.replicate(self.host_state(eps), devices)

  def replicated_teacher(self, devices):
    return parallel.replicate(self.teacher_variables, devices)


def random_variables(model, image_shape, seed):
  """Variables of ``model``'s shapes drawn in numpy: ``init`` of the ResNet
  alone takes XLA half a minute to compile on a CPU."""
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
  return jax.tree.map_with_path(draw, abstract_variables(model, image_shape))


def random_data(image_shape, num_examples):
  """Random images labelled with the new classes only, as a class step's
  training data is."""
  rng = np.random.default_rng(0)
  return {"image": rng.normal(size=(num_examples, *image_shape))
                      .astype(np.float32),
          "label": rng.integers(NUM_OLD, NUM_CLASSES, num_examples)
                      .astype(np.int32)}


def resident_data(setup, data, devices):
  """``data`` as runs keep a training split on the devices: ``uint8``
  pixels (``data``'s images scaled into 0-255 and rounded), normalised
  inside the step, the teacher's logits precomputed beside them
  (``DeviceTrainData``). Float images there would cost a copy of the
  whole split at every dispatch (XLA lays a float array out anew for the
  loop's gather: 0.15 ms a step of the MLP's 93-step epochs), which no run
  pays."""
  pixels = np.clip(np.round(data["image"] * PIXEL_STD + PIXEL_MEAN), 0,
                   255).astype(np.uint8)
  channels = pixels.shape[-1]
  split = device_split.DeviceSplit.create(
      pixels, data["label"], np.full(channels, PIXEL_MEAN),
      np.full(channels, PIXEL_STD), devices)
  feed_data = train_data.DeviceTrainData(
      split, np.arange(len(pixels), dtype=np.int32),
      range(NUM_OLD, NUM_CLASSES), False, GLOBAL_BATCH, devices)
  return feed_data.with_teacher_logits(
      jax.jit(lambda v, x: setup.teacher.apply(v, x, train=False)),
      setup.teacher_variables)


def stage(data, devices):
  """Global batches on the devices, ``[devices, per_device, ...]``, laid out
  like the step's other inputs so no transfer is left for the step."""
  sharding = NamedSharding(Mesh(np.asarray(devices), (parallel.BATCH_AXIS,)),
                           PartitionSpec(parallel.BATCH_AXIS))
  num_batches = len(data["label"]) // GLOBAL_BATCH
  return [jax.device_put(jax.tree.map(
      lambda x: x[i * GLOBAL_BATCH:(i + 1) * GLOBAL_BATCH].reshape(
          len(devices), -1, *x.shape[1:]), data), sharding)
          for i in range(num_batches)]


def staged_batch(resident, feed):
  """The ``batch_fn`` for ``stage``'s batches: the feed is the batch, and
  nothing is resident (pass ``{}``)."""
  del resident
  return feed
