"""Data-free replay: inputs of the old classes synthesised from the teacher.

Model inversion in the manner of DeepInversion (Yin et al., CVPR 2020):
starting from noise, a batch of inputs is optimised (Adam) so that the
frozen teacher assigns each its target old class (cross-entropy), while the
mean and variance of every BatchNorm layer's input over the batch match the
running statistics the teacher keeps, the one trace of the old data a
trained model carries. Optional image priors: total variation and an l2
penalty (inputs live in the normalised space, mean 0 and std 1). No example
of an old class is ever read; the teacher is the only source.

``synthesize`` returns the inputs and the teacher's logits on them; class
steps replay them (``train_step``: distillation on synthetic rows, and the
balanced head fine-tune). A teacher without BatchNorm can be inverted from
its logits and priors alone, but its samples are far from the data
(docs/data_free.md measures both).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cil_jax import losses


@dataclasses.dataclass(frozen=True)
class Settings:
  """How to synthesise: ``samples`` in all, ``batch_size`` at a time (the
  BatchNorm statistics are matched over a batch), ``steps`` Adam steps at
  ``learning_rate``, and the weights of the priors."""
  samples: int
  steps: int = 500
  learning_rate: float = 0.05
  batch_size: int = 256
  bn_weight: float = 1.0
  tv_weight: float = 0.0
  l2_weight: float = 0.0
  # Where each input starts: "noise" (Gaussian, DeepInversion's) or
  # "new_data" (a real image of the step's new classes, so the synthetic
  # old-class inputs keep the data's low-level statistics: the one prior
  # a teacher without BatchNorm leaves).
  init: str = "noise"


INITS = ("noise", "new_data")
AUTO = "auto"  # a method's choice per step (``methods.df_replay``)


def settings_from(replay_config):
  """``Settings`` from ``config.df_replay`` (``samples`` and
  ``inversion.*``)."""
  return settings_of(Settings, replay_config, "inversion")


def settings_of(settings_class, replay_config, section):
  """A synthesiser's ``settings_class`` (a dataclass of ``samples`` and
  fields with typed defaults) from ``config.df_replay``: its ``samples``,
  and each other field from the ``section`` sub-config, cast to its
  default's type."""
  c = replay_config[section]
  return settings_class(int(replay_config.samples), **{
      f.name: type(f.default)(c[f.name])
      for f in dataclasses.fields(settings_class) if f.name != "samples"})


def logits_and_bn_loss(apply_fn, variables, inputs, axis_name=None):
  """The teacher's inference logits on ``inputs`` and the sum over its
  BatchNorm layers of ``|mean - running mean| + |var - running var|`` (l2
  norms over features) of each layer's input over the batch; 0 without
  BatchNorm. With ``axis_name`` (a pmap axis of equal shards) the batch
  statistics are those of the batch over all devices."""
  terms = []

  def moments(x, axes):
    mean, square = jnp.mean(x, axes), jnp.mean(x * x, axes)
    if axis_name is not None:
      mean, square = jax.lax.pmean((mean, square), axis_name)
    return mean, square - mean * mean

  def record(next_fun, args, kwargs, context):
    if (isinstance(context.module, nn.BatchNorm)
        and context.method_name == "__call__"):
      x = args[0].astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      if axis_name is None:
        mean, var = jnp.mean(x, axes), jnp.var(x, axes)
      else:
        mean, var = moments(x, axes)
      running_mean = context.module.get_variable("batch_stats", "mean")
      running_var = context.module.get_variable("batch_stats", "var")
      terms.append(jnp.linalg.norm(mean - running_mean)
                   + jnp.linalg.norm(var - running_var))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    logits = apply_fn(variables, inputs, train=False)
  return logits, sum(terms) if terms else jnp.zeros(())


def total_variation(inputs):
  """Mean absolute difference of neighbouring pixels (``[N, H, W, C]``);
  0 for inputs that are not images."""
  if inputs.ndim != 4:
    return jnp.zeros(())
  return (jnp.mean(jnp.abs(inputs[:, 1:] - inputs[:, :-1]))
          + jnp.mean(jnp.abs(inputs[:, :, 1:] - inputs[:, :, :-1])))


