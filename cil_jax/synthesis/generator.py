"""Data-free replay's second synthesiser: a generator trained against the
frozen teacher.

In the manner of Always-Be-Dreaming (Smith et al., ICCV 2021) and R-DFCIL
(Gao et al., ECCV 2022): a small network maps noise to inputs and is
trained with Adam so that the teacher assigns its outputs their target old
class (cross-entropy), the mean and variance of every BatchNorm layer's
input over a batch match the teacher's running statistics
(``inversion.logits_and_bn_loss``, DeepInversion's prior), and the batch's
mean prediction spreads over the old classes (the diversity term: log K
minus the entropy of the batch-mean softmax, 0 when the K old classes are
equally predicted). Unlike ABD's unconditional generator this one takes
the target class as an input (one-hot, beside the noise), so a synthetic
set is balanced over the old classes by construction; the diversity term
still keeps each batch from collapsing onto a few of them.

After training, ``samples`` inputs are drawn (sample ``i`` of class
``i % num_old``, shuffled) with the teacher's logits on them: the same
contract as ``inversion.synthesize``, so replay, the head fine-tune and
the sample grid are the same for both. The generator's training batch is
split over the devices (gradients and BatchNorm statistics averaged over
them), and each drawn batch has its own key, so the result does not depend
on the number of devices (up to float summation order).
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cil_jax.synthesis import inversion
from cil_jax import losses
from cil_jax.parallel import BATCH_AXIS


@dataclasses.dataclass(frozen=True)
class Settings:
  """How to synthesise with a generator: ``samples`` drawn after ``steps``
  Adam steps at ``learning_rate`` on batches of ``batch_size`` (split over
  the devices); noise of ``z_dim``, two hidden layers of ``hidden``; the
  weights of the BatchNorm-statistics and diversity terms."""
  samples: int
  steps: int = 500
  learning_rate: float = 1e-3
  batch_size: int = 256
  z_dim: int = 64
  hidden: int = 256
  bn_weight: float = 1.0
  diversity_weight: float = 1.0


def settings_from(replay_config):
  """``Settings`` from ``config.df_replay`` (``samples`` and
  ``generator.*``)."""
  return inversion.settings_of(Settings, replay_config, "generator")


class Generator(nn.Module):
  """``(noise [N, z_dim], one-hot targets [N, classes]) -> inputs [N,
  *shape]``: Dense, ReLU, Dense, ReLU, Dense to the flattened input, in
  the normalised input space (no squashing)."""
  shape: tuple
  hidden: int

  @nn.compact
  def __call__(self, noise, onehot):
    x = jnp.concatenate([noise, onehot], axis=-1)
    x = nn.relu(nn.Dense(self.hidden, name="layer_00")(x))
    x = nn.relu(nn.Dense(self.hidden, name="layer_01")(x))
    x = nn.Dense(math.prod(self.shape), name="out")(x)
    return x.reshape((-1, *self.shape))


def diversity(probs, num_old):
  """``log K - H(mean of probs over the batch)`` over the first ``num_old``
  (K, may be traced) outputs: 0 when the batch's predictions are spread
  equally over the old classes, log K when they all go to one."""
  mean = jnp.mean(probs, axis=0)
  valid = jnp.arange(probs.shape[-1]) < num_old
  entropy = -jnp.sum(jnp.where(valid & (mean > 0),
                               mean * jnp.log(jnp.where(mean > 0, mean, 1.0)),
                               0.0))
  return jnp.log(num_old.astype(jnp.float32)) - entropy


def _per_device_batch(settings, num_devices):
  if settings.batch_size % num_devices:
    raise ValueError(
        f"config.df_replay.generator.batch_size={settings.batch_size} must "
        f"be a multiple of the {num_devices} devices in use.")
  return settings.batch_size // num_devices


@functools.lru_cache(maxsize=None)
def _programs(apply_fn, settings, input_shape, num_outputs, rows):
  """Pmapped ``train(variables, gen_params, keys, num_old) -> (params,
  ce, bn, div)`` (``rows`` per device a step; ``keys`` ``[devices]``) and
  ``draw(variables, params, keys, targets) -> (inputs, logits)`` (a batch
  of ``targets`` per device), with the generator module.
  Compiled once per teacher structure and device count."""
  generator = Generator(tuple(input_shape), settings.hidden)
  tx = optax.adam(settings.learning_rate)

  def objective(params, variables, noise, targets, num_old):
    inputs = generator.apply(params, noise,
                             jax.nn.one_hot(targets, num_outputs))
    logits, bn = inversion.logits_and_bn_loss(apply_fn, variables, inputs,
                                              axis_name=BATCH_AXIS)
    logits = losses.mask_logits(logits, num_old)
    ce = jax.lax.pmean(losses.cross_entropy(logits, targets), BATCH_AXIS)
    probs = jax.lax.pmean(jnp.mean(jax.nn.softmax(logits), 0, keepdims=True),
                          BATCH_AXIS)
    div = diversity(probs, num_old)
    loss = ce + settings.bn_weight * bn + settings.diversity_weight * div
    return loss, (ce, bn, div)

  def train(variables, params, key, num_old):
    def step(carry, i):
      params, opt_state = carry
      # The step's whole batch, the same whatever the device count; each
      # device trains on its slice.
      k = jax.random.fold_in(key, i)
      first = jax.lax.axis_index(BATCH_AXIS) * rows
      noise = jax.lax.dynamic_slice_in_dim(jax.random.normal(
          k, (settings.batch_size, settings.z_dim)), first, rows)
      targets = jax.lax.dynamic_slice_in_dim(jax.random.randint(
          jax.random.fold_in(k, 1), (settings.batch_size,), 0, num_old),
                                             first, rows)
      grads, aux = jax.grad(objective, has_aux=True)(
          params, variables, noise, targets, num_old)
      # ``lax.pmean`` (here and in ``inversion``), not ``parallel.pmean``:
      # skipping the one-device all-reduces lets XLA fuse this program
      # differently (results change in the last bits, e.g. final_bn 8.8796
      # -> 8.8787 in a small CNN run) for no measurable time (replay
      # synthesis 4.8-5.9 s either way on a 2-core CPU).
      grads = jax.lax.pmean(grads, BATCH_AXIS)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), aux

    (params, _), (ce, bn, div) = jax.lax.scan(
        step, (params, tx.init(params)), jnp.arange(settings.steps))
    return params, ce[-1], bn[-1], div[-1]

  def draw(variables, params, key, targets):
    noise = jax.random.normal(key, (targets.shape[0], settings.z_dim))
    inputs = generator.apply(params, noise,
                             jax.nn.one_hot(targets, num_outputs))
    return inputs, apply_fn(variables, inputs, train=False)

  # Keys are per device: ``train``'s one key repeated, ``draw``'s one per
  # batch.
  return (generator,
          jax.pmap(train, axis_name=BATCH_AXIS, in_axes=(None, None, 0, None)),
          jax.pmap(draw, axis_name=BATCH_AXIS, in_axes=(None, None, 0, 0)))


def synthesize(apply_fn, variables, num_old, input_shape, key, settings,
               devices=None):
  """Trains a generator against the teacher and draws ``settings.samples``
  inputs of the first ``num_old`` classes (balanced, shuffled) with the
  teacher's logits on them: ``{"image", "logits", "stats"}`` host arrays
  as ``inversion.synthesize`` returns (``stats`` adds the final diversity
  term).

  ``apply_fn(variables, inputs, train=False)`` is the teacher's flax
  apply; ``key`` a JAX key; ``devices`` (default: the first local device)
  share each training batch and draw one batch each at a time.
  """
  if num_old < 1:
    raise ValueError("Replay synthesises old classes, but this step has "
                     "none (num_old=0).")
  devices = devices or jax.local_devices()[:1]
  input_shape = tuple(input_shape)
  num_outputs = jax.eval_shape(
      lambda x: apply_fn(variables, x, train=False),
      jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)).shape[-1]
  rows = _per_device_batch(settings, len(devices))
  generator, train, draw = _programs(apply_fn, settings, input_shape,
                                     num_outputs, rows)
  init_key, train_key, draw_key = jax.random.split(key, 3)
  params = generator.init(init_key, jnp.zeros((1, settings.z_dim)),
                          jnp.zeros((1, num_outputs)))
  params, ce, bn, div = jax.device_get(train(
      variables, params, jnp.stack([train_key] * len(devices)),
      np.int32(num_old)))
  params = jax.tree.map(lambda x: x[0], params)  # the same on every device

  targets = inversion.balanced_targets(key, settings.samples,
                                       settings.batch_size, num_old,
                                       len(devices))
  outputs = []
  for r, round_targets in enumerate(targets):
    keys = jnp.stack([jax.random.fold_in(draw_key, r * len(devices) + d)
                      for d in range(len(devices))])
    outputs.append(jax.device_get(draw(variables, params, keys,
                                       round_targets)))
  images, logits = (np.concatenate(parts) for parts in zip(*outputs))
  return inversion.synthetic_set(
      images, logits, targets, settings.samples, input_shape, num_old,
      final_ce=float(ce[0]), final_bn=float(bn[0]),
      final_diversity=float(div[0]))