@functools.lru_cache(maxsize=None)
def _program(apply_fn, settings, input_shape):
  """Pmapped ``(variables, keys, targets, num_old) -> (inputs, logits, ce,
  bn)``: one synthesis batch per device (``keys`` ``[devices]``,
  ``targets`` ``[devices, batch]``; the teacher and ``num_old`` shared).
  Compiled once per teacher structure and device count."""
  tx = optax.adam(settings.learning_rate)

  def objective(inputs, variables, targets, num_old):
    logits, bn = logits_and_bn_loss(apply_fn, variables, inputs)
    ce = losses.cross_entropy(losses.mask_logits(logits, num_old), targets)
    loss = (ce + settings.bn_weight * bn
            + settings.tv_weight * total_variation(inputs)
            + settings.l2_weight * jnp.mean(inputs**2))
    return loss, (ce, bn)

  def run(variables, key, targets, num_old, starts):
    if settings.init == "noise":
      inputs = jax.random.normal(key, (targets.shape[0], *input_shape))
    else:
      inputs = starts

    def step(carry, _):
      inputs, opt_state = carry
      grads, aux = jax.grad(objective, has_aux=True)(inputs, variables,
                                                     targets, num_old)
      updates, opt_state = tx.update(grads, opt_state, inputs)
      return (optax.apply_updates(inputs, updates), opt_state), aux

    (inputs, _), (ce, bn) = jax.lax.scan(step, (inputs, tx.init(inputs)),
                                         None, length=settings.steps)
    logits = apply_fn(variables, inputs, train=False)
    return inputs, logits, ce[-1], bn[-1]

  return jax.pmap(run, in_axes=(None, 0, 0, None, 0))


def synthesize(apply_fn, variables, num_old, input_shape, key, settings,
               devices=None, new_images=None):
  """``settings.samples`` synthetic inputs of the first ``num_old``
  classes (balanced: sample ``i`` targets class ``i % num_old``, shuffled)
  and the teacher's logits on them, as host arrays ``{"image", "logits"}``
  plus ``stats`` (the teacher's mean confidence, how often it predicts
  the target, the final losses).

  ``apply_fn(variables, inputs, train=False)`` is the teacher's flax apply;
  ``key`` a JAX key. Batch ``b`` of ``settings.batch_size`` rows starts
  from its own key (``fold_in(key, b)``), and ``devices`` (default: the
  first local device) each synthesise one batch at a time, so the result
  does not depend on the number of devices. With ``settings.init ==
  "new_data"``, ``new_images`` (host, normalised) are the step's new-class
  training images; each input starts from one drawn at random.
  """
  if num_old < 1:
    raise ValueError("Replay synthesises old classes, but this step has "
                     "none (num_old=0).")
  devices = devices or jax.local_devices()[:1]
  program = _program(apply_fn, settings, tuple(input_shape))
  targets = balanced_targets(key, settings.samples, settings.batch_size,
                             num_old, len(devices))
  if settings.init == "new_data":
    if new_images is None or not len(new_images):
      raise ValueError("config.df_replay.inversion.init='new_data' starts "
                       "synthesis from the step's new-class images, but "
                       "none were given.")
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    rows = np.random.default_rng(seed).integers(
        0, len(new_images), targets.size).reshape(targets.shape)
    starts = np.asarray(new_images, np.float32)[rows]
  else:  # unused by the program: one zero row per target
    starts = np.zeros((*targets.shape, 1), np.float32)
  outputs = []
  for r, round_targets in enumerate(targets):
    keys = jnp.stack([jax.random.fold_in(key, r * len(devices) + d)
                      for d in range(len(devices))])
    outputs.append(jax.device_get(program(variables, keys, round_targets,
                                          np.int32(num_old), starts[r])))
  images, logits, ces, bns = (np.concatenate(parts) for parts in zip(*outputs))
  num_batches = -(-settings.samples // settings.batch_size)
  return synthetic_set(images, logits, targets, settings.samples,
                       input_shape, num_old,
                       final_ce=float(np.mean(ces[:num_batches])),
                       final_bn=float(np.mean(bns[:num_batches])))


def balanced_targets(key, samples, batch_size, num_old, num_devices):
  """``[rounds, num_devices, batch_size]`` int32 target classes for
  ``samples`` synthetic inputs drawn a batch per device per round: class
  ``i % num_old`` for sample ``i``, shuffled by ``key`` (padded to whole
  rounds by repeating), so the set is balanced over the old classes and
  does not depend on the device count."""
  num_batches = -(-samples // batch_size)
  rounds = -(-num_batches // num_devices)
  seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
  targets = np.random.default_rng(seed).permutation(num_batches * batch_size)
  targets = np.resize(targets % num_old, rounds * num_devices * batch_size)
  return targets.astype(np.int32).reshape(rounds, num_devices, batch_size)


def synthetic_set(images, logits, targets, samples, input_shape, num_old,
                  **final_losses):
  """The first ``samples`` of the drawn ``images`` and the teacher's
  ``logits`` as a synthetic set ``{"image", "logits", "stats"}``: ``stats``
  holds the teacher's mean confidence over the old classes, how often it
  predicts the ``targets``, and ``final_losses``."""
  images = images.reshape(-1, *input_shape)[:samples]
  logits = logits.reshape(-1, logits.shape[-1])[:samples]
  wanted = targets.reshape(-1)[:samples]
  probs = np.asarray(jax.nn.softmax(losses.mask_logits(logits, num_old)))
  return {"image": images.astype(np.float32),
          "logits": logits.astype(np.float32),
          "stats": {"teacher_confidence": float(probs.max(-1).mean()),
                    "target_hit": float(np.mean(probs.argmax(-1) == wanted)),
                    **final_losses}}
